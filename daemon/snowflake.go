package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/keyspace"
	"github.com/ordinal-dev/ordinal/metrics"
	"github.com/ordinal-dev/ordinal/snowflake"
)

// Snowflake configures the node's Snowflake stores (package snowflake).
type Snowflake struct {
	// Stores are the stores this node declares Snowflake stores, with
	// their layouts. The cluster records each declaration in its log at
	// start; a store the cluster already declared with another layout, or
	// that holds counters, makes the node refuse to start. Stores other
	// nodes declared are served too, with the cluster's layout.
	Stores map[string]snowflake.Layout
	// Lease, MaxDrift: see snowflake.Config. Zero means the default.
	Lease, MaxDrift time.Duration
	// ClockOffset shifts the wall clock Snowflake stores read on this
	// node; for tests of skewed clocks only.
	ClockOffset time.Duration
}

// offsetClock is the system clock shifted by an offset.
type offsetClock time.Duration

func (c offsetClock) Now() time.Time { return time.Now().Add(time.Duration(c)) }

// snowflakeBackend is the Raft node as a snowflake.Backend.
type snowflakeBackend struct {
	node  *cluster.Node
	decls []cluster.SnowflakeDecl
}

func (b *snowflakeBackend) Worker(ctx context.Context) (uint64, error) {
	return b.node.AcquireWorker(ctx, b.decls)
}

// Reserve reserves time through the log. Time a follower got from the
// leader (epoch 0) is used only once the follower applied the grant's
// entry, and with it every floor committed before: it reads a key's
// floor from its own state machine when it first meets the key, and the
// leader answers as soon as the entry commits, often before the follower
// learns that it did (and a node just restarted may still be replaying
// its log). Without the wait it could stamp IDs below a floor SetFloor
// reported as holding everywhere.
func (b *snowflakeBackend) Reserve(ctx context.Context, key keyspace.Key, want, need uint64) (alloc.Range, alloc.Epoch, error) {
	rng, epoch, err := b.node.Reserve(ctx, key, want, need)
	if err == nil && epoch == 0 {
		err = b.node.WaitAppliedMark(ctx, key, rng.Last)
	}
	if err != nil {
		return alloc.Range{}, 0, err
	}
	return rng, epoch, nil
}

func (b *snowflakeBackend) Floor(ctx context.Context, key keyspace.Key, value uint64) (uint64, error) {
	return b.node.Floor(ctx, key, value)
}

// Applied is the node's applied mark even once its state machine stopped
// (the node then answers every call Unavailable; a call already past that
// check must still see the floors applied before the stop, not 0).
func (b *snowflakeBackend) Applied(key keyspace.Key) uint64 { return b.node.AppliedHighWater(key) }

func (b *snowflakeBackend) MaxReserved(except uint64) uint64 { return b.node.MaxReservedTime(except) }

func (b *snowflakeBackend) HoldFloor(ctx context.Context, hold time.Duration) error {
	return b.node.HoldFloor(ctx, hold)
}

// SnowflakeSourcer is a Store that serves Snowflake stores with a backend
// of its own: the etcd store (etcdcompat). A Raft node serves them from
// its log instead.
type SnowflakeSourcer interface {
	// SnowflakeSource returns the backend, which declares stores (name ->
	// layout) when the node first acquires its worker.
	SnowflakeSource(stores map[string]snowflake.Layout) (snowflake.Source, error)
}

// newSnowflake starts a Snowflake service over b serving the stores cfg
// declares; confirm proves leadership for its STRONG calls (nil: none).
func newSnowflake(b snowflake.Backend, confirm func(context.Context) (alloc.Epoch, error), cfg Snowflake, logger hclog.Logger, m *metrics.Alloc) (*snowflake.Service, error) {
	scfg := snowflake.Config{Lease: cfg.Lease, MaxDrift: cfg.MaxDrift, Confirm: confirm, Logger: logger, Metrics: m}
	if cfg.ClockOffset != 0 {
		scfg.Clock = offsetClock(cfg.ClockOffset)
	}
	s, err := snowflake.New(b, scfg)
	if err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Stores)) {
		if err := s.Declare(name, cfg.Stores[name]); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// declareHook makes s serve a store the cluster declared.
func declareHook(s *snowflake.Service, logger hclog.Logger) func(store string, l snowflake.Layout) {
	return func(store string, l snowflake.Layout) {
		if err := s.Declare(store, l); err != nil {
			logger.Error("cannot serve a Snowflake store the cluster declared", "store", store, "layout", l.String(), "error", err)
		}
	}
}

// openSnowflake starts the Snowflake service of a Raft node, serving the
// stores cfg declares and every store the cluster's log declares.
func openSnowflake(node *cluster.Node, confirm func(context.Context) (alloc.Epoch, error), cfg Snowflake, logger hclog.Logger, m *metrics.Alloc) (*snowflake.Service, error) {
	b := &snowflakeBackend{node: node}
	for _, name := range slices.Sorted(maps.Keys(cfg.Stores)) {
		l := cfg.Stores[name]
		b.decls = append(b.decls, cluster.SnowflakeDecl{Store: name, Layout: l.String(), WorkerBits: l.WorkerBits})
	}
	s, err := newSnowflake(b, confirm, cfg, logger, m)
	if err != nil {
		return nil, err
	}
	declare := declareHook(s, logger)
	hook := func(store string, d fsm.SnowflakeStore) {
		l, err := snowflake.ParseLayout(d.Layout)
		if err != nil {
			logger.Error("cannot serve a Snowflake store the cluster declared", "store", store, "layout", d.Layout, "error", err)
			return
		}
		declare(store, l)
	}
	node.SetSnowflakeHook(hook)
	for store, d := range node.SnowflakeStores() {
		hook(store, d)
	}
	return s, nil
}

// openSnowflakeSource starts the Snowflake service of a store that brings
// its own backend (the etcd store's).
func openSnowflakeSource(st SnowflakeSourcer, confirm func(context.Context) (alloc.Epoch, error), cfg Snowflake, logger hclog.Logger, m *metrics.Alloc) (*snowflake.Service, error) {
	src, err := st.SnowflakeSource(cfg.Stores)
	if err != nil {
		return nil, err
	}
	s, err := newSnowflake(src, confirm, cfg, logger, m)
	if err != nil {
		return nil, err
	}
	src.OnDeclare(declareHook(s, logger))
	src.OnFloor(s.RaiseFloor)
	return s, nil
}

// declareSnowflake records this node's Snowflake stores in the cluster's
// log and takes its worker ID, retrying until ctx ends; a conflicting
// declaration fails at once.
func declareSnowflake(ctx context.Context, s *snowflake.Service, logger hclog.Logger) error {
	for {
		w, err := s.Acquire(ctx)
		if err == nil {
			logger.Info("snowflake stores declared", "worker", w)
			return nil
		}
		if errors.Is(err, fsm.ErrSnowflakeConflict) || errors.Is(err, snowflake.ErrConflict) || errors.Is(err, fsm.ErrNoWorker) {
			return fmt.Errorf("snowflake stores: %w", err)
		}
		logger.Debug("declaring snowflake stores; retrying", "error", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("snowflake stores: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// router serves Snowflake stores from the Snowflake service and every
// other store from the counters.
type router struct {
	counters alloc.Sequencer
	sf       *snowflake.Service
}

func (r router) Next(ctx context.Context, key keyspace.Key, mode alloc.Mode, count uint64) (uint64, error) {
	if r.sf.Serves(key.Store) {
		return r.sf.Next(ctx, key, mode, count)
	}
	return r.counters.Next(ctx, key, mode, count)
}

func (r router) HighWater(ctx context.Context, key keyspace.Key) (uint64, error) {
	if r.sf.Serves(key.Store) {
		return r.sf.HighWater(ctx, key)
	}
	return r.counters.HighWater(ctx, key)
}

func (r router) SetFloor(ctx context.Context, key keyspace.Key, floor uint64) (uint64, error) {
	if r.sf.Serves(key.Store) {
		return r.sf.SetFloor(ctx, key, floor)
	}
	return r.counters.SetFloor(ctx, key, floor)
}

// registerSnowflakeMetrics exports what an operator of Snowflake stores
// watches: the node's worker ID and how far its reserved time runs ahead
// of its clock (it falls to zero and below when the node cannot reserve,
// cut off from the leader, and the node then stops serving them).
func registerSnowflakeMetrics(m *metrics.Metrics, sf *snowflake.Service) {
	m.GaugeFunc("snowflake_worker", "This node's Snowflake worker ID; -1 until it has one.", func() float64 {
		if w, ok := sf.Worker(); ok {
			return float64(w)
		}
		return -1
	})
	m.GaugeFunc("snowflake_reserved_ahead_seconds", "How far the time this node reserved for Snowflake IDs runs ahead of its clock; 0 or less: it cannot stamp IDs without reserving more.", func() float64 {
		lo, hi := sf.Reserved()
		if lo > hi {
			return 0
		}
		return float64(int64(hi)-time.Now().UnixMilli()) / 1000
	})
	m.GaugeFunc("snowflake_keys", "Keys of Snowflake stores in this node's memory.", func() float64 { return float64(sf.Keys()) })
}
