package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/etcdcompat"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/internal/cli"
)

const importUsage = `ordinal import [--addr HOST:PORT] (--csv FILE | --json FILE) [flags]
       ordinal import [--addr HOST:PORT] --from-etcd ENDPOINTS --store NAME [--etcd-prefix /layotto/] [--etcd-app-id APP] [flags]

Moves sequences into ordinal. For every key it reads, it sets the key's
floor with SetFloor, so that every ID ordinal hands out for the key from
then on is above the value read, in both modes and on every node. SetFloor
never lowers a counter: keys already at or above their value stay as they
are, and the import is safe to run again. It needs the admin role.

Sources (exactly one):
  --csv FILE   lines store,key,value. An empty store means the default
               store. A first line naming the columns (store, key and value
               in any order; store may be left out) is a header. - is stdin.
  --json FILE  a JSON array of {"store": S, "key": K, "value": N} objects,
               or JSON lines (one such object per line): a first character
               [ means an array. "store" may be left out (the default
               store); "value" is a number or a string of digits. - is stdin.
  --from-etcd ENDPOINTS
               the keys of Layotto's etcd sequencer component: under
               --etcd-prefix, <prefix>sequencer|||<key>, or with
               --etcd-app-id, <prefix>sequencer|||<app-id>||<key> (a
               sidecar's fixed keyPrefix in lower case). A key's value is its
               etcd version: the last ID Layotto handed out for it. Every key
               goes into the store --store, which must be given on the command
               line: the store_name your callers send (import again with
               another --store for each further store name). Keys are read in
               pages of --etcd-page-size. Stop the sidecars (and ordinal nodes
               serving --etcd-layout layotto) before importing: IDs they hand
               out after a key was read are not covered.

Values are 0 to 9223372036854775807 (2^63-1). A record that cannot be
imported (a malformed line, a missing or too long key, a negative or too
large value) is reported on stderr with its line number, and the rest is
imported; the command then exits 1. With --strict the whole input is read
and checked first, and nothing is imported if any record is invalid. A call
the node refuses for one key (InvalidArgument, OutOfRange,
FailedPrecondition, ResourceExhausted) is reported and counted the same way;
any other failure (the node unreachable, credentials refused) stops the
import, which can then simply be run again.

Up to --concurrency keys are imported at once, each bounded by --timeout:
SetFloor returns once every node confirmed the floor, or, when one cannot,
after about serve's --weak-range-ttl (11s by default; also in a leader's
first 11s), so import while every node is up, or raise --concurrency.
Progress goes to stderr every --progress, and a summary to stdout:

  import: N keys, R floors raised, A already at or above, E errors

--dry-run reads each key's high-water mark (which needs only the ids role)
and prints, per key, "raise" or "keep" with the value and the high-water
mark, changing nothing.`

// Defaults of the import flags.
const (
	defaultImportConcurrency = 16
	// defaultImportTimeout bounds one key's calls. SetFloor may wait
	// about alloc.FloorHold of the default --weak-range-ttl (11.1s) when
	// a node cannot confirm a floor; this leaves room for that and for a
	// retry after a leader change.
	defaultImportTimeout  = 30 * time.Second
	defaultImportProgress = 5 * time.Second
	defaultEtcdPageSize   = 1000
	// maxShownErrors bounds the errors printed one by one; the summary
	// counts every one.
	maxShownErrors = 1000
)

type importFlags struct {
	conn                        connFlags
	csvFile, jsonFile, fromEtcd string
	store                       string
	storeGiven                  bool // --store on the command line
	etcd                        etcdFlags
	pageSize                    int
	concurrency                 int
	timeout, progress           time.Duration
	dryRun, strict              bool
}

func runImport(args []string) error {
	var f importFlags
	fs := cli.NewFlagSet("import", importUsage)
	f.conn.registerAddr(fs, "gRPC address of any ordinal node; SetFloor reaches the leader through it")
	f.conn.Register(fs)
	fs.StringVar(&f.csvFile, "csv", "", "import the CSV file (store,key,value lines); - reads stdin")
	fs.StringVar(&f.jsonFile, "json", "", "import the JSON file (an array of {store, key, value} objects, or JSON lines); - reads stdin")
	fs.StringVar(&f.fromEtcd, "from-etcd", "", "import Layotto's etcd sequencer keys from these comma-separated etcd endpoints (host:port or URLs)")
	fs.StringVar(&f.store, "store", "", "with --from-etcd, required on the command line: the store (the store_name callers send) to import every key into")
	fs.StringVar(&f.etcd.prefix, "etcd-prefix", etcdcompat.DefaultLayottoPrefix, "with --from-etcd: Layotto's keyPrefixPath, under which its keys are")
	fs.StringVar(&f.etcd.appID, "etcd-app-id", "", "with --from-etcd: import the keys of this app ID (sequencer|||<app-id>||<key>), or of a sidecar's fixed keyPrefix in lower case; empty: sequencer|||<key>")
	fs.StringVar(&f.etcd.username, "etcd-username", "", "with --from-etcd: etcd user, when etcd has authentication enabled")
	fs.StringVar(&f.etcd.passwordFile, "etcd-password-file", "", "with --from-etcd: file holding the password of --etcd-username")
	fs.StringVar(&f.etcd.caFile, "etcd-ca-file", "", "with --from-etcd: CA certificate (PEM) that signed etcd's server certificates: turns on TLS")
	fs.StringVar(&f.etcd.certFile, "etcd-cert-file", "", "with --from-etcd: client certificate (PEM) for etcd's --client-cert-auth; needs --etcd-key-file")
	fs.StringVar(&f.etcd.keyFile, "etcd-key-file", "", "with --from-etcd: key (PEM) of --etcd-cert-file")
	fs.DurationVar(&f.etcd.dialTimeout, "etcd-dial-timeout", etcdcompat.DefaultDialTimeout, "with --from-etcd: bound on connecting to etcd")
	fs.DurationVar(&f.etcd.requestTimeout, "etcd-request-timeout", etcdcompat.DefaultRequestTimeout, "with --from-etcd: bound on reading one page of keys")
	fs.IntVar(&f.pageSize, "etcd-page-size", defaultEtcdPageSize, "with --from-etcd: keys read per etcd range request")
	fs.IntVar(&f.concurrency, "concurrency", defaultImportConcurrency, "how many keys to import at once")
	fs.DurationVar(&f.timeout, "timeout", defaultImportTimeout, "bound on one key's calls, retries included; keep it above serve's --weak-range-ttl plus 10%")
	fs.DurationVar(&f.progress, "progress", defaultImportProgress, "how often to print progress on stderr; 0 turns it off")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print what the import would do, per key, and change nothing")
	fs.BoolVar(&f.strict, "strict", false, "read and check every record first (holding them all in memory); import nothing if any is invalid")
	positional, err := cli.ParseCommandFlags("import", fs, args)
	if err != nil {
		return err
	}
	if len(positional) > 0 {
		return cli.UsageErrorf("import: unexpected argument %q: give the input with --csv, --json or --from-etcd", positional[0])
	}
	f.storeGiven = givenOnCommandLine(args, "store")
	if err := f.check(fs, args); err != nil {
		return err
	}
	opts, err := f.conn.ClientOptions()
	if err != nil {
		return err
	}
	src, err := f.openSource()
	if err != nil {
		return err
	}
	defer src.Close()
	// Unavailable (no leader for a moment, a floor not yet confirmed by
	// every node) is retried within --timeout: SetFloor is safe to repeat.
	c, err := client.New(f.conn.addr, append(opts, client.WithRetry(5, 200*time.Millisecond))...)
	if err != nil {
		return f.conn.clientError(err)
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	im := &importer{
		flags:  f,
		client: c,
		stdout: &lockedWriter{w: os.Stdout},
		stderr: &lockedWriter{w: os.Stderr},
	}
	return im.run(ctx, src)
}

// givenOnCommandLine reports whether args set the flag name themselves,
// as opposed to through its environment variable.
func givenOnCommandLine(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// check validates the flags.
func (f *importFlags) check(fs *flag.FlagSet, args []string) error {
	sources := 0
	for _, s := range []string{f.csvFile, f.jsonFile, f.fromEtcd} {
		if s != "" {
			sources++
		}
	}
	if sources != 1 {
		return cli.UsageErrorf("import: give exactly one of --csv FILE, --json FILE and --from-etcd ENDPOINTS")
	}
	switch {
	case f.concurrency < 1 || f.concurrency > 1024:
		return cli.UsageErrorf("import: --concurrency is %d; it must be between 1 and 1024", f.concurrency)
	case f.timeout <= 0:
		return cli.UsageErrorf("import: --timeout is %v; it must be positive", f.timeout)
	case f.progress < 0:
		return cli.UsageErrorf("import: --progress is %v; it must not be negative", f.progress)
	}
	if f.fromEtcd == "" {
		if f.storeGiven {
			return cli.UsageErrorf("import: --store only applies to --from-etcd; the records of --csv and --json name their own store (empty: the default store)")
		}
		var etcdSet []string
		fs.Visit(func(fl *flag.Flag) {
			if strings.HasPrefix(fl.Name, "etcd-") && givenOnCommandLine(args, fl.Name) {
				etcdSet = append(etcdSet, "--"+fl.Name)
			}
		})
		if len(etcdSet) > 0 {
			return cli.UsageErrorf("import: %s: the --etcd-* flags need --from-etcd", strings.Join(etcdSet, ", "))
		}
		return nil
	}
	if !f.storeGiven {
		return cli.UsageErrorf("import: --from-etcd needs --store NAME on the command line: the store_name your callers send, " +
			"which every key is imported into (ORDINAL_STORE is not read here: floors cannot be lowered, so a bulk import names its store itself)")
	}
	if f.store == "" {
		return cli.UsageErrorf("import: --store is empty: name the store (the store_name callers send; %q is the default store)", "default")
	}
	if err := checkImportKey(f.store, "k"); err != nil {
		return cli.UsageErrorf("import: --store: %v", err)
	}
	if f.pageSize < 1 {
		return cli.UsageErrorf("import: --etcd-page-size is %d; it must be at least 1", f.pageSize)
	}
	if f.etcd.requestTimeout <= 0 || f.etcd.dialTimeout <= 0 {
		return cli.UsageErrorf("import: --etcd-dial-timeout and --etcd-request-timeout must be positive")
	}
	return nil
}

// importItem is one record to import.
type importItem struct {
	where      string // where it was read: "line 12", "etcd key ..."
	store, key string
	value      int64
}

// storeName is the store as the server names it.
func (it importItem) storeName() string {
	if it.store == "" {
		return "default"
	}
	return it.store
}

// invalidRecord is a record that cannot be imported; the source can go on
// after it.
type invalidRecord struct {
	where string
	err   error
}

func (e *invalidRecord) Error() string { return e.where + ": " + e.err.Error() }

func invalidf(where, format string, args ...any) error {
	return &invalidRecord{where: where, err: fmt.Errorf(format, args...)}
}

// importSource yields the records to import.
type importSource interface {
	// Next returns the next record, an *invalidRecord for one that cannot
	// be imported (Next may be called again), io.EOF at the end, or
	// another error when the input cannot be read any further.
	Next(ctx context.Context) (importItem, error)
	// Notes returns what the summary should add about the source, or "".
	Notes() string
	Close() error
}

func (f *importFlags) openSource() (importSource, error) {
	if f.fromEtcd != "" {
		return f.openEtcd()
	}
	name, flagName := f.csvFile, "--csv"
	if name == "" {
		name, flagName = f.jsonFile, "--json"
	}
	var rc io.ReadCloser = os.Stdin
	if name != "-" {
		file, err := os.Open(name)
		if err != nil {
			return nil, cli.UsageErrorf("import: %s: %w", flagName, err)
		}
		rc = file
	}
	br := bufio.NewReaderSize(rc, 64<<10)
	skipBOM(br)
	if f.csvFile != "" {
		return newCSVSource(br, rc), nil
	}
	return newJSONSource(br, rc)
}

// skipBOM drops a UTF-8 byte order mark, which spreadsheet programs put at
// the start of the files they export.
func skipBOM(br *bufio.Reader) {
	if b, err := br.Peek(3); err == nil && bytes.Equal(b, []byte{0xEF, 0xBB, 0xBF}) {
		_, _ = br.Discard(3)
	}
}

// parseImportValue parses a decimal value between 0 and 2^63-1.
func parseImportValue(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("the value is empty")
	}
	digits, negative := strings.CutPrefix(s, "-")
	u, err := strconv.ParseUint(digits, 10, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("value %q is not a whole number in decimal digits", s)
	case negative:
		return 0, fmt.Errorf("value %s is negative: a floor is 0 or more", s)
	case err != nil || u > math.MaxInt64:
		return 0, fmt.Errorf("value %s is above %d (2^63-1), the largest ID", s, int64(math.MaxInt64))
	}
	return int64(u), nil
}

// checkImportKey rejects what the server would reject, so that --strict
// catches it before anything is imported.
func checkImportKey(store, key string) error {
	switch {
	case key == "":
		return errors.New("the key is empty")
	case len(key) > fsm.MaxKeyLen:
		return fmt.Errorf("the key is %d bytes long; the limit is %d", len(key), fsm.MaxKeyLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("the key %q is not valid UTF-8", key)
	case len(store) > fsm.MaxStoreLen:
		return fmt.Errorf("the store name is %d bytes long; the limit is %d", len(store), fsm.MaxStoreLen)
	case !utf8.ValidString(store):
		return fmt.Errorf("the store name %q is not valid UTF-8", store)
	}
	return nil
}

// record checks a record's fields and returns it as an item.
func record(where, store, key, value string) (importItem, error) {
	if err := checkImportKey(store, key); err != nil {
		return importItem{}, &invalidRecord{where: where, err: err}
	}
	v, err := parseImportValue(value)
	if err != nil {
		return importItem{}, &invalidRecord{where: where, err: fmt.Errorf("key %q: %w", key, err)}
	}
	return importItem{where: where, store: store, key: key, value: v}, nil
}

// csvSource reads store,key,value lines.
type csvSource struct {
	r      *csv.Reader
	closer io.Closer
	first  bool
	cols   [3]int // indexes of store (-1: none), key and value
	nCols  int
}

func newCSVSource(r io.Reader, closer io.Closer) *csvSource {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1 // checked here, with a better message
	return &csvSource{r: cr, closer: closer, first: true, cols: [3]int{0, 1, 2}, nCols: 3}
}

func (s *csvSource) Close() error  { return s.closer.Close() }
func (s *csvSource) Notes() string { return "" }

func (s *csvSource) Next(context.Context) (importItem, error) {
	for {
		rec, err := s.r.Read()
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return importItem{}, invalidf(fmt.Sprintf("line %d", pe.StartLine), "%v", pe.Err)
			}
			if err == io.EOF {
				return importItem{}, io.EOF
			}
			return importItem{}, fmt.Errorf("read CSV: %w", err)
		}
		line, _ := s.r.FieldPos(0)
		where := fmt.Sprintf("line %d", line)
		if s.first {
			s.first = false
			if ok, err := s.header(rec); ok {
				if err != nil {
					return importItem{}, fmt.Errorf("%s: header %q: %w", where, strings.Join(rec, ","), err)
				}
				continue
			}
		}
		if len(rec) != s.nCols {
			return importItem{}, invalidf(where, "%s, want %d (%s)", plural(int64(len(rec)), "field"), s.nCols, s.columns())
		}
		store := ""
		if s.cols[0] >= 0 {
			store = rec[s.cols[0]]
		}
		return record(where, store, rec[s.cols[1]], strings.TrimSpace(rec[s.cols[2]]))
	}
}

// header reports whether rec is a header line, naming the columns, and
// takes the order of the columns from it.
func (s *csvSource) header(rec []string) (bool, error) {
	cols := [3]int{-1, -1, -1}
	names := map[string]int{"store": 0, "key": 1, "value": 2}
	for i, field := range rec {
		c, ok := names[strings.ToLower(strings.TrimSpace(field))]
		if !ok {
			return false, nil // a record, not a header
		}
		if cols[c] >= 0 {
			return true, fmt.Errorf("column %q appears twice", strings.TrimSpace(field))
		}
		cols[c] = i
	}
	if cols[1] < 0 || cols[2] < 0 {
		return true, errors.New("a header needs the columns key and value (and store, unless every key goes into the default store)")
	}
	s.cols, s.nCols = cols, len(rec)
	return true, nil
}

func (s *csvSource) columns() string {
	names := make([]string, s.nCols)
	for i, n := range []string{"store", "key", "value"} {
		if s.cols[i] >= 0 {
			names[s.cols[i]] = n
		}
	}
	return strings.Join(names, ",")
}

// jsonRecord is one object of a JSON input.
type jsonRecord struct {
	Store *string         `json:"store"`
	Key   *string         `json:"key"`
	Value json.RawMessage `json:"value"`
}

// decodeJSONRecord turns one JSON value into an item.
func decodeJSONRecord(where string, raw []byte) (importItem, error) {
	var rec jsonRecord
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(&rec); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field == "" {
			article := "a"
			if strings.ContainsAny(te.Value[:1], "aeiou") {
				article = "an"
			}
			return importItem{}, invalidf(where, "%s %s, not an object {\"store\": ..., \"key\": ..., \"value\": ...}", article, te.Value)
		}
		msg := strings.TrimPrefix(err.Error(), "json: ")
		if strings.HasPrefix(msg, "unknown field") {
			msg += " (the fields are store, key and value)"
		}
		return importItem{}, invalidf(where, "%s", msg)
	}
	if rec.Key == nil {
		return importItem{}, invalidf(where, "no \"key\"")
	}
	store := ""
	if rec.Store != nil {
		store = *rec.Store
	}
	value := string(bytes.TrimSpace(rec.Value))
	switch {
	case value == "" || value == "null":
		return importItem{}, invalidf(where, "key %q: no \"value\"", *rec.Key)
	case value[0] == '"':
		if err := json.Unmarshal(rec.Value, &value); err != nil {
			return importItem{}, invalidf(where, "key %q: value %s: %v", *rec.Key, rec.Value, err)
		}
	case value[0] != '-' && (value[0] < '0' || value[0] > '9'):
		return importItem{}, invalidf(where, "key %q: value %s is not a number", *rec.Key, value)
	}
	return record(where, store, *rec.Key, value)
}

// newJSONSource reads a JSON array of objects, or JSON lines, from br.
func newJSONSource(br *bufio.Reader, closer io.Closer) (importSource, error) {
	line := 1
	for {
		b, err := br.ReadByte()
		if err == io.EOF {
			return &jsonLinesSource{br: br, closer: closer, line: line}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("import: read JSON: %w", err)
		}
		switch b {
		case '\n':
			line++
			continue
		case ' ', '\t', '\r':
			continue
		}
		_ = br.UnreadByte()
		if b == '[' {
			return newJSONArraySource(br, closer, line)
		}
		return &jsonLinesSource{br: br, closer: closer, line: line}, nil
	}
}

// jsonLinesSource reads one object per line.
type jsonLinesSource struct {
	br     *bufio.Reader
	closer io.Closer
	line   int // of the next line to read
	done   bool
}

func (s *jsonLinesSource) Close() error  { return s.closer.Close() }
func (s *jsonLinesSource) Notes() string { return "" }

func (s *jsonLinesSource) Next(context.Context) (importItem, error) {
	for !s.done {
		b, err := s.br.ReadBytes('\n')
		if err == io.EOF {
			s.done = true
		} else if err != nil {
			return importItem{}, fmt.Errorf("read JSON: %w", err)
		}
		where := fmt.Sprintf("line %d", s.line)
		s.line++
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			continue
		}
		if !json.Valid(b) {
			var v any
			err := json.Unmarshal(b, &v)
			return importItem{}, invalidf(where, "not one JSON object: %v", strings.TrimPrefix(fmt.Sprint(err), "json: "))
		}
		return decodeJSONRecord(where, b)
	}
	return importItem{}, io.EOF
}

// jsonArraySource reads the elements of one JSON array, one at a time.
type jsonArraySource struct {
	dec    *json.Decoder
	lines  *lineCounter
	closer io.Closer
	done   bool
}

func newJSONArraySource(r io.Reader, closer io.Closer, firstLine int) (importSource, error) {
	lc := &lineCounter{r: r, passed: firstLine - 1}
	dec := json.NewDecoder(lc)
	if _, err := dec.Token(); err != nil { // the '['
		return nil, fmt.Errorf("import: --json: %w", err)
	}
	return &jsonArraySource{dec: dec, lines: lc, closer: closer}, nil
}

func (s *jsonArraySource) Close() error  { return s.closer.Close() }
func (s *jsonArraySource) Notes() string { return "" }

func (s *jsonArraySource) Next(context.Context) (importItem, error) {
	if s.done {
		return importItem{}, io.EOF
	}
	if !s.dec.More() {
		s.done = true
		if _, err := s.dec.Token(); err != nil { // the ']'
			return importItem{}, s.syntaxError(err)
		}
		if _, err := s.dec.Token(); err != io.EOF {
			return importItem{}, fmt.Errorf("line %d: more after the end of the array", s.lines.lineAt(s.dec.InputOffset()))
		}
		return importItem{}, io.EOF
	}
	var raw json.RawMessage
	if err := s.dec.Decode(&raw); err != nil {
		s.done = true
		return importItem{}, s.syntaxError(err)
	}
	start := s.dec.InputOffset() - int64(len(raw))
	return decodeJSONRecord(fmt.Sprintf("line %d", s.lines.lineAt(start)), raw)
}

// syntaxError reports a JSON error after which nothing more can be read.
func (s *jsonArraySource) syntaxError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("line %d: %v; nothing after it was read", s.lines.lineAt(se.Offset), strings.TrimPrefix(se.Error(), "json: "))
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF {
		return errors.New("the JSON array is not closed: the input ends in the middle of it")
	}
	return fmt.Errorf("read JSON: %w", err)
}

// lineCounter reads from r and maps input offsets to line numbers, for
// offsets asked in increasing order, keeping only the newlines not yet
// passed.
type lineCounter struct {
	r      io.Reader
	read   int64   // bytes read so far
	nl     []int64 // offsets of newlines at or after the last offset asked
	passed int     // newlines before the last offset asked
}

func (c *lineCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	for i, b := range p[:n] {
		if b == '\n' {
			c.nl = append(c.nl, c.read+int64(i))
		}
	}
	c.read += int64(n)
	return n, err
}

// lineAt returns the line of the byte at offset off.
func (c *lineCounter) lineAt(off int64) int {
	for len(c.nl) > 0 && c.nl[0] < off {
		c.nl = c.nl[1:]
		c.passed++
	}
	return c.passed + 1
}

// Layotto's sequencer keys: <prefix>sequencer|||<key>, or
// <prefix>sequencer|||<app-id>||<key> (see etcdcompat/layotto.go).
const (
	layottoKeyPrefix = "sequencer|||"
	layottoAppIDSep  = "||"
)

// etcdSource reads Layotto's sequencer keys from etcd, a page at a time.
type etcdSource struct {
	cli              *clientv3.Client
	endpoints        string
	base, end, start string // the keys are in [base, end); the next page starts at start
	pageSize         int64
	timeout          time.Duration
	appID            string
	store            string // the ordinal store every key goes into
	page             []*mvccpb.KeyValue
	more             bool

	skipped      int            // keys of app IDs, read without --etcd-app-id
	skippedByApp map[string]int // per app ID
}

// etcdClientConfig returns the etcd client configuration the flags
// describe, checked as serve checks its own.
func (f *importFlags) etcdClientConfig() (clientv3.Config, error) {
	f.etcd.endpoints = f.fromEtcd
	f.etcd.layout = string(etcdcompat.LayoutLayotto)
	cfg, err := f.etcd.config()
	if err != nil {
		return clientv3.Config{}, cli.UsageErrorf("import: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return clientv3.Config{}, cli.UsageErrorf("import: %w", err)
	}
	cc := clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		Username:    cfg.Username,
		Password:    cfg.Password,
		Logger:      zap.NewNop(),
	}
	if cfg.CAFile != "" || cfg.CertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return cc, cli.UsageErrorf("import: --etcd-ca-file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return cc, cli.UsageErrorf("import: --etcd-ca-file %s holds no PEM certificate", cfg.CAFile)
			}
		}
		if cfg.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
			if err != nil {
				return cc, cli.UsageErrorf("import: --etcd-cert-file/--etcd-key-file: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		cc.TLS = tc
	}
	return cc, nil
}

func (f *importFlags) openEtcd() (importSource, error) {
	cc, err := f.etcdClientConfig()
	if err != nil {
		return nil, err
	}
	ec, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("import: connect to etcd at %s: %w", f.fromEtcd, err)
	}
	// As Layotto's keyPrefixPath and etcdcompat: a leading and a
	// trailing slash.
	prefix := f.etcd.prefix
	if prefix == "" {
		prefix = etcdcompat.DefaultLayottoPrefix
	}
	if !strings.HasPrefix(prefix, "/") {
		prefix = "/" + prefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	base := prefix + layottoKeyPrefix
	if f.etcd.appID != "" {
		base += f.etcd.appID + layottoAppIDSep
	}
	return &etcdSource{
		cli:          ec,
		endpoints:    strings.Join(cc.Endpoints, ","),
		base:         base,
		end:          clientv3.GetPrefixRangeEnd(base),
		start:        base,
		pageSize:     int64(f.pageSize),
		timeout:      f.etcd.requestTimeout,
		appID:        f.etcd.appID,
		store:        f.store,
		more:         true,
		skippedByApp: map[string]int{},
	}, nil
}

func (s *etcdSource) Close() error { return s.cli.Close() }

// Next returns the next key. Each page is a linearizable range read of
// its own, so the keys of a page are read after every key of the
// previous one: a version read is never older than the import.
func (s *etcdSource) Next(ctx context.Context) (importItem, error) {
	for {
		for len(s.page) == 0 {
			if !s.more {
				return importItem{}, io.EOF
			}
			if err := s.fetch(ctx); err != nil {
				return importItem{}, err
			}
		}
		kv := s.page[0]
		s.page = s.page[1:]
		etcdKey := string(kv.Key)
		where := fmt.Sprintf("etcd key %q", etcdKey)
		name := strings.TrimPrefix(etcdKey, s.base)
		if s.appID == "" {
			// Layotto refuses "||" in keys, so a key with it names an app
			// ID: sequencer|||<app-id>||<key>.
			if app, _, ok := strings.Cut(name, layottoAppIDSep); ok {
				s.skipped++
				s.skippedByApp[app]++
				continue
			}
		}
		if kv.Version <= 0 {
			return importItem{}, invalidf(where, "version %d: not a key Layotto handed out IDs from", kv.Version)
		}
		return record(where, s.store, name, strconv.FormatInt(kv.Version, 10))
	}
}

// fetch reads the next page, retrying briefly: an etcd leader election
// takes about a second.
func (s *etcdSource) fetch(ctx context.Context) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 && !sleepCtx(ctx, time.Duration(attempt)*500*time.Millisecond) {
			break
		}
		rctx, cancel := context.WithTimeout(ctx, s.timeout)
		var resp *clientv3.GetResponse
		resp, err = s.cli.Get(rctx, s.start, clientv3.WithRange(s.end), clientv3.WithLimit(s.pageSize), clientv3.WithKeysOnly())
		cancel()
		if err == nil {
			s.page, s.more = resp.Kvs, resp.More
			if len(resp.Kvs) > 0 {
				s.start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
			} else {
				s.more = false
			}
			return nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("read keys from etcd at %s (from %q): %w", s.endpoints, s.start, err)
}

// Notes reports the keys of app IDs left out.
func (s *etcdSource) Notes() string {
	if s.skipped == 0 {
		return ""
	}
	apps := make([]string, 0, len(s.skippedByApp))
	for app := range s.skippedByApp {
		apps = append(apps, app)
	}
	slices.Sort(apps)
	var b strings.Builder
	for i, app := range apps {
		if i == 10 {
			fmt.Fprintf(&b, ", and %d more", len(apps)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q (%d keys)", app, s.skippedByApp[app])
	}
	return fmt.Sprintf("left out %d etcd keys of app IDs (%s<app-id>||<key>): %s; import each app ID's keys with --etcd-app-id",
		s.skipped, s.base, b.String())
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// lockedWriter serialises writes from the workers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}

// importer sets the floors, up to --concurrency keys at once.
type importer struct {
	flags          importFlags
	client         *client.Client
	stdout, stderr *lockedWriter

	read, done, raised, already atomic.Int64
	invalid, failed             atomic.Int64
	shown                       atomic.Int64 // errors printed

	// readErr is the error after which the input could not be read any
	// further; the records before it are imported.
	readErr error
	// fatal is the first failure that stopped the import; it cancels
	// the run's context.
	fatalMu sync.Mutex
	fatal   error
	cancel  context.CancelFunc
}

func (im *importer) run(ctx context.Context, src importSource) error {
	ctx, im.cancel = context.WithCancel(ctx)
	defer im.cancel()
	var items []importItem
	if im.flags.strict {
		// Check everything before importing anything.
		for {
			it, err := src.Next(ctx)
			if err == io.EOF || im.readError(err) {
				break
			}
			if err == nil {
				items = append(items, it)
			}
		}
		if im.readErr != nil || ctx.Err() != nil || im.invalid.Load() > 0 {
			if note := src.Notes(); note != "" {
				im.stderr.printf("import: %s\n", note)
			}
			im.stdout.printf("%s\n", im.summary())
			if im.readErr != nil {
				return fmt.Errorf("import: %w; nothing was imported (--strict)", im.readErr)
			}
			if ctx.Err() != nil {
				return errors.New("import: interrupted while reading; nothing was imported")
			}
			return fmt.Errorf("import: invalid records: %d; nothing was imported (--strict)", im.invalid.Load())
		}
	}

	queues := make([]chan importItem, im.flags.concurrency)
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan importItem, 64)
		wg.Add(1)
		go func(q <-chan importItem) {
			defer wg.Done()
			for it := range q {
				if ctx.Err() == nil {
					im.apply(ctx, it)
				}
			}
		}(queues[i])
	}
	stopProgress := im.startProgress()

	// Every record of a key goes to the same worker, in order, so that
	// two records of one key are never set at once.
	dispatch := func(it importItem) bool {
		h := fnv.New32a()
		h.Write([]byte(it.store))
		h.Write([]byte{0})
		h.Write([]byte(it.key))
		select {
		case queues[h.Sum32()%uint32(len(queues))] <- it:
			im.read.Add(1)
			return true
		case <-ctx.Done():
			return false
		}
	}
	if im.flags.strict {
		for _, it := range items {
			if !dispatch(it) {
				break
			}
		}
	} else {
		for ctx.Err() == nil {
			it, err := src.Next(ctx)
			if err == io.EOF || im.readError(err) {
				break
			}
			if err == nil && !dispatch(it) {
				break
			}
		}
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	stopProgress()
	return im.finish(ctx, src)
}

// readError handles an error of the source: an invalid record is printed
// and counted, and reading goes on; after any other error it stops
// (readErr), and it returns true.
func (im *importer) readError(err error) bool {
	if err == nil {
		return false
	}
	var ir *invalidRecord
	if errors.As(err, &ir) {
		im.invalid.Add(1)
		im.report("%s", ir.Error())
		return false
	}
	if !errors.Is(err, context.Canceled) { // else interrupted, or stopped by a worker
		im.readErr = err
	}
	return true
}

// report prints one error, up to maxShownErrors of them.
func (im *importer) report(format string, args ...any) {
	switch n := im.shown.Add(1); {
	case n < maxShownErrors:
		im.stderr.printf("import: "+format+"\n", args...)
	case n == maxShownErrors:
		im.stderr.printf("import: further errors are counted but not shown\n")
	}
}

// stop records the failure that stops the import, and stops it.
func (im *importer) stop(err error) {
	im.fatalMu.Lock()
	if im.fatal == nil {
		im.fatal = err
	}
	im.fatalMu.Unlock()
	im.cancel()
}

// apply imports one key: it reads the key's high-water mark, to tell a
// floor raised from one already reached, and sets the floor. SetFloor is
// called also when the mark is already at or above the value: a node may
// still hold a WEAK range with IDs at or below it, which the floor drops.
func (im *importer) apply(runCtx context.Context, it importItem) {
	if it.value == 0 {
		// IDs start at 1: a floor of 0 changes nothing.
		im.count(it, 0, true)
		return
	}
	ctx, cancel := context.WithTimeout(runCtx, im.flags.timeout)
	defer cancel()
	st := im.client.Store(it.store)
	hw, err := st.HighWater(ctx, it.key)
	if err != nil {
		im.callFailed(runCtx, it, "GetHighWater", err)
		return
	}
	if !im.flags.dryRun {
		if _, err := st.SetFloor(ctx, it.key, it.value); err != nil {
			im.callFailed(runCtx, it, "SetFloor", err)
			return
		}
	}
	im.count(it, hw, hw >= it.value)
}

func (im *importer) count(it importItem, hw int64, already bool) {
	if already {
		im.already.Add(1)
	} else {
		im.raised.Add(1)
	}
	im.done.Add(1)
	if im.flags.dryRun {
		action := "raise"
		if already {
			action = "keep"
		}
		im.stdout.printf("%-5s store=%q key=%q value=%d high_water=%d\n", action, it.storeName(), it.key, it.value, hw)
	}
}

// callFailed handles a failed call: one the node refused for this key
// alone is reported and counted, and the import goes on; any other
// failure stops it.
func (im *importer) callFailed(runCtx context.Context, it importItem, method string, err error) {
	if runCtx.Err() != nil {
		return // the import was stopped meanwhile: not this key's failure
	}
	st := status.Convert(err)
	msg := strings.Join(strings.Fields(st.Message()), " ")
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange, codes.FailedPrecondition, codes.ResourceExhausted:
		im.failed.Add(1)
		im.report("%s: store %q key %q: %s: %s: %s", it.where, it.storeName(), it.key, method, st.Code(), msg)
	case codes.PermissionDenied:
		// Without connFlags' hint, which names the role of the ids
		// commands: the node's message names the role SetFloor needs.
		im.stop(fmt.Errorf("%s: PermissionDenied: %s", method, msg))
	default:
		im.stop(fmt.Errorf("%s (store %q key %q): %w", it.where, it.storeName(), it.key,
			&rpcError{cmd: method, addr: im.flags.conn.addr, err: err, conn: &im.flags.conn}))
	}
}

func (im *importer) startProgress() func() {
	if im.flags.progress <= 0 {
		return func() {}
	}
	stop := make(chan struct{})
	stopped := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(stopped)
		t := time.NewTicker(im.flags.progress)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				done := im.done.Load()
				im.stderr.printf("import: %d read, %d done (%d raised, %d already at or above), %d errors, %.0f keys/s\n",
					im.read.Load()+im.invalid.Load(), done, im.raised.Load(), im.already.Load(),
					im.invalid.Load()+im.failed.Load(), float64(done)/time.Since(start).Seconds())
			}
		}
	}()
	return func() { close(stop); <-stopped }
}

func (im *importer) summary() string {
	errs := im.invalid.Load() + im.failed.Load()
	if im.flags.dryRun {
		return fmt.Sprintf("import: %s, %s to raise, %d already at or above, %s (dry run: nothing was changed)",
			plural(im.done.Load(), "key"), plural(im.raised.Load(), "floor"), im.already.Load(), plural(errs, "error"))
	}
	return fmt.Sprintf("import: %s, %s raised, %d already at or above, %s",
		plural(im.done.Load(), "key"), plural(im.raised.Load(), "floor"), im.already.Load(), plural(errs, "error"))
}

// plural returns "1 key", "2 keys".
func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// finish prints the summary and returns the command's error, if any.
func (im *importer) finish(ctx context.Context, src importSource) error {
	if note := src.Notes(); note != "" {
		im.stderr.printf("import: %s\n", note)
	}
	im.stdout.printf("%s\n", im.summary())
	left := im.read.Load() - im.done.Load() - im.failed.Load()
	im.fatalMu.Lock()
	fatal := im.fatal
	im.fatalMu.Unlock()
	switch {
	case fatal != nil:
		return fmt.Errorf("import stopped: %w; imported: %s, read but not imported: %d; the import is safe to run again",
			fatal, plural(im.done.Load(), "key"), left)
	case ctx.Err() != nil:
		return fmt.Errorf("import interrupted: imported: %s, read but not imported: %d, the rest not read; the import is safe to run again",
			plural(im.done.Load(), "key"), left)
	case im.readErr != nil:
		return fmt.Errorf("import: %w; imported before it: %s", im.readErr, plural(im.done.Load(), "key"))
	}
	if n := im.invalid.Load() + im.failed.Load(); n > 0 {
		return fmt.Errorf("import: %s (invalid records: %d, keys the node refused: %d); every other key was imported",
			plural(n, "error"), im.invalid.Load(), im.failed.Load())
	}
	return nil
}
