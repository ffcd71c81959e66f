package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/internal/cli"
	"github.com/ordinal-dev/ordinal/snowflake"
)

// snowflakeFlags declare serve's Snowflake stores.
type snowflakeFlags struct {
	stores, layout  string
	lease, maxDrift time.Duration
	clockOffset     time.Duration
}

// snowflakeFlagNames are the flags addSnowflakeFlags registers, for serve
// --help's groups.
var snowflakeFlagNames = []string{"snowflake-stores", "snowflake-layout", "snowflake-lease", "snowflake-max-drift", "snowflake-clock-offset"}

func addSnowflakeFlags(fs *flag.FlagSet, f *snowflakeFlags) {
	cli.ListVar(fs, &f.stores, "snowflake-stores", "", "comma-separated stores that hand out time-ordered Snowflake IDs instead of counters, each NAME or NAME:LAYOUT (seconds or milliseconds); the cluster records them, and a store that holds counters cannot become one (README, Snowflake stores)")
	fs.StringVar(&f.layout, "snowflake-layout", "seconds", "layout of the --snowflake-stores given without one: seconds (Layotto's: 28 bits of seconds since 2022-01-01, 22 of worker, 13 of sequence), milliseconds (like Leaf's: 41, 10, 12), or time=BITS,worker=BITS,seq=BITS[,unit=DURATION][,epoch=YYYY-MM-DD]")
	fs.DurationVar(&f.lease, "snowflake-lease", snowflake.DefaultLease, "how far ahead of its clock a node reserves time through the log: a node cut off from the leader serves Snowflake IDs this long")
	fs.DurationVar(&f.maxDrift, "snowflake-max-drift", snowflake.DefaultMaxDrift, "how far ahead of its clock a node stamps Snowflake IDs (after its clock went back, or a restart) before it answers Unavailable; must exceed --snowflake-lease")
	fs.DurationVar(&f.clockOffset, "snowflake-clock-offset", 0, "for tests only: shift the clock Snowflake stores read on this node")
}

// config returns the Snowflake stores the flags declare.
func (f snowflakeFlags) config() (daemon.Snowflake, error) {
	cfg := daemon.Snowflake{Lease: f.lease, MaxDrift: f.maxDrift, ClockOffset: f.clockOffset}
	if f.maxDrift <= f.lease {
		return cfg, cli.UsageErrorf("serve: --snowflake-max-drift %s must exceed --snowflake-lease %s", f.maxDrift, f.lease)
	}
	def, err := snowflake.ParseLayout(f.layout)
	if err != nil {
		return cfg, cli.UsageErrorf("serve: --snowflake-layout: %v", err)
	}
	for _, s := range cli.SplitList(f.stores) {
		name, preset, hasPreset := strings.Cut(s, ":")
		l := def
		if hasPreset {
			if preset != "seconds" && preset != "milliseconds" {
				return cfg, cli.UsageErrorf("serve: --snowflake-stores %s: layout %q: use seconds or milliseconds here, or --snowflake-layout for another", s, preset)
			}
			l, _ = snowflake.ParseLayout(preset)
		}
		switch {
		case name == "":
			return cfg, cli.UsageErrorf("serve: --snowflake-stores: an empty store name")
		case strings.HasPrefix(name, fsm.ReservedStorePrefix):
			return cfg, cli.UsageErrorf("serve: --snowflake-stores %s: names starting with %s are ordinal's own", name, fsm.ReservedStorePrefix)
		case len(name) > fsm.MaxStoreLen:
			return cfg, cli.UsageErrorf("serve: --snowflake-stores %s: a store name is at most %d bytes", name, fsm.MaxStoreLen)
		}
		if cfg.Stores == nil {
			cfg.Stores = map[string]snowflake.Layout{}
		}
		if _, dup := cfg.Stores[name]; dup {
			return cfg, cli.UsageErrorf("serve: --snowflake-stores: %s given twice", name)
		}
		cfg.Stores[name] = l
	}
	return cfg, nil
}

const decodeUsage = "ordinal decode [--addr HOST:PORT] [--store NAME | --layout LAYOUT] ID..."

// runDecode takes Snowflake IDs apart: with --layout here, else with the
// layout the node at --addr has for --store.
func runDecode(args []string) error {
	var (
		conn    connFlags
		store   string
		layout  string
		timeout time.Duration
	)
	fs := cli.NewFlagSet("decode", decodeUsage+`

Prints the time, worker ID and sequence number of each ID of a Snowflake
store, one line each. With --layout the IDs are decoded here, without a
node; otherwise the node at --addr decodes them with --store's layout.`)
	conn.registerAddr(fs, "gRPC address of an ordinal node")
	conn.Register(fs)
	fs.StringVar(&store, "store", "", "the Snowflake store the IDs came from (ORDINAL_STORE); default: default")
	fs.StringVar(&layout, "layout", "", "decode here with this layout (seconds, milliseconds, or time=..,worker=..,seq=..[,unit=..][,epoch=..]) instead of asking a node")
	fs.DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the node")
	positional, err := cli.ParseCommandFlags("decode", fs, args)
	if err != nil {
		return err
	}
	if len(positional) == 0 {
		return cli.UsageErrorf("decode: expected at least one ID: %s", decodeUsage)
	}
	ids := make([]int64, len(positional))
	for i, a := range positional {
		id, err := strconv.ParseInt(a, 10, 64)
		if err != nil || id < 0 {
			return cli.UsageErrorf("decode: %q is not a non-negative 64-bit integer", a)
		}
		ids[i] = id
	}
	print := func(id int64, unixMs int64, worker, seq uint64) {
		fmt.Fprintf(os.Stdout, "%d\ttime=%s\tworker=%d\tsequence=%d\n", id, time.UnixMilli(unixMs).UTC().Format(time.RFC3339Nano), worker, seq)
	}
	if layout != "" {
		l, err := snowflake.ParseLayout(layout)
		if err != nil {
			return cli.UsageErrorf("decode: --layout: %v", err)
		}
		for _, id := range ids {
			p, err := l.Decode(uint64(id))
			if err != nil {
				return err
			}
			print(id, p.Time.UnixMilli(), p.Worker, p.Seq)
		}
		return nil
	}
	cc, err := conn.dial()
	if err != nil {
		return err
	}
	defer cc.Close()
	c := ordinalv1.NewSnowflakeServiceClient(cc)
	for _, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		resp, err := c.DecodeId(ctx, &ordinalv1.DecodeIdRequest{StoreName: store, Id: id})
		cancel()
		if err != nil {
			return conn.rpcError(err)
		}
		print(id, resp.GetUnixMs(), resp.GetWorker(), resp.GetSequence())
	}
	return nil
}
