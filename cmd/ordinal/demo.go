package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ordinal-dev/ordinal/api/runtimev1"
	"github.com/ordinal-dev/ordinal/internal/cli"
)

const (
	// demoKey and demoCalls are those of Layotto's sequencer quick-start
	// demo, so that its documented output can be compared line by line.
	demoKey   = "key666"
	demoCalls = 10

	// defaultDemoStore is the store Layotto's quick start passes with -s.
	defaultDemoStore = "sequencer_demo"
)

type demoFlags struct {
	conn    connFlags
	store   string
	timeout time.Duration
}

func runDemo(args []string) error {
	var f demoFlags
	fs := cli.NewFlagSet("demo", "ordinal demo [--addr HOST:PORT] [-s|--store NAME]")
	f.conn.registerAddr(fs, "gRPC address of an ordinal node")
	f.conn.Register(fs)
	fs.StringVar(&f.store, "store", defaultDemoStore, "store to take the IDs from; -s is short for --store, as in Layotto's demo")
	fs.DurationVar(&f.timeout, "timeout", defaultCallTimeout, "how long the whole demo may take")
	positional, err := cli.ParseCommandFlags("demo", fs, expandStoreShorthand(args))
	if err != nil {
		return err
	}
	if len(positional) > 0 {
		return cli.UsageErrorf("demo: unexpected argument %q: the demo takes only flags", positional[0])
	}
	if f.timeout <= 0 {
		return cli.UsageErrorf("demo: --timeout is %v; it must be positive", f.timeout)
	}
	return demo(f)
}

// expandStoreShorthand rewrites Layotto's -s flag to --store. Registering
// -s as a second flag instead would give the store two environment
// variables, and ORDINAL_STORE would then override an explicit -s.
func expandStoreShorthand(args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		switch {
		case a == "-s" || a == "--s":
			a = "--store"
		case strings.HasPrefix(a, "-s="), strings.HasPrefix(a, "--s="):
			a = "--store=" + a[strings.Index(a, "=")+1:]
		}
		out = append(out, a)
	}
	return out
}

// demo does what Layotto's sequencer demo does, through the same
// Layotto-compatible Runtime API and with the same output, so that it
// proves a Layotto client works against ordinal unchanged.
func demo(f demoFlags) error {
	conn, err := f.conn.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := runtimev1.NewRuntimeClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()

	fmt.Printf("Try to get next id.Key:%s\n", demoKey)
	for range demoCalls {
		// No options: Layotto's default mode, WEAK.
		resp, err := rt.GetNextId(ctx, &runtimev1.GetNextIdRequest{StoreName: f.store, Key: demoKey})
		if err != nil {
			return f.conn.rpcError(err)
		}
		// Layotto prints the response with %v, whose protobuf text form
		// has deliberately unstable spacing; spell out its stable form.
		fmt.Printf("Next id:next_id:%d\n", resp.GetNextId())
	}
	fmt.Println("Demo success!")
	return nil
}
