package auth

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// tokenPrefix starts every token NewToken makes, so that a leaked token is
// recognisable (secret scanners, logs) and a token pasted where its hash
// belongs is caught.
const tokenPrefix = "ordt_"

// hashPrefix starts every token hash in a tokens file.
const hashPrefix = "sha256:"

// maxNameLen bounds the names in a tokens file.
const maxNameLen = 128

var (
	// ErrInvalidTokensFile is wrapped by the error for a tokens file that
	// cannot be read or has an invalid line; the error names the file and
	// the line, never a token or a hash.
	ErrInvalidTokensFile = errors.New("invalid tokens file")
	// ErrInvalidRole is wrapped by the error for a role a tokens file may
	// not grant: anything but "admin" and "ids" (RolePeer is granted only
	// by peer certificates).
	ErrInvalidRole = errors.New("invalid role")
	// ErrInvalidName is wrapped by the error for a token name that is
	// empty, too long, or has characters other than letters, digits and
	// . _ - @ : / +.
	ErrInvalidName = errors.New("invalid token name")
)

// NewToken returns a new bearer token: "ordt_" followed by 32 random bytes
// in unpadded base64url. 256 bits from crypto/rand cannot be guessed, which
// is why a tokens file may store a plain SHA-256 of it.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("auth: reading random bytes for a token: %w", err)
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// HashToken returns the hash a tokens file stores for token:
// "sha256:<64 lowercase hex digits>".
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hashPrefix + hex.EncodeToString(sum[:])
}

// FormatTokenLine returns the tokens file line granting role to name with
// token, "<role> <name> sha256:<hex>", or an error wrapping ErrInvalidRole
// or ErrInvalidName when a tokens file would reject the line.
func FormatTokenLine(role Role, name, token string) (string, error) {
	if err := checkRole(role); err != nil {
		return "", err
	}
	if err := checkName(name); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %s %s", role, name, HashToken(token)), nil
}

// TokenEntry is one token of a tokens file, without its hash.
type TokenEntry struct {
	// Role is the role the token grants: RoleAdmin or RoleIDs.
	Role Role
	// Name names the token's holder; names are unique in a file.
	Name string
	// Line is the entry's line number in the file, from 1.
	Line int
}

// ReadTokensFile reads and checks the tokens file at path as New does, and
// returns its entries in file order.
func ReadTokensFile(path string) ([]TokenEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidTokensFile, err)
	}
	defer f.Close()
	_, entries, err := parseTokens(path, f)
	return entries, err
}

func checkRole(role Role) error {
	switch role {
	case RoleAdmin, RoleIDs:
		return nil
	case RolePeer:
		return fmt.Errorf("%w: role peer is granted only by peer certificates on the peer port, never by a token; use admin or ids", ErrInvalidRole)
	}
	return fmt.Errorf("%w: the role must be admin or ids", ErrInvalidRole)
}

func checkName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("%w: a name is 1 to %d characters long", ErrInvalidName, maxNameLen)
	}
	if strings.HasPrefix(name, tokenPrefix) {
		return fmt.Errorf("%w: the name looks like a token (it starts with %q); tokens never go into the tokens file, only their hashes", ErrInvalidName, tokenPrefix)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-@:/+", c) >= 0
		if !ok {
			return fmt.Errorf("%w: a name has only letters, digits and . _ - @ : / +", ErrInvalidName)
		}
	}
	return nil
}

// parseHash decodes "sha256:<64 hex digits>" (either case).
func parseHash(field string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	if strings.HasPrefix(field, tokenPrefix) {
		return sum, errors.New("the third field is a token, not its hash: store only its hash (sha256:…, as `ordinal token create` prints it) and keep the token secret")
	}
	hexPart, ok := strings.CutPrefix(field, hashPrefix)
	if !ok || len(hexPart) != hex.EncodedLen(sha256.Size) {
		return sum, errors.New("the third field must be sha256: followed by 64 hex digits")
	}
	if _, err := hex.Decode(sum[:], []byte(hexPart)); err != nil {
		return sum, errors.New("the third field must be sha256: followed by 64 hex digits")
	}
	return sum, nil
}

// tokenTable is one parsed tokens file: the identity of each token, keyed
// by its SHA-256. Immutable once built.
type tokenTable struct {
	byHash map[[sha256.Size]byte]*Identity
}

// parseTokens parses a tokens file read from r; path is for messages.
// Error messages give the line and the reason, never the line itself.
func parseTokens(path string, r io.Reader) (*tokenTable, []TokenEntry, error) {
	table := &tokenTable{byHash: map[[sha256.Size]byte]*Identity{}}
	var entries []TokenEntry
	names := map[string]int{}
	hashes := map[[sha256.Size]byte]int{}
	lineErr := func(n int, err error) error {
		return fmt.Errorf("%w: %s line %d: %w", ErrInvalidTokensFile, path, n, err)
	}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 3 {
			return nil, nil, lineErr(n, fmt.Errorf("want \"<role> <name> sha256:<64 hex digits>\", found %d fields", len(fields)))
		}
		role, name := Role(fields[0]), fields[1]
		if err := checkRole(role); err != nil {
			return nil, nil, lineErr(n, err)
		}
		if err := checkName(name); err != nil {
			return nil, nil, lineErr(n, err)
		}
		sum, err := parseHash(fields[2])
		if err != nil {
			return nil, nil, lineErr(n, err)
		}
		if first, dup := names[name]; dup {
			return nil, nil, lineErr(n, fmt.Errorf("%w: the name %q is already on line %d; names must be unique", ErrInvalidName, name, first))
		}
		if first, dup := hashes[sum]; dup {
			return nil, nil, lineErr(n, fmt.Errorf("the same token as line %d; give every name its own token", first))
		}
		names[name], hashes[sum] = n, n
		table.byHash[sum] = &Identity{Name: name, Roles: grant(role), Via: ViaToken}
		entries = append(entries, TokenEntry{Role: role, Name: name, Line: n})
	}
	if err := sc.Err(); errors.Is(err, bufio.ErrTooLong) {
		return nil, nil, lineErr(n+1, fmt.Errorf("longer than %d bytes", bufio.MaxScanTokenSize))
	} else if err != nil {
		return nil, nil, fmt.Errorf("%w: %s after line %d: %w", ErrInvalidTokensFile, path, n, err)
	}
	return table, entries, nil
}

// tokenSource serves the tokens of a tokens file and re-reads the file
// when it changes, lazily: a lookup checks the file at most once per
// interval, in the caller's goroutine; between checks a lookup costs one
// atomic load and a clock read beyond the map lookup.
type tokenSource struct {
	path     string
	interval time.Duration
	logger   hclog.Logger
	// since returns the time elapsed on a monotonic clock; tests replace it.
	since func() time.Duration

	next  atomic.Int64 // since() value, in ns, when the file is due a check
	table atomic.Pointer[tokenTable]

	mu sync.Mutex // held while checking and reading the file
	// loaded is the file whose content was last parsed, successfully or
	// not; a check parses the file only when it differs.
	loaded os.FileInfo
	// statErr is set while the file cannot be found, so the error is
	// logged once, not at every check.
	statErr bool
}

// newTokenSource reads the tokens file at path, failing if it cannot.
func newTokenSource(path string, interval time.Duration, logger hclog.Logger) (*tokenSource, error) {
	start := time.Now()
	s := &tokenSource{
		path:     path,
		interval: interval,
		logger:   logger,
		since:    func() time.Duration { return time.Since(start) },
	}
	table, info, err := s.read()
	if err != nil {
		return nil, err
	}
	s.table.Store(table)
	s.loaded = info
	s.next.Store(int64(s.since() + interval))
	return s, nil
}

// lookup returns the identity of token, or nil when the tokens file does
// not hold its hash. Looking the token up by its SHA-256 compares nothing
// secret byte by byte: how long a lookup takes depends on the hash, which
// an attacker cannot steer towards a stored one.
func (s *tokenSource) lookup(token string) *Identity {
	s.maybeReload()
	// Callers bound the token to maxTokenLen; copying it to the stack
	// spares the allocation of []byte(token).
	var buf [maxTokenLen]byte
	n := copy(buf[:], token)
	return s.table.Load().byHash[sha256.Sum256(buf[:n])]
}

// maybeReload checks the file when a check is due; of concurrent callers,
// one checks and the others go on with the tokens loaded so far.
func (s *tokenSource) maybeReload() {
	next := s.next.Load()
	now := int64(s.since())
	if now < next || !s.next.CompareAndSwap(next, now+int64(s.interval)) {
		return
	}
	s.reload()
}

// reload parses the file if it changed (size, modification time, or
// identity: device and inode), keeping the previous tokens when it cannot
// be read or parsed. Each failure is logged once per change of the file.
func (s *tokenSource) reload() {
	s.mu.Lock()
	defer s.mu.Unlock()
	info, err := os.Stat(s.path)
	if err != nil {
		if !s.statErr {
			s.logger.Error("cannot read the tokens file; keeping the tokens loaded before", "path", s.path, "error", err)
		}
		s.statErr = true
		return
	}
	if !s.statErr && sameFile(s.loaded, info) {
		return
	}
	s.statErr = false
	table, read, err := s.read()
	if read != nil {
		s.loaded = read
	} else {
		s.loaded = info
	}
	if err != nil {
		s.logger.Error("the tokens file changed but is invalid; keeping the tokens loaded before", "error", err)
		return
	}
	s.table.Store(table)
	s.logger.Info("reloaded the tokens file", "path", s.path, "tokens", len(table.byHash))
}

// read parses the file, returning with it the FileInfo of the open file
// it read (nil if it could not be opened). The FileInfo is taken before
// reading, so a write during the read changes it and the next check reads
// the file again.
func (s *tokenSource) read() (*tokenTable, os.FileInfo, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidTokensFile, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidTokensFile, err)
	}
	table, _, err := parseTokens(s.path, f)
	return table, info, err
}

// sameFile reports whether a and b describe the same, unchanged file.
func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}
