package fsm_test

import (
	"errors"
	"fmt"

	"github.com/ordinal-dev/ordinal/fsm"
)

func ExampleFSM_ApplyCommand() {
	f := fsm.New(nil)
	key := fsm.Key{Store: "default", Name: "orders"}
	resp := f.ApplyCommand(fsm.Command{Ops: []fsm.Op{
		{Kind: fsm.OpReserve, Key: key, Need: 1, Want: 100},
		{Kind: fsm.OpFloor, Key: key, Value: 1000},
		{Kind: fsm.OpReserve, Key: key, Need: 10, Want: 10},
	}})
	for _, r := range resp.Results {
		fmt.Println(r.First, r.Last, r.HighWater)
	}
	fmt.Println(f.HighWater(key))
	// Output:
	// 1 100 100
	// 0 0 1000
	// 1001 1010 1010
	// 1010
}

func ExampleDecode() {
	b := fsm.Command{Ops: []fsm.Op{{Kind: fsm.OpReserve, Key: fsm.Key{Store: "s", Name: "k"}, Need: 5, Want: 2}}}.Encode()
	_, err := fsm.Decode(b)
	fmt.Println(errors.Is(err, fsm.ErrMalformed))
	fmt.Println(err)
	// Output:
	// true
	// fsm: decode command: malformed command or snapshot: op 0 (reserve): need 5 exceeds want 2
}
