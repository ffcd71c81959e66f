package e2e

// A random schedule of network faults, leadership transfers and node
// restarts, drawn from a seed, under STRONG and WEAK load. In `make test` it
// runs a few seconds on three nodes; `make torture` (ORDINAL_TORTURE=1) runs
// it on five nodes for ORDINAL_TORTURE_DURATION per seed.

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/daemon"
)

// tortureShortRun is how long the random schedule runs outside torture
// mode.
const tortureShortRun = 6 * time.Second

// TestTortureRandomFaults applies random faults one after another: isolated
// leaders and followers, random partitions, one-way cuts, lossy and slow
// links, connection resets, leadership transfers, stopped nodes. Every few
// steps it heals everything and requires every node to serve both modes
// within a bound (a hang is a failure). The allocator's idle timeout is
// short and one key is used rarely, so idle pools are evicted and rebuilt
// under the faults too. The history must have no duplicate, WEAK IDs must
// increase per node and STRONG calls must be linearizable.
func TestTortureRandomFaults(t *testing.T) {
	forEachSeed(t, func(t *testing.T, seed int64) {
		nodes, run := 3, tortureShortRun
		if tortureMode() {
			nodes, run = 5, tortureDuration(t)
		}
		r := newFaultRun(t, seed, runOptions{
			nodes:    nodes,
			rareKeys: []string{"rare"},
			configure: func(_ string, cfg *daemon.Config) {
				cfg.Alloc.IdleTimeout = time.Second
			},
		})
		r.end = time.Now().Add(run)
		l := r.load
		l.progress(r.running(), true, 10, recoverBound, "before the faults")

		stopped := map[string]bool{}
		// While the links stay as they are, a node that cannot reach any
		// node with a majority around it must fail every STRONG call.
		type doom struct {
			node string
			w    window
		}
		var dooms, open []doom
		reshape := func() {
			now := l.now()
			for _, d := range open {
				d.w.to = now
				dooms = append(dooms, d)
			}
			open = open[:0]
			if d := r.doomed(); len(d) > 0 {
				r.logf("cut off from any majority: %v", d)
			}
			for _, id := range r.doomed() {
				open = append(open, doom{id, window{from: now}})
			}
		}
		checkpoint := func(why string) {
			t.Helper()
			r.net.HealAll()
			reshape()
			for _, id := range sortedKeys(stopped) {
				r.logf("restarting %s", id)
				r.c.Node(id).Restart()
				delete(stopped, id)
				reshape()
			}
			all := r.running()
			l.progress(all, true, 5, recoverBound, why)
			l.progress(all, false, 5, recoverBound, why)
		}

		lastCheckpoint := time.Now()
		for step := 0; time.Now().Before(r.end); step++ {
			r.randomFault(stopped)
			reshape()
			hold := r.between(100*time.Millisecond, 2500*time.Millisecond)
			if len(open) > 0 {
				// Long enough for calls to the cut-off nodes to fail
				// within the window, where they are checked.
				hold = max(hold, 2*time.Second)
			}
			time.Sleep(hold)
			if time.Since(lastCheckpoint) > r.between(3*time.Second, 10*time.Second) {
				checkpoint(fmt.Sprintf("after the faults up to step %d healed", step))
				lastCheckpoint = time.Now()
			}
		}
		checkpoint("after every fault healed")
		ops := l.finish()
		checked := 0
		for _, d := range dooms {
			calls := within(ops, d.node, true, d.w)
			checked += len(calls)
			if len(calls) > 0 {
				mustAllFail(t, calls, fmt.Sprintf("STRONG call to %s, cut off from any majority from %v to %v", d.node, d.w.from, d.w.to))
			}
		}
		r.logf("%d STRONG calls to nodes cut off from any majority failed, as they must", checked)
	})
}

// doomed returns the running nodes that cannot complete a STRONG call with
// the links as they are now: no node they share a two-way link with (or
// they themselves) has two-way links to a majority of the voters. Every
// node of the cluster is a voter here.
func (r *faultRun) doomed() []string {
	all := r.c.Nodes()
	var up []string
	for _, nd := range all {
		if nd.Running() {
			up = append(up, nd.ID)
		}
	}
	reach := func(a, b string) bool {
		return a == b || (!r.net.Link(a, b).Cut && !r.net.Link(b, a).Cut)
	}
	majority := len(all)/2 + 1
	canLead := map[string]bool{}
	for _, a := range up {
		n := 0
		for _, b := range up {
			if reach(a, b) {
				n++
			}
		}
		canLead[a] = n >= majority
	}
	var out []string
	for _, x := range up {
		ok := false
		for _, lead := range up {
			if canLead[lead] && reach(x, lead) {
				ok = true
				break
			}
		}
		if !ok {
			out = append(out, x)
		}
	}
	return out
}

// randomFault applies one random fault.
func (r *faultRun) randomFault(stopped map[string]bool) {
	r.t.Helper()
	all := r.c.Nodes()
	var up []string
	for _, nd := range all {
		if nd.Running() {
			up = append(up, nd.ID)
		}
	}
	pick := func() string { return up[r.rng.IntN(len(up))] }
	leader := func() string {
		for _, id := range up {
			if r.c.Node(id).Daemon().Node().IsLeader() {
				return id
			}
		}
		return pick()
	}
	switch r.rng.IntN(11) {
	case 0:
		r.net.Isolate(leader())
	case 1:
		r.net.Isolate(pick())
	case 2:
		names := ids(all)
		r.rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		k := 1 + r.rng.IntN(len(names)/2)
		r.net.Partition(names[:k], names[k:])
	case 3:
		a, b := pick(), pick()
		if a != b {
			r.net.CutOneWay(a, b)
		}
	case 4:
		for range 1 + r.rng.IntN(3) {
			a, b := leader(), pick()
			if r.rng.IntN(2) == 0 {
				a = pick()
			}
			if a != b {
				r.net.Drop(a, b, 0.05+0.15*r.rng.Float64())
				r.net.Delay(a, b, r.between(0, 30*time.Millisecond))
			}
		}
	case 5:
		for i, a := range up {
			for _, b := range up[i+1:] {
				d := r.between(0, 15*time.Millisecond)
				r.net.Delay(a, b, d)
				r.net.Jitter(a, b, d/2+time.Millisecond)
			}
		}
	case 6:
		a, b := leader(), pick()
		r.net.Reset(a, b)
	case 7:
		r.net.HealAll()
	case 8:
		to := pick()
		r.logf("transferring leadership to %s", to)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := r.c.Node(pick()).Cluster().TransferLeadership(ctx, &ordinalv1.TransferLeadershipRequest{NodeId: to})
		cancel()
		if err != nil {
			r.logf("transfer to %s: %v", to, err) // expected under faults
		}
	case 9, 10:
		// Stop a node (keeping a majority up); the next checkpoint
		// restarts it on its data directory.
		if len(stopped) < (len(all)-1)/2 {
			id := pick()
			if r.rng.IntN(2) == 0 {
				id = leader()
			}
			start := time.Now()
			r.c.Node(id).Stop()
			r.logf("stopped %s in %v", id, time.Since(start).Round(time.Millisecond))
			stopped[id] = true
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
