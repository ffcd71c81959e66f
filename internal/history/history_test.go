package history

import (
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func op(client int, strong bool, call, ret, first, count int64) Op {
	return Op{Client: client, Node: "n1", Key: "k", Strong: strong, Call: call, Return: ret, First: first, Count: count}
}

func TestCheckers(t *testing.T) {
	failed := op(2, true, 5, 6, 0, 0)
	failed.Err = errors.New("deadline exceeded")
	tests := []struct {
		name                            string
		ops                             []Op
		unique, weakOrder, linearizable bool
	}{
		{"sequential increasing", []Op{op(0, true, 0, 1, 1, 1), op(0, true, 2, 3, 2, 1), op(0, true, 4, 5, 10, 5)}, true, true, true},
		{"concurrent calls in either order", []Op{op(0, true, 0, 10, 5, 1), op(1, true, 1, 9, 3, 1)}, true, true, true},
		{"later call got a lower id", []Op{op(0, true, 0, 1, 5, 1), op(1, true, 2, 3, 3, 1)}, true, true, false},
		{"duplicate across modes", []Op{op(0, true, 0, 1, 5, 1), op(1, false, 2, 3, 5, 1)}, false, true, true},
		{"overlapping blocks", []Op{op(0, true, 0, 1, 1, 10), op(1, true, 2, 3, 10, 1)}, false, true, false},
		{"weak regression on one node", []Op{op(0, false, 0, 1, 5, 1), op(0, false, 2, 3, 4, 1)}, true, false, true},
		{"keys are independent counters", []Op{op(0, true, 0, 1, 5, 1), {Client: 1, Node: "n1", Key: "other", Strong: true, Call: 2, Return: 3, First: 1, Count: 1}}, true, true, true},
		{"indeterminate call", []Op{op(0, true, 0, 1, 1, 1), failed, op(0, true, 7, 8, 2, 1)}, true, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckUnique(tc.ops); (err == nil) != tc.unique {
				t.Errorf("CheckUnique: %v, want ok=%v", err, tc.unique)
			}
			if err := CheckWeakPerNode(tc.ops); (err == nil) != tc.weakOrder {
				t.Errorf("CheckWeakPerNode: %v, want ok=%v", err, tc.weakOrder)
			}
			viz := filepath.Join(t.TempDir(), "viz.html")
			err := CheckStrong(tc.ops, 10*time.Second, viz)
			if (err == nil) != tc.linearizable {
				t.Errorf("CheckStrong: %v, want ok=%v", err, tc.linearizable)
			}
			if err != nil && !errors.Is(err, ErrNotLinearizable) {
				t.Errorf("CheckStrong error %v does not wrap ErrNotLinearizable", err)
			}
		})
	}
}
