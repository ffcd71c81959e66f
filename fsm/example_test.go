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

func ExampleFSM_ApplyCommand_snowflake() {
	f := fsm.New(nil)
	const now, hold = 1767225600000, 60000 // unix ms
	resp := f.ApplyCommand(fsm.Command{Ops: []fsm.Op{
		{Kind: fsm.OpDeclareSnowflake, Key: fsm.Key{Store: "orders"}, Layout: "seconds:28 worker:22 sequence:13", Value: 22},
		{Kind: fsm.OpAcquireWorker, NodeID: "n1", Incarnation: "inc-a", At: now, Hold: hold},
		{Kind: fsm.OpAcquireWorker, NodeID: "n2", Incarnation: "inc-b", At: now, Hold: hold},
		// n1 comes back wiped: its old worker is released, it gets another.
		{Kind: fsm.OpAcquireWorker, NodeID: "n1", Incarnation: "inc-c", At: now + 1000, Hold: hold},
		{Kind: fsm.OpReserve, Key: fsm.Key{Store: "orders", Name: "k"}, Need: 1, Want: 1},
	}})
	for _, r := range resp.Results[1:4] {
		fmt.Println("worker", r.Worker)
	}
	fmt.Println(errors.Is(resp.Results[4].Err, fsm.ErrSnowflakeStore))
	for _, w := range f.Workers() {
		fmt.Println(w.ID, w.NodeID, w.Incarnation, w.FreeAt)
	}
	// Output:
	// worker 0
	// worker 1
	// worker 2
	// true
	// 0 n1 inc-a 1767225661000
	// 1 n2 inc-b 0
	// 2 n1 inc-c 0
}
