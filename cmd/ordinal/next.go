package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/client"
	"github.com/ordinal-dev/ordinal/internal/cli"
)

// defaultCallTimeout bounds a command's calls, retries included, so that a
// command against an unreachable node fails instead of hanging.
const defaultCallTimeout = 5 * time.Second

type nextFlags struct {
	conn        connFlags
	store, mode string
	count       int64
	timeout     time.Duration
}

func runNext(args []string) error {
	var f nextFlags
	fs := cli.NewFlagSet("next", "ordinal next [--addr HOST:PORT] [--store NAME] [--mode weak|strong] [--count N] KEY")
	f.conn.registerAddr(fs, "gRPC address of an ordinal node")
	f.conn.Register(fs)
	fs.StringVar(&f.store, "store", "", "store (namespace) of the key; empty means the server's default store")
	fs.StringVar(&f.mode, "mode", "weak", "weak (unique, increasing per node) or strong (strictly increasing cluster-wide)")
	fs.Int64Var(&f.count, "count", 1, "how many contiguous IDs to take")
	fs.DurationVar(&f.timeout, "timeout", defaultCallTimeout, "how long to wait for the node, retries included")
	positional, err := cli.ParseCommandFlags("next", fs, args)
	if err != nil {
		return err
	}
	key, mode, err := f.check(positional)
	if err != nil {
		return err
	}
	opts, err := f.conn.ClientOptions()
	if err != nil {
		return err
	}
	return next(f, key, mode, opts)
}

// check validates what the server cannot: the command line's shape and the
// flags that never reach the server as such.
func (f nextFlags) check(positional []string) (string, client.Mode, error) {
	switch {
	case len(positional) == 0:
		return "", 0, cli.UsageErrorf("next: key is required: ordinal next [flags] KEY")
	case len(positional) > 1:
		return "", 0, cli.UsageErrorf("next: expected one KEY, got %d arguments %q; put flags before or after KEY", len(positional), positional)
	case f.count < 1:
		return "", 0, cli.UsageErrorf("next: --count is %d; it must be at least 1", f.count)
	case f.timeout <= 0:
		return "", 0, cli.UsageErrorf("next: --timeout is %v; it must be positive", f.timeout)
	}
	mode, err := parseMode(f.mode)
	if err != nil {
		return "", 0, cli.UsageErrorf("next: %w", err)
	}
	return positional[0], mode, nil
}

// next takes the IDs, through a client made with opts, and prints them: a
// single ID alone on its line, so that scripts can use it as is, or a block
// as "first..last (n ids)".
func next(f nextFlags, key string, mode client.Mode, opts []client.Option) error {
	c, err := client.New(f.conn.addr, append(opts, client.WithStore(f.store))...)
	if err != nil {
		return f.conn.clientError(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	if f.count == 1 {
		id, err := c.NextID(ctx, key, mode)
		if err != nil {
			return f.conn.rpcError(err)
		}
		fmt.Println(id)
		return nil
	}
	first, err := c.NextIDs(ctx, key, mode, f.count)
	if err != nil {
		return f.conn.rpcError(err)
	}
	fmt.Printf("%d..%d (%d ids)\n", first, first+f.count-1, f.count)
	return nil
}

func parseMode(s string) (client.Mode, error) {
	switch strings.ToLower(s) {
	case "weak":
		return client.Weak, nil
	case "strong":
		return client.Strong, nil
	}
	return 0, fmt.Errorf("unknown --mode %q: use weak or strong", s)
}

// rpcError reports a failed call as "<cmd>: <Code>: <message>" on one line,
// so that the code a script would branch on is visible, with a hint when no
// node answered at all, or when the TLS settings or credentials are not
// those the node wants.
type rpcError struct {
	cmd, addr string
	err       error
	conn      *connFlags // the flags of the call, for the hints; may be nil
}

func (e *rpcError) Error() string {
	st := status.Convert(e.err)
	msg := strings.Join(strings.Fields(st.Message()), " ")
	line := fmt.Sprintf("%s: %s: %s", e.cmd, st.Code(), msg)
	if e.conn != nil {
		if hint := e.conn.securityHint(st.Code(), msg); hint != "" {
			return line + " (" + hint + ")"
		}
	}
	if st.Code() == codes.Unavailable && (strings.Contains(msg, "connection refused") || strings.Contains(msg, "while dialing")) {
		line += fmt.Sprintf(" (is ordinal running at %s?)", e.addr)
	}
	return line
}

func (e *rpcError) Unwrap() error { return e.err }
