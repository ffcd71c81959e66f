package e2e

// Network partitions of in-process clusters (real Raft over real TCP),
// injected with internal/faultnet under concurrent STRONG and WEAK load
// sent directly to every node. Each scenario runs one short cycle in `make
// test`; with ORDINAL_TORTURE=1 (or -torture) it repeats randomised cycles
// for ORDINAL_TORTURE_DURATION over ORDINAL_TORTURE_SEEDS seeds. A
// partition during which the old leader is also paused is covered by
// pause_test.go.

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/daemon"
)

// Bounds on how long the cluster may take to react to a fault. They are
// generous for -race on two cores; the defaults elect within about two
// election timeouts (1s).
const (
	electionBound = 15 * time.Second
	recoverBound  = 20 * time.Second
)

// TestPartitionLeaderIsolated cuts the leader off from every other node
// while clients still reach it. Its STRONG calls must fail (it cannot prove
// it leads, and cannot forward), never return an ID; the majority elects a
// new leader and serves; after the heal the old leader rejoins and serves
// again. The whole history must be linearizable.
func TestPartitionLeaderIsolated(t *testing.T) {
	forEachSeed(t, func(t *testing.T, seed int64) {
		r := newFaultRun(t, seed, runOptions{nodes: 3})
		l := r.load
		l.progress(r.running(), true, 20, recoverBound, "before the partition")

		type isolation struct {
			node string
			w    window
		}
		var isolations []isolation
		for cycle := 0; r.more(cycle); cycle++ {
			old := r.c.Leader()
			others := slices.DeleteFunc(r.running(), func(id string) bool { return id == old.ID })
			from := l.now()
			r.net.Isolate(old.ID)
			r.leaderExcept(electionBound, "a new leader in the majority", old.ID)
			l.progress(others, true, 20, recoverBound, "in the majority")
			// Let the clients of the old leader see their STRONG calls fail.
			l.waitFor([]string{old.ID}, true, unavailableCount, 2, recoverBound, "STRONG calls to the isolated leader fail")
			if tortureMode() {
				time.Sleep(r.between(0, 3*time.Second))
			}
			to := l.now()
			r.net.HealAll()
			isolations = append(isolations, isolation{old.ID, window{from, to}})
			l.progress([]string{old.ID}, true, 10, recoverBound, "on the old leader after the heal")
			l.progress(r.running(), false, 10, recoverBound, "WEAK after the heal")
			if tortureMode() {
				time.Sleep(r.between(0, 2*time.Second))
			}
		}
		ops := l.finish()
		for _, iso := range isolations {
			mustAllFail(t, within(ops, iso.node, true, iso.w), "STRONG call to the isolated leader "+iso.node)
		}
	})
}

// TestPartitionMinorityFollower cuts one follower off. The majority keeps
// serving STRONG calls. The cut-off follower keeps serving WEAK calls from
// the block it holds, then answers Unavailable, and fails every STRONG
// call; after the heal it serves both modes again.
func TestPartitionMinorityFollower(t *testing.T) {
	// The block the follower holds when it is cut off must outlive the
	// moments it takes the follower's callers to reach it. A WEAK range
	// serves for WeakRangeTTL from when it was asked for; with the test
	// nodes' second (testcluster.TestWeakRangeTTL, short so that floors
	// hold soon; no floor is set here) the range in use, already aged,
	// often had little of it left once the callers had paused, and on a
	// loaded machine it expired before the follower served a call from
	// it. A range is sized to last a second or two of its key's calls
	// (alloc.Config.GrowWithin), so with five seconds the block still
	// ends within seconds of the cut, used up or expired, and the
	// follower answers Unavailable as before.
	const weakRangeTTL = 5 * time.Second
	forEachSeed(t, func(t *testing.T, seed int64) {
		r := newFaultRun(t, seed, runOptions{nodes: 3, configure: func(_ string, cfg *daemon.Config) {
			cfg.Alloc.WeakRangeTTL = weakRangeTTL
		}})
		l := r.load
		l.progress(r.running(), false, 20, recoverBound, "before the partition")
		l.progress(r.running(), true, 20, recoverBound, "before the partition")

		type cutoff struct {
			node string
			w    window
		}
		var cutoffs []cutoff
		prev := ""
		// Two cycles at least: the second cut of the same follower shows
		// whether the first one left it holding a huge block (failed
		// reservations used to grow the reservation size).
		for cycle := 0; cycle < 2 || r.more(cycle); cycle++ {
			leader := r.c.Leader()
			followers := ids(r.c.Followers(leader))
			f := followers[r.rng.IntN(len(followers))]
			if slices.Contains(followers, prev) && (!tortureMode() || r.rng.IntN(2) == 0) {
				f = prev
			}
			prev = f
			rest := slices.DeleteFunc(r.running(), func(id string) bool { return id == f })

			// Quiet the follower's callers: once none is in a call, every
			// reservation a call waited for has landed, and the follower
			// holds a block.
			l.pause(f)
			from := l.now()
			r.net.Isolate(f)
			l.resume(f)
			l.progress(rest, true, 20, recoverBound, "in the majority")
			// The first time, stay cut until the follower has refused many
			// WEAK calls, retrying reservations that fail at once (no
			// leader): that must not inflate its next reservation.
			refusals := int64(1)
			if cycle == 0 {
				refusals = 20
			}
			l.waitFor([]string{f}, false, unavailableCount, refusals, recoverBound, "WEAK on the cut-off follower answers Unavailable")
			l.waitFor([]string{f}, true, unavailableCount, 2, recoverBound, "STRONG on the cut-off follower answers Unavailable")
			if tortureMode() {
				time.Sleep(r.between(0, 3*time.Second))
			}
			to := l.now()
			r.net.HealAll()
			cutoffs = append(cutoffs, cutoff{f, window{from, to}})
			l.progress([]string{f}, false, 10, recoverBound, "WEAK on the follower after the heal")
			l.progress([]string{f}, true, 10, recoverBound, "STRONG on the follower after the heal")
			if tortureMode() {
				time.Sleep(r.between(0, 2*time.Second))
			}
		}
		ops := l.finish()
		for _, c := range cutoffs {
			mustAllFail(t, within(ops, c.node, true, c.w), "STRONG call to the cut-off follower "+c.node)
			weak := within(ops, c.node, false, c.w)
			served, unavailable := 0, 0
			for _, op := range weak {
				switch {
				case op.Err == nil:
					served++
				case isUnavailable(op.Err):
					unavailable++
				}
			}
			r.logf("cut-off follower %s: %d WEAK calls served from its block, %d answered Unavailable", c.node, served, unavailable)
			if served == 0 {
				t.Errorf("the cut-off follower %s served no WEAK call from the block it held", c.node)
			}
			if unavailable == 0 {
				t.Errorf("the cut-off follower %s never answered WEAK calls with Unavailable", c.node)
			}
		}
	})
}

// TestPartitionFlakyLinks drops 10-20% of the chunks (each loss resets its
// connection) and delays the rest on some pairs of nodes under load. Calls
// may fail; none may return an ID twice or break linearizability, and the
// cluster must serve again once the links heal.
func TestPartitionFlakyLinks(t *testing.T) {
	forEachSeed(t, func(t *testing.T, seed int64) {
		r := newFaultRun(t, seed, runOptions{nodes: 3})
		l := r.load
		l.progress(r.running(), true, 20, recoverBound, "before the faults")
		for cycle := 0; r.more(cycle); cycle++ {
			nodes := r.running()
			var pairs [][2]string
			for i, a := range nodes {
				for _, b := range nodes[i+1:] {
					pairs = append(pairs, [2]string{a, b})
				}
			}
			r.rng.Shuffle(len(pairs), func(i, j int) { pairs[i], pairs[j] = pairs[j], pairs[i] })
			// Followers do not talk to each other: make sure a pair with
			// the leader is among the flaky ones.
			leader := r.c.Leader().ID
			i := slices.IndexFunc(pairs, func(p [2]string) bool { return p[0] == leader || p[1] == leader })
			pairs[0], pairs[i] = pairs[i], pairs[0]
			flaky := pairs[:1+r.rng.IntN(len(pairs))]
			for _, p := range flaky {
				r.net.Drop(p[0], p[1], 0.10+0.10*r.rng.Float64())
				d := r.between(2*time.Millisecond, 40*time.Millisecond)
				r.net.Delay(p[0], p[1], d)
				r.net.Jitter(p[0], p[1], d/2)
			}
			hold := 4 * time.Second
			if tortureMode() {
				hold = r.between(time.Second, 6*time.Second)
			}
			time.Sleep(hold)
			r.net.HealAll()
			l.progress(r.running(), true, 10, recoverBound, "after the links healed")
		}
		l.progress(r.running(), false, 10, recoverBound, "WEAK after the links healed")
		l.finish()
		if st := r.net.Stats(); st.Lost == 0 || st.Delayed == 0 {
			t.Errorf("the flaky links lost or delayed nothing: %+v", st)
		}
	})
}

// TestPartitionMembershipChange adds a node and removes another one while
// the load runs (torture: over and over, removing the leader too, on
// slightly delayed links). The removed node is stopped and wiped, as an
// operator would.
func TestPartitionMembershipChange(t *testing.T) {
	forEachSeed(t, func(t *testing.T, seed int64) {
		r := newFaultRun(t, seed, runOptions{nodes: 3})
		l := r.load
		l.progress(r.running(), true, 20, recoverBound, "before the membership changes")
		next := 4
		for cycle := 0; r.more(cycle); cycle++ {
			if tortureMode() {
				// Slightly slow links make the changes overlap with
				// replication and leadership proofs in flight.
				nodes := r.running()
				a, b := nodes[r.rng.IntN(len(nodes))], nodes[r.rng.IntN(len(nodes))]
				r.net.Delay(a, b, r.between(0, 20*time.Millisecond))
			}
			nd := r.c.Add(nodeName(next))
			next++
			l.addNode(nd)
			r.c.WaitVoters(len(r.running()))
			r.logf("%s joined and is a voter", nd.ID)
			l.progress([]string{nd.ID}, true, 10, recoverBound, "on the new node")

			leader := r.c.Leader()
			candidates := ids(r.c.Followers(leader))
			if tortureMode() {
				candidates = append(candidates, leader.ID)
			}
			candidates = slices.DeleteFunc(candidates, func(id string) bool { return id == nd.ID })
			victim := candidates[r.rng.IntN(len(candidates))]
			r.logf("removing %s (leader %s)", victim, leader.ID)
			ctx, cancel := context.WithTimeout(context.Background(), recoverBound)
			_, err := r.c.Node(r.otherThan(victim)).Cluster().Remove(ctx, &ordinalv1.RemoveRequest{NodeId: victim})
			cancel()
			if err != nil {
				t.Fatalf("remove %s: %v", victim, err)
			}
			l.removeNode(victim)
			vn := r.c.Node(victim)
			vn.Stop()
			vn.Wipe()
			r.c.WaitVoters(len(r.running()))
			l.progress(r.running(), true, 10, recoverBound, "after removing "+victim)
			r.net.HealAll()
		}
		l.progress(r.running(), false, 10, recoverBound, "WEAK after the membership changes")
		l.finish()
	})
}

// otherThan returns a running node other than id.
func (r *faultRun) otherThan(id string) string {
	for _, other := range r.running() {
		if other != id {
			return other
		}
	}
	r.t.Fatalf("no running node besides %s", id)
	return ""
}

func nodeName(i int) string { return fmt.Sprintf("n%d", i) }
