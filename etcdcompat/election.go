package etcdcompat

import (
	"context"
	"math"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// resignTimeout bounds handing leadership over on the way out.
const resignTimeout = 2 * time.Second

// campaignLoop keeps this node in the election: a session (a lease kept
// alive), a campaign on it, and, once elected, a tenure that lasts until
// the session ends or the election key disappears. Then it starts over
// with a new session, so a node that lost etcd for longer than the lease
// competes again by itself when etcd is back.
func (s *Store) campaignLoop(ctx context.Context) {
	wait := minRetry
	for ctx.Err() == nil {
		cli, err := s.cli()
		if err != nil {
			return
		}
		ttl := int(math.Ceil(s.cfg.SessionTTL.Seconds()))
		start := time.Now()
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
		s.recordLoop(ctx, opSession, start, err)
		if err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("cannot open an etcd session; STRONG calls wait for a leader", "endpoints", s.endpoints, "error", err)
			}
			sleep(ctx, wait)
			wait = min(wait*2, maxRetry)
			continue
		}
		wait = minRetry
		s.sessionLive.Store(true)
		s.runSession(ctx, sess)
		s.sessionLive.Store(false)
		// Revoking the lease deletes the election key, so another node
		// takes over now rather than when the lease expires. If etcd is
		// unreachable this fails and the lease expires on its own.
		sess.Orphan()
		rctx, cancel := context.WithTimeout(context.Background(), resignTimeout)
		start = time.Now()
		_, err = cli.Revoke(rctx, sess.Lease())
		s.record(opResign, start, err)
		cancel()
	}
}

// runSession campaigns on sess and leads until the tenure ends.
func (s *Store) runSession(ctx context.Context, sess *concurrency.Session) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	el := concurrency.NewElection(sess, s.electionPfx)
	// Campaign returns once every older election key is gone: its time
	// includes the whole wait behind the leader of the moment.
	start := time.Now()
	err := el.Campaign(ctx, s.self)
	s.recordLoop(ctx, opCampaign, start, err)
	if err != nil {
		if ctx.Err() == nil {
			s.logger.Warn("etcd election failed; starting over", "error", err)
		}
		return
	}
	t := &tenure{key: el.Key(), rev: el.Rev(), lost: make(chan struct{})}
	s.tenure.Store(t)
	s.cfg.Metrics.Election(true)
	s.logger.Info("leading: this node serves STRONG calls", "epoch", t.rev, "election_key", t.key)
	s.goLoop(func(context.Context) { s.watchTenure(ctx, t) })
	select {
	case <-ctx.Done():
	case <-t.lost:
	}
	s.tenure.CompareAndSwap(t, nil)
	// Every tenure that ends counts as lost, handed over at shutdown
	// included, so that won minus lost is 1 exactly while this node leads.
	s.cfg.Metrics.Election(false)
	if s.ctx.Err() != nil {
		s.logger.Info("shutting down: handing STRONG leadership over", "epoch", t.rev)
		return
	}
	select {
	case <-sess.Done():
		s.logger.Warn("lost leadership: the etcd session ended (lease expired or etcd unreachable)", "epoch", t.rev)
	case <-t.lost:
		s.logger.Warn("lost leadership: the election key is gone", "epoch", t.rev)
	default:
	}
}

// watchTenure ends t when its election key is deleted: its lease expired
// or was revoked, or someone deleted it. Safety never depends on this
// watch (every STRONG batch reads the key); it only lets the node notice
// and campaign again without waiting for a failed Confirm.
//
// Each pass reads the key and watches from the revision after that read,
// never from the tenure's own revision: once etcd has compacted past it, a
// watch from there fails at once with ErrCompacted, and restarting it
// there would spin for the whole tenure without ever seeing the deletion.
func (s *Store) watchTenure(ctx context.Context, t *tenure) {
	wait := minRetry
	for ctx.Err() == nil {
		select {
		case <-t.lost:
			return
		default:
		}
		cli, err := s.cli()
		if err != nil {
			return
		}
		gctx, cancel := s.requestContext(ctx)
		start := time.Now()
		resp, err := cli.Get(gctx, t.key)
		s.recordLoop(ctx, opTenure, start, err)
		cancel()
		if err != nil {
			sleep(ctx, wait)
			wait = min(wait*2, maxRetry)
			continue
		}
		wait = minRetry
		if len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != t.rev {
			t.end()
			return
		}
		if s.watchUntilDeleted(ctx, cli, t, resp.Header.Revision+1) {
			t.end()
			return
		}
		sleep(ctx, minRetry)
	}
}

// watchUntilDeleted watches t's key from revision from and reports whether
// it saw the key deleted; false means the watch ended first (ctx done, an
// error, compaction), and the caller reads the key again.
func (s *Store) watchUntilDeleted(ctx context.Context, cli *clientv3.Client, t *tenure, from int64) bool {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range cli.Watch(wctx, t.key, clientv3.WithRev(from)) {
		for _, ev := range wr.Events {
			if ev.Type == mvccpb.DELETE {
				return true
			}
		}
		if wr.Err() != nil {
			return false
		}
	}
	return false
}

// observeLoop keeps s.leader up to date: the election key with the lowest
// create revision, whose value is the leader's gRPC address.
func (s *Store) observeLoop(ctx context.Context) {
	wait := minRetry
	for ctx.Err() == nil {
		cli, err := s.cli()
		if err != nil {
			return
		}
		start := time.Now()
		resp, err := cli.Get(ctx, s.electionPfx+"/", clientv3.WithFirstCreate()...)
		s.recordLoop(ctx, opLeader, start, err)
		if err != nil {
			sleep(ctx, wait)
			wait = min(wait*2, maxRetry)
			continue
		}
		wait = minRetry
		if len(resp.Kvs) == 0 {
			s.leader.Store(nil)
		} else if kv := resp.Kvs[0]; s.leader.Load() == nil || s.leader.Load().rev != kv.CreateRevision || s.leader.Load().addr != string(kv.Value) {
			s.leader.Store(&leaderInfo{addr: string(kv.Value), rev: kv.CreateRevision})
		}
		// Any change under the election prefix may change the leader:
		// read it again.
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := cli.Watch(wctx, s.electionPfx+"/", clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
		for wr := range wch {
			if len(wr.Events) > 0 || wr.Err() != nil {
				break
			}
		}
		cancel()
	}
}

// floorLoop calls the floor hook for every floor any node sets, so that
// this node drops WEAK IDs below it. A node needs no floor set before it
// started (its ranges are reserved above them), so it watches from the
// current revision; if etcd compacted history past what it has seen, it
// reads every floor again.
func (s *Store) floorLoop(ctx context.Context) {
	var next int64 // the revision to watch from; 0: not known yet
	relist := false
	wait := minRetry
	for ctx.Err() == nil {
		cli, err := s.cli()
		if err != nil {
			return
		}
		if next == 0 || relist {
			opts := []clientv3.OpOption{clientv3.WithPrefix()}
			if !relist {
				opts = append(opts, clientv3.WithCountOnly())
			}
			start := time.Now()
			resp, err := cli.Get(ctx, s.floorsDir, opts...)
			s.recordLoop(ctx, opFloors, start, err)
			if err != nil {
				sleep(ctx, wait)
				wait = min(wait*2, maxRetry)
				continue
			}
			for _, kv := range resp.Kvs {
				s.applyFloor(kv)
			}
			next, relist = resp.Header.Revision+1, false
		}
		wait = minRetry
		wctx, cancel := context.WithCancel(ctx)
		for wr := range cli.Watch(wctx, s.floorsDir, clientv3.WithPrefix(), clientv3.WithRev(next)) {
			if wr.CompactRevision != 0 {
				relist = true
				break
			}
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.PUT {
					s.applyFloor(ev.Kv)
				}
			}
			next = wr.Header.Revision + 1
		}
		cancel()
		sleep(ctx, minRetry)
	}
}

func (s *Store) applyFloor(kv *mvccpb.KeyValue) {
	key, err := parseKeyIn(s.floorsDir, string(kv.Key))
	if err != nil {
		s.logger.Warn("ignoring a key under floors/ that ordinal did not write", "error", err)
		return
	}
	floor, err := counterOf([]*mvccpb.KeyValue{kv})
	if err != nil {
		s.logger.Warn("ignoring a floor", "error", err)
		return
	}
	if fn := s.floorHook.Load(); fn != nil {
		(*fn)(key, floor.value)
	}
}
