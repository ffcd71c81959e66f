package cluster

import (
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/ordinal-dev/ordinal/fsm"
)

func key(name string) fsm.Key { return fsm.Key{Store: "s", Name: name} }

func reserveOp(name string) fsm.Op {
	return fsm.Op{Kind: fsm.OpReserve, Key: key(name), Want: 10, Need: 1}
}

func floorOp(name string, value uint64) fsm.Op {
	return fsm.Op{Kind: fsm.OpFloor, Key: key(name), Value: value}
}

// refusedKeys returns the names of the keys whose ops admission refused,
// and fails unless every refusal is a *KeyLimitError.
func refusedKeys(t *testing.T, cmd fsm.Command, a *admission) []string {
	t.Helper()
	var out []string
	for i, r := range a.merge(&fsm.ApplyResponse{Results: make([]fsm.Result, len(a.cmd.Ops))}).Results {
		if r.Err == nil {
			continue
		}
		var e *KeyLimitError
		if !errors.As(r.Err, &e) || !errors.Is(r.Err, ErrKeyLimit) {
			t.Fatalf("op %d refused with %v, want a *KeyLimitError", i, r.Err)
		}
		if !slices.Contains(out, cmd.Ops[i].Key.Name) {
			out = append(out, cmd.Ops[i].Key.Name)
		}
	}
	return out
}

// The quota counts keys held, keys whose creation is in flight (admitted,
// not yet applied) and the command's own new keys, each once; an op on a
// key that exists always passes.
func TestAdmitKeys(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.MaxKeys = 4
	n := startNode(t, cfg)
	defer n.Close()
	if _, err := n.apply(ctx(t), fsm.Command{Ops: []fsm.Op{reserveOp("held")}}); err != nil {
		t.Fatal(err)
	}

	// In flight: "a", admitted and never applied (the entry is not
	// proposed in this test).
	inflight, err := n.admitKeys(ctx(t), fsm.Command{Ops: []fsm.Op{reserveOp("a")}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cmd     fsm.Command
		refused []string
	}{
		{"existing keys pass", fsm.Command{Ops: []fsm.Op{reserveOp("held"), floorOp("held", 99)}}, nil},
		{"a floor of 0 creates nothing", fsm.Command{Ops: []fsm.Op{floorOp("x", 0), floorOp("y", 0), floorOp("z", 0)}}, nil},
		{"a key in flight counts once", fsm.Command{Ops: []fsm.Op{reserveOp("a"), reserveOp("b"), reserveOp("c")}}, nil},
		{"a key in flight counts", fsm.Command{Ops: []fsm.Op{reserveOp("a"), reserveOp("b"), reserveOp("c"), reserveOp("d")}}, []string{"d"}},
		{"room for two more", fsm.Command{Ops: []fsm.Op{reserveOp("b"), floorOp("c", 5), reserveOp("d")}}, []string{"d"}},
		{"every op of a refused key", fsm.Command{Ops: []fsm.Op{reserveOp("b"), reserveOp("c"), reserveOp("d"), floorOp("d", 7), reserveOp("held")}}, []string{"d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := n.admitKeys(ctx(t), tt.cmd)
			if err != nil {
				t.Fatal(err)
			}
			defer a.done()
			if got := refusedKeys(t, tt.cmd, a); !slices.Equal(got, tt.refused) {
				t.Errorf("refused %q, want %q", got, tt.refused)
			}
			for _, op := range a.cmd.Ops {
				if slices.Contains(tt.refused, op.Key.Name) && creates(op) {
					t.Errorf("op on refused key %q is still in the command", op.Key.Name)
				}
			}
		})
	}

	// Two admissions in flight at once share the room.
	first, err := n.admitKeys(ctx(t), fsm.Command{Ops: []fsm.Op{reserveOp("b"), reserveOp("c")}})
	if err != nil {
		t.Fatal(err)
	}
	second, err := n.admitKeys(ctx(t), fsm.Command{Ops: []fsm.Op{reserveOp("d")}})
	if err != nil {
		t.Fatal(err)
	}
	if got := refusedKeys(t, fsm.Command{Ops: []fsm.Op{reserveOp("d")}}, second); !slices.Equal(got, []string{"d"}) {
		t.Errorf("with held, a, b and c counted, d refused: %q, want [d]", got)
	}
	second.done()
	first.done()
	inflight.done()
	// Released without being applied: the room is back.
	a, err := n.admitKeys(ctx(t), fsm.Command{Ops: []fsm.Op{reserveOp("b"), reserveOp("c"), reserveOp("d")}})
	if err != nil {
		t.Fatal(err)
	}
	if got := refusedKeys(t, a.cmd, a); len(got) != 0 {
		t.Errorf("after the admissions were released, refused %q", got)
	}
	a.done()

	// Through apply: refused ops are answered, admitted ones committed.
	resp, err := n.apply(ctx(t), fsm.Command{Ops: []fsm.Op{reserveOp("b"), reserveOp("c"), reserveOp("d"), reserveOp("e"), reserveOp("held")}})
	if err != nil {
		t.Fatal(err)
	}
	var refused []int
	for i, r := range resp.Results {
		if r.Err != nil {
			refused = append(refused, i)
		} else if r.First == 0 {
			t.Errorf("op %d committed nothing", i)
		}
	}
	if !slices.Equal(refused, []int{3}) {
		t.Errorf("ops %v refused, want [3] (e, the fifth key)", refused)
	}
	if n.fsm.Len() != 4 || len(n.quota.pending) != 0 {
		t.Errorf("%d keys held, %d pending after apply; want 4 and 0", n.fsm.Len(), len(n.quota.pending))
	}
	if msg := resp.Results[3].Err.Error(); !strings.Contains(msg, `key "e" in store "s"`) || !strings.Contains(msg, "holds 4 keys") {
		t.Errorf("refusal says %q", msg)
	}
	// A command all of whose ops are refused commits nothing.
	before := n.raft.LastIndex()
	resp, err = n.apply(ctx(t), fsm.Command{Ops: []fsm.Op{reserveOp("f")}})
	if err != nil || resp.Results[0].Err == nil || n.raft.LastIndex() != before {
		t.Errorf("all refused: %v, %+v, log grew from %d to %d", err, resp, before, n.raft.LastIndex())
	}
}

func TestAdmitKeysWithoutLimitTakesNoLock(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	defer n.Close()
	a, err := n.admitKeys(ctx(t), fsm.Command{Ops: []fsm.Op{reserveOp("a"), reserveOp("b")}})
	if err != nil || len(a.created) != 0 || a.refused != nil {
		t.Errorf("no limit: admission %+v, %v; want everything, nothing counted", a, err)
	}
}

func TestPageToken(t *testing.T) {
	last := fsm.Key{Store: "orders", Name: "k\x00 with odd bytes \xff"}
	tok := encodePageToken(last, "orders", "k")
	if got, err := decodePageToken(tok, "orders", "k"); err != nil || got != last {
		t.Fatalf("round trip: %q, %v; want %q", got, err, last)
	}
	longest := encodePageToken(fsm.Key{Store: strings.Repeat("s", fsm.MaxStoreLen), Name: strings.Repeat("k", fsm.MaxKeyLen)}, "", "")
	if _, err := decodePageToken(longest, "", ""); err != nil {
		t.Errorf("longest key: %v", err)
	}
	raw := func(b ...byte) string { return encodeRaw(b) }
	tests := []struct {
		name, tok string
	}{
		{"empty after decoding", raw()},
		{"wrong version", raw(2, 0, 0, 0, 0, 0, 0)},
		{"store longer than the input", raw(1, 9, 'a')},
		{"store over the limit", raw(append([]byte{1, 0x81, 0x02}, make([]byte, 257+5)...)...)},
		{"trailing bytes", tok + "AA"},
		{"not base64", "!!"},
		{"cut short", tok[:len(tok)-2]},
	}
	for _, tt := range tests {
		if _, err := decodePageToken(tt.tok, "orders", "k"); !errors.Is(err, errBadToken) {
			t.Errorf("%s: %v, want errBadToken", tt.name, err)
		}
	}
	for _, filter := range [][2]string{{"other", "k"}, {"orders", ""}, {"orders", "k2"}, {"ordersk", ""}} {
		if _, err := decodePageToken(tok, filter[0], filter[1]); err == nil || !strings.Contains(err.Error(), "another store_name or prefix") {
			t.Errorf("token of orders/k used with %q/%q: %v", filter[0], filter[1], err)
		}
	}
}

func encodeRaw(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// FuzzPageToken: any token is refused or decoded without a panic, within
// the key limits, and every token this node issues decodes to its key.
func FuzzPageToken(f *testing.F) {
	f.Add("", "s", "k", "")
	f.Add(encodePageToken(fsm.Key{Store: "s", Name: "k"}, "s", ""), "s", "k", "")
	f.Fuzz(func(t *testing.T, tok, store, name, prefix string) {
		if k, err := decodePageToken(tok, store, prefix); err == nil && (len(k.Store) > fsm.MaxStoreLen || len(k.Name) > fsm.MaxKeyLen) {
			t.Fatalf("decoded %q, over the limits", k)
		}
		if len(store) > fsm.MaxStoreLen || len(name) > fsm.MaxKeyLen {
			return
		}
		k := fsm.Key{Store: store, Name: name}
		if got, err := decodePageToken(encodePageToken(k, store, prefix), store, prefix); err != nil || got != k {
			t.Fatalf("round trip of %q: %q, %v", k, got, err)
		}
	})
}
