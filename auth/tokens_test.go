package auth_test

import (
	"encoding/base64"
	"errors"
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/auth"
)

// TestNewRefuses checks every configuration and tokens file New refuses,
// and that its error names the line and the reason without a secret.
func TestNewRefuses(t *testing.T) {
	tok := mustToken(t)
	h1, h2 := auth.HashToken("one"), auth.HashToken("two")
	secrets := []string{tok, strings.TrimPrefix(h1, "sha256:"), strings.TrimPrefix(h2, "sha256:")}
	file := func(content string) string { return tokensFile(t, content) }

	cases := []struct {
		name    string
		cfg     auth.Config
		want    []error
		wantMsg []string
	}{
		{
			name:    "role peer",
			cfg:     auth.Config{TokensFile: file("admin alice " + h1 + "\npeer n1 " + h2 + "\n")},
			want:    []error{auth.ErrInvalidTokensFile, auth.ErrInvalidRole},
			wantMsg: []string{"line 2", "peer is granted only by peer certificates"},
		},
		{
			name:    "unknown role",
			cfg:     auth.Config{TokensFile: file("root alice " + h1 + "\n")},
			want:    []error{auth.ErrInvalidTokensFile, auth.ErrInvalidRole},
			wantMsg: []string{"line 1", "must be admin or ids"},
		},
		{
			name:    "role in the wrong case",
			cfg:     auth.Config{TokensFile: file("# tokens\nAdmin alice " + h1 + "\n")},
			want:    []error{auth.ErrInvalidRole},
			wantMsg: []string{"line 2"},
		},
		{
			name:    "duplicate name",
			cfg:     auth.Config{TokensFile: file("admin alice " + h1 + "\n\nids alice " + h2 + "\n")},
			want:    []error{auth.ErrInvalidTokensFile, auth.ErrInvalidName},
			wantMsg: []string{"line 3", `"alice" is already on line 1`},
		},
		{
			name:    "one token for two names",
			cfg:     auth.Config{TokensFile: file("admin alice " + h1 + "\nids bob " + h1 + "\n")},
			want:    []error{auth.ErrInvalidTokensFile},
			wantMsg: []string{"line 2", "the same token as line 1"},
		},
		{
			name:    "two fields",
			cfg:     auth.Config{TokensFile: file("admin " + h1 + "\n")},
			want:    []error{auth.ErrInvalidTokensFile},
			wantMsg: []string{"line 1", "found 2 fields"},
		},
		{
			name:    "four fields",
			cfg:     auth.Config{TokensFile: file("admin alice smith " + h1 + "\n")},
			want:    []error{auth.ErrInvalidTokensFile},
			wantMsg: []string{"line 1", "found 4 fields"},
		},
		{
			name:    "another hash function",
			cfg:     auth.Config{TokensFile: file("admin alice md5:" + strings.TrimPrefix(h1, "sha256:")[:32] + "\n")},
			want:    []error{auth.ErrInvalidTokensFile},
			wantMsg: []string{"line 1", "sha256: followed by 64 hex digits"},
		},
		{
			name:    "short hash",
			cfg:     auth.Config{TokensFile: file("admin alice " + h1[:len(h1)-2] + "\n")},
			want:    []error{auth.ErrInvalidTokensFile},
			wantMsg: []string{"sha256: followed by 64 hex digits"},
		},
		{
			name:    "hash that is not hex",
			cfg:     auth.Config{TokensFile: file("admin alice " + h1[:len(h1)-1] + "g\n")},
			want:    []error{auth.ErrInvalidTokensFile},
			wantMsg: []string{"sha256: followed by 64 hex digits"},
		},
		{
			name:    "the token itself instead of its hash",
			cfg:     auth.Config{TokensFile: file("admin alice " + tok + "\n")},
			want:    []error{auth.ErrInvalidTokensFile},
			wantMsg: []string{"line 1", "is a token, not its hash"},
		},
		{
			name:    "name with a forbidden character",
			cfg:     auth.Config{TokensFile: file("admin al$ice " + h1 + "\n")},
			want:    []error{auth.ErrInvalidName},
			wantMsg: []string{"line 1", "letters, digits"},
		},
		{
			name:    "token in the name field",
			cfg:     auth.Config{TokensFile: file("admin " + tok + " " + h1 + "\n")},
			want:    []error{auth.ErrInvalidName},
			wantMsg: []string{"looks like a token"},
		},
		{
			name:    "line too long",
			cfg:     auth.Config{TokensFile: file("admin alice " + h1 + "\n# " + strings.Repeat("x", 70_000) + "\n")},
			want:    []error{auth.ErrInvalidTokensFile},
			wantMsg: []string{"line 2", "longer than"},
		},
		{
			name:    "missing file",
			cfg:     auth.Config{TokensFile: filepath.Join(t.TempDir(), "absent")},
			want:    []error{auth.ErrInvalidTokensFile, fs.ErrNotExist},
			wantMsg: []string{"absent"},
		},
		{
			name:    "open mode with a tokens file",
			cfg:     auth.Config{Open: true, TokensFile: file("")},
			want:    []error{auth.ErrInvalidConfig},
			wantMsg: []string{"open mode"},
		},
		{
			name: "open mode with admin names",
			cfg:  auth.Config{Open: true, AdminNames: []string{"ops"}},
			want: []error{auth.ErrInvalidConfig},
		},
		{
			name:    "negative reload interval",
			cfg:     auth.Config{ReloadInterval: -time.Second},
			want:    []error{auth.ErrInvalidConfig},
			wantMsg: []string{"negative"},
		},
		{
			name:    "empty admin name",
			cfg:     auth.Config{AdminNames: []string{"ops", " "}},
			want:    []error{auth.ErrInvalidConfig},
			wantMsg: []string{"empty admin name"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := auth.New(tc.cfg)
			if err == nil {
				t.Fatalf("New accepted the configuration (Authorizer %p)", a)
			}
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Errorf("error %q does not wrap %q", err, want)
				}
			}
			for _, msg := range tc.wantMsg {
				if !strings.Contains(err.Error(), msg) {
					t.Errorf("error %q does not say %q", err, msg)
				}
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q holds a token or a hash", err)
				}
			}
		})
	}
}

// TestTokensFileSyntax loads files in the accepted shapes and checks that
// each token listed works with its role.
func TestTokensFileSyntax(t *testing.T) {
	alice, bob := mustToken(t), mustToken(t)
	ha, hb := auth.HashToken(alice), auth.HashToken(bob)
	cases := []struct {
		name    string
		content string
		entries []auth.TokenEntry
	}{
		{"empty file", "", nil},
		{"comments only", "# nobody yet\n\n   # still nobody\n", nil},
		{
			"comments, blank lines and trailing comments",
			"# ops\n\nadmin alice " + ha + "  # on call\n\tids   ci-bot@build " + hb + "\n",
			[]auth.TokenEntry{{Role: auth.RoleAdmin, Name: "alice", Line: 3}, {Role: auth.RoleIDs, Name: "ci-bot@build", Line: 4}},
		},
		{
			"upper-case hex and CRLF line ends",
			"admin alice sha256:" + strings.ToUpper(strings.TrimPrefix(ha, "sha256:")) + "\r\nids bob " + hb,
			[]auth.TokenEntry{{Role: auth.RoleAdmin, Name: "alice", Line: 1}, {Role: auth.RoleIDs, Name: "bob", Line: 2}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := tokensFile(t, tc.content)
			entries, err := auth.ReadTokensFile(path)
			if err != nil {
				t.Fatalf("ReadTokensFile: %v", err)
			}
			if len(entries) != len(tc.entries) {
				t.Fatalf("entries %+v, want %+v", entries, tc.entries)
			}
			for i := range entries {
				if entries[i] != tc.entries[i] {
					t.Errorf("entry %d is %+v, want %+v", i, entries[i], tc.entries[i])
				}
			}
			a := mustNew(t, auth.Config{TokensFile: path})
			tokens := map[string]string{"alice": alice, "bob": bob, "ci-bot@build": bob}
			for _, e := range tc.entries {
				_, err := a.Authorize(incomingContext("Bearer "+tokens[e.Name]), setFloor)
				if allowed := err == nil; allowed != (e.Role == auth.RoleAdmin) {
					t.Errorf("%s (role %s) calling SetFloor: %v", e.Name, e.Role, err)
				}
				if _, err := a.Authorize(incomingContext("Bearer "+tokens[e.Name]), getNextID); err != nil {
					t.Errorf("%s (role %s) calling GetNextId: %v", e.Name, e.Role, err)
				}
			}
		})
	}
}

func TestMethodRole(t *testing.T) {
	cases := []struct {
		method string
		want   auth.Role
	}{
		{"/ordinal.v1.SequencerService/GetNextId", auth.RoleIDs},
		{"/ordinal.v1.SequencerService/GetNextIds", auth.RoleIDs},
		{"/ordinal.v1.SequencerService/GetHighWater", auth.RoleIDs},
		{"/ordinal.v1.SequencerService/NextIdStream", auth.RoleIDs},
		{"/ordinal.v1.SnowflakeService/DecodeId", auth.RoleIDs},
		{"/spec.proto.runtime.v1.Runtime/GetNextId", auth.RoleIDs},
		{"/spec.proto.runtime.v1.Runtime/SaveState", auth.RoleIDs},
		{"/grpc.health.v1.Health/Check", auth.RoleIDs},
		{"/grpc.health.v1.Health/Watch", auth.RoleIDs},
		{"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", auth.RoleIDs},
		{"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", auth.RoleIDs},

		{"/ordinal.v1.SequencerService/SetFloor", auth.RoleAdmin},
		{"/ordinal.v1.ClusterService/Join", auth.RoleAdmin},
		{"/ordinal.v1.ClusterService/Remove", auth.RoleAdmin},
		{"/ordinal.v1.ClusterService/Members", auth.RoleAdmin},
		{"/ordinal.v1.ClusterService/Leader", auth.RoleAdmin},
		{"/ordinal.v1.ClusterService/TransferLeadership", auth.RoleAdmin},

		// Deny by default: node-to-node methods, new methods, look-alikes.
		{"/ordinal.v1.ClusterService/Reserve", auth.RoleAdmin},
		{"/ordinal.v1.ClusterService/ConfirmTerm", auth.RoleAdmin},
		{"/ordinal.v1.ClusterService/ConfirmTermStream", auth.RoleAdmin},
		{"/ordinal.v1.ClusterService/Status", auth.RoleAdmin},
		{"/ordinal.v1.WorkerService/AcquireWorker", auth.RoleAdmin},
		{"/ordinal.v1.SequencerService/SomethingNew", auth.RoleAdmin},
		{"/ordinal.v1.sequencer/GetNextId", auth.RoleAdmin},
		{"/ordinal.v1.SequencerService/GetNextId/", auth.RoleAdmin},
		{"/spec.proto.runtime.v1.RuntimeX/GetNextId", auth.RoleAdmin},
		{"/grpc.health.v1.Health/Check/x", auth.RoleAdmin},
		{"/grpc.health.v1/Health/Check", auth.RoleAdmin},
		{"ordinal.v1.SequencerService/GetNextId", auth.RoleAdmin},
		{"GetNextId", auth.RoleAdmin},
		{"", auth.RoleAdmin},
	}
	for _, tc := range cases {
		if got := auth.MethodRole(tc.method); got != tc.want {
			t.Errorf("MethodRole(%q) = %q, want %q", tc.method, got, tc.want)
		}
	}
}

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok := mustToken(t)
		raw, ok := strings.CutPrefix(tok, "ordt_")
		if !ok {
			t.Fatalf("token %q lacks the ordt_ prefix", tok)
		}
		b, err := base64.RawURLEncoding.DecodeString(raw)
		if err != nil || len(b) != 32 {
			t.Fatalf("token %q is not 32 bytes of unpadded base64url: %d bytes, %v", tok, len(b), err)
		}
		if seen[tok] {
			t.Fatalf("token %q made twice", tok)
		}
		seen[tok] = true
	}
}

func TestHashToken(t *testing.T) {
	cases := []struct{ token, want string }{
		{"abc", "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	}
	for _, tc := range cases {
		if got := auth.HashToken(tc.token); got != tc.want {
			t.Errorf("HashToken(%q) = %q, want %q", tc.token, got, tc.want)
		}
	}
}

func TestFormatTokenLine(t *testing.T) {
	tok := mustToken(t)
	cases := []struct {
		role auth.Role
		name string
		want error
	}{
		{auth.RoleAdmin, "alice", nil},
		{auth.RoleIDs, "svc.orders-1@prod:eu/a+b", nil},
		{auth.RoleIDs, strings.Repeat("n", 128), nil},
		{auth.RolePeer, "n1", auth.ErrInvalidRole},
		{"root", "alice", auth.ErrInvalidRole},
		{"", "alice", auth.ErrInvalidRole},
		{auth.RoleAdmin, "", auth.ErrInvalidName},
		{auth.RoleAdmin, "al ice", auth.ErrInvalidName},
		{auth.RoleAdmin, "alice#1", auth.ErrInvalidName},
		{auth.RoleAdmin, "ålice", auth.ErrInvalidName},
		{auth.RoleAdmin, strings.Repeat("n", 129), auth.ErrInvalidName},
	}
	lineRE := regexp.MustCompile(`^(admin|ids) (\S+) sha256:[0-9a-f]{64}$`)
	for _, tc := range cases {
		line, err := auth.FormatTokenLine(tc.role, tc.name, tok)
		if !errors.Is(err, tc.want) {
			t.Errorf("FormatTokenLine(%q, %q): %v, want %v", tc.role, tc.name, err, tc.want)
			continue
		}
		if err != nil {
			continue
		}
		m := lineRE.FindStringSubmatch(line)
		if m == nil || m[1] != string(tc.role) || m[2] != tc.name || !strings.HasSuffix(line, " "+auth.HashToken(tok)) {
			t.Errorf("FormatTokenLine(%q, %q) = %q", tc.role, tc.name, line)
			continue
		}
		// What FormatTokenLine makes, the tokens file takes.
		a := mustNew(t, auth.Config{TokensFile: tokensFile(t, line+"\n")})
		ctx, err := a.Authorize(incomingContext("Bearer "+tok), getNextID)
		if err != nil {
			t.Errorf("the token of line %q: %v", line, err)
			continue
		}
		if id, _ := auth.IdentityFromContext(ctx); id.Name != tc.name || id.Via != auth.ViaToken || !id.Roles.Has(tc.role) {
			t.Errorf("the token of line %q is %+v", line, id)
		}
	}
}
