// Package faultnet is a fault-injecting network for in-process clusters
// whose nodes talk over real TCP on 127.0.0.1.
//
// A Net knows every node by name and the addresses it listens on
// (Register). Each node dials its peers through its own Dialer: Dial plugs
// into cluster.Config.PeerDial, which opens every connection of the node's
// peer traffic (Raft, leadership proofs, forwarded calls); DialOption into
// a gRPC client of its own. The dialer maps the target address to a node name and
// wraps the connection, so the faults between the two names apply to it —
// to connections that already exist as well as to new ones:
//
//   - Cut, CutOneWay, Isolate, Partition: a blackhole. Bytes sent across a
//     cut link are silently dropped, the sender sees its writes succeed and
//     the receiver sees nothing, so only timeouts fire, as in a real
//     partition. New dials across a cut hang until their context ends (a
//     lost SYN). A TCP stream cannot skip bytes, so a connection that lost
//     data is reset once the cut heals; a connection that was idle during
//     the cut survives it.
//   - Delay (and Jitter): every chunk of data is held back, in order.
//   - Drop: every chunk (one Write, or one read from the socket) is lost
//     with the given probability, drawn from the Net's seeded generator.
//     The stream cannot go on without it, so a loss resets the connection:
//     the sender's write still succeeds, both ends' next reads fail. Dials
//     are not affected (a handshake takes one round trip of Delay).
//
// Only the dialing side wraps the connection; it applies the faults of
// both directions (the outgoing bytes as they leave, the incoming ones as
// the application reads them). That is enough when every node dials through
// the Net. Connections to addresses no node registered pass through
// untouched, so clients of the cluster are never affected.
package faultnet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
)

// Link is the fault state of one direction between two nodes: what
// happens to the bytes the first node sends to the second.
type Link struct {
	// Cut drops every byte silently.
	Cut bool
	// Delay holds back every chunk by Delay plus a uniformly random extra
	// in [0, Jitter). Chunks are never reordered.
	Delay, Jitter time.Duration
	// Drop is the probability that a chunk is lost, which resets the
	// connection.
	Drop float64
}

func (l Link) String() string {
	s := ""
	if l.Cut {
		s += " cut"
	}
	if l.Delay > 0 || l.Jitter > 0 {
		s += fmt.Sprintf(" delay=%v+[0,%v)", l.Delay, l.Jitter)
	}
	if l.Drop > 0 {
		s += fmt.Sprintf(" drop=%.2f", l.Drop)
	}
	if s == "" {
		return "healthy"
	}
	return s[1:]
}

type dir struct{ from, to string }

// Stats counts what the Net did, for tests to check that their faults were
// actually exercised.
type Stats struct {
	Dials        int64 // connections opened between registered nodes
	BlockedDials int64 // dials that failed because the link was cut
	Dropped      int64 // chunks dropped by a cut
	Lost         int64 // chunks lost through Drop (each reset its connection)
	Resets       int64 // connections reset: by a loss, a heal after data was dropped, or Reset
	Delayed      int64 // chunks held back by a delay
}

// Net is a set of nodes and the faults between them. Its methods are safe
// for concurrent use.
type Net struct {
	seed int64

	mu      sync.Mutex
	rng     *rand.Rand
	byAddr  map[string]string // listen address -> node
	nodes   map[string]bool
	links   map[dir]Link
	conns   map[*Conn]struct{}
	changed chan struct{} // closed and replaced whenever links change
	logf    func(format string, args ...any)

	stats struct {
		dials, blockedDials, dropped, lost, resets, delayed atomic.Int64
	}
}

// New returns a Net with no nodes and no faults. seed seeds the generator
// behind Drop and Jitter; log it so a failing run can be replayed.
func New(seed int64) *Net {
	return &Net{
		seed:    seed,
		rng:     rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x9e3779b97f4a7c15)),
		byAddr:  map[string]string{},
		nodes:   map[string]bool{},
		links:   map[dir]Link{},
		conns:   map[*Conn]struct{}{},
		changed: make(chan struct{}),
	}
}

// Seed returns the seed the Net was created with.
func (n *Net) Seed() int64 { return n.seed }

// SetLogf makes the Net report every change of its faults through logf
// (for example testing.T.Logf). Nil turns reporting off.
func (n *Net) SetLogf(logf func(format string, args ...any)) {
	n.mu.Lock()
	n.logf = logf
	n.mu.Unlock()
}

// Register names node and the addresses (host:port, as peers dial them) it
// listens on. Registering a node again adds addresses.
func (n *Net) Register(node string, addrs ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nodes[node] = true
	for _, a := range addrs {
		n.byAddr[a] = node
	}
}

// Nodes returns the registered nodes in name order.
func (n *Net) Nodes() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nodesLocked()
}

func (n *Net) nodesLocked() []string {
	out := make([]string, 0, len(n.nodes))
	for nd := range n.nodes {
		out = append(out, nd)
	}
	sort.Strings(out)
	return out
}

// NodeOf returns the node listening on addr, or "".
func (n *Net) NodeOf(addr string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.byAddr[addr]
}

// Stats returns what the Net did so far.
func (n *Net) Stats() Stats {
	return Stats{
		Dials:        n.stats.dials.Load(),
		BlockedDials: n.stats.blockedDials.Load(),
		Dropped:      n.stats.dropped.Load(),
		Lost:         n.stats.lost.Load(),
		Resets:       n.stats.resets.Load(),
		Delayed:      n.stats.delayed.Load(),
	}
}

// Link returns the fault state of the direction from -> to.
func (n *Net) Link(from, to string) Link {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.links[dir{from, to}]
}

// SetLink sets the fault state of the direction from -> to, replacing what
// was there.
func (n *Net) SetLink(from, to string, l Link) {
	n.update(fmt.Sprintf("%s -> %s: %v", from, to, l), func() { n.setLocked(from, to, l) })
}

func (n *Net) setLocked(from, to string, l Link) {
	if from == to {
		return
	}
	if l == (Link{}) {
		delete(n.links, dir{from, to})
		return
	}
	n.links[dir{from, to}] = l
}

func (n *Net) modify(from, to string, f func(*Link)) {
	l := n.links[dir{from, to}]
	f(&l)
	n.setLocked(from, to, l)
}

// Cut blackholes both directions between a and b.
func (n *Net) Cut(a, b string) {
	n.update(fmt.Sprintf("cut %s <-> %s", a, b), func() {
		n.modify(a, b, func(l *Link) { l.Cut = true })
		n.modify(b, a, func(l *Link) { l.Cut = true })
	})
}

// CutOneWay blackholes what from sends to to; what to sends to from still
// arrives.
func (n *Net) CutOneWay(from, to string) {
	n.update(fmt.Sprintf("cut %s -> %s", from, to), func() {
		n.modify(from, to, func(l *Link) { l.Cut = true })
	})
}

// Isolate cuts a from every other registered node.
func (n *Net) Isolate(a string) {
	n.update(fmt.Sprintf("isolate %s", a), func() {
		for _, b := range n.nodesLocked() {
			if b != a {
				n.modify(a, b, func(l *Link) { l.Cut = true })
				n.modify(b, a, func(l *Link) { l.Cut = true })
			}
		}
	})
}

// Partition sets which registered nodes can reach each other: nodes in the
// same group can, nodes in different groups cannot, and a registered node
// in no group is cut off from every other. It replaces every earlier cut;
// delays and drops stay.
func (n *Net) Partition(groups ...[]string) {
	group := map[string]int{}
	for i, g := range groups {
		for _, nd := range g {
			group[nd] = i + 1
		}
	}
	n.update(fmt.Sprintf("partition %v", groups), func() {
		nodes := n.nodesLocked()
		for _, a := range nodes {
			for _, b := range nodes {
				if a == b {
					continue
				}
				ga, gb := group[a], group[b]
				cut := ga == 0 || gb == 0 || ga != gb
				n.modify(a, b, func(l *Link) { l.Cut = cut })
			}
		}
	})
}

// Delay holds back every chunk between a and b, in both directions, by d.
func (n *Net) Delay(a, b string, d time.Duration) {
	n.update(fmt.Sprintf("delay %s <-> %s by %v", a, b, d), func() {
		n.modify(a, b, func(l *Link) { l.Delay = d })
		n.modify(b, a, func(l *Link) { l.Delay = d })
	})
}

// Jitter adds a uniformly random delay in [0, j) to every chunk between a
// and b, in both directions, on top of Delay.
func (n *Net) Jitter(a, b string, j time.Duration) {
	n.update(fmt.Sprintf("jitter %s <-> %s up to %v", a, b, j), func() {
		n.modify(a, b, func(l *Link) { l.Jitter = j })
		n.modify(b, a, func(l *Link) { l.Jitter = j })
	})
}

// Drop loses every chunk between a and b, in both directions, with
// probability p; each loss resets its connection.
func (n *Net) Drop(a, b string, p float64) {
	n.update(fmt.Sprintf("drop %s <-> %s with p=%.2f", a, b, p), func() {
		n.modify(a, b, func(l *Link) { l.Drop = p })
		n.modify(b, a, func(l *Link) { l.Drop = p })
	})
}

// Heal removes every fault between a and b, in both directions.
func (n *Net) Heal(a, b string) {
	n.update(fmt.Sprintf("heal %s <-> %s", a, b), func() {
		n.setLocked(a, b, Link{})
		n.setLocked(b, a, Link{})
	})
}

// HealAll removes every fault.
func (n *Net) HealAll() {
	n.update("heal all", func() { clear(n.links) })
}

// Reset resets every open connection between a and b now, as a TCP RST
// would; later connections are not affected.
func (n *Net) Reset(a, b string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.logLocked("reset connections %s <-> %s", a, b)
	for c := range n.conns {
		if (c.from == a && c.to == b) || (c.from == b && c.to == a) {
			c.reset("reset by the test")
		}
	}
}

// update applies change, wakes everything that waits for the links to
// change, and resets the connections that lost data in a direction that is
// no longer cut: their streams have a hole.
func (n *Net) update(what string, change func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	change()
	n.logLocked("%s", what)
	close(n.changed)
	n.changed = make(chan struct{})
	for c := range n.conns {
		if (c.outTainted.Load() && !n.links[dir{c.from, c.to}].Cut) ||
			(c.inTainted.Load() && !n.links[dir{c.to, c.from}].Cut) {
			c.reset("data was dropped while the link was cut")
		}
	}
}

func (n *Net) logLocked(format string, args ...any) {
	if n.logf != nil {
		n.logf("faultnet: "+format, args...)
	}
}

// delay draws the hold-back for one chunk sent from -> to.
func (n *Net) delay(from, to string) time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.links[dir{from, to}]
	d := l.Delay
	if l.Jitter > 0 {
		d += time.Duration(n.rng.Int64N(int64(l.Jitter)))
	}
	if d > 0 {
		n.stats.delayed.Add(1)
	}
	return d
}

type verdict int

const (
	deliver verdict = iota
	drop
	lose
)

// judge decides the fate of a chunk crossing from -> to on c now. The
// decision and the taint it leaves are made under n.mu, so a heal either
// happens before (and the chunk passes) or sees the taint (and resets).
func (n *Net) judge(c *Conn, from, to string, tainted *atomic.Bool) verdict {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.links[dir{from, to}]
	switch {
	case l.Cut:
		tainted.Store(true)
		n.stats.dropped.Add(1)
		return drop
	case tainted.Load():
		// A hole is already in this stream; nothing after it may pass.
		n.stats.dropped.Add(1)
		return drop
	case l.Drop > 0 && n.rng.Float64() < l.Drop:
		n.stats.lost.Add(1)
		return lose
	}
	return deliver
}

// dialState tells a dial from a to b whether the link is cut (either way:
// a handshake needs both), the round trip its handshake takes, and the
// channel closed on the next change of the links.
func (n *Net) dialState(a, b string) (cut bool, rtt time.Duration, changed <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ab, ba := n.links[dir{a, b}], n.links[dir{b, a}]
	return ab.Cut || ba.Cut, ab.Delay + ba.Delay, n.changed
}

func (n *Net) track(c *Conn) {
	n.mu.Lock()
	n.conns[c] = struct{}{}
	n.mu.Unlock()
}

func (n *Net) untrack(c *Conn) {
	n.mu.Lock()
	delete(n.conns, c)
	n.mu.Unlock()
}

// Conns returns how many wrapped connections are open.
func (n *Net) Conns() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.conns)
}

// Dialer dials on behalf of one node.
type Dialer struct {
	n    *Net
	from string
	d    net.Dialer
}

// Dialer returns the dialer of node from; it need not be registered yet.
func (n *Net) Dialer(from string) *Dialer { return &Dialer{n: n, from: from} }

// DialOption returns a gRPC dial option that opens the connections of a
// grpc.ClientConn through d.
func (d *Dialer) DialOption() grpc.DialOption { return grpc.WithContextDialer(d.Dial) }

// Dial opens a TCP connection to addr with the faults between d's node and
// the node listening on addr. It has the signature of
// cluster.Config.RaftDial and of grpc.WithContextDialer.
func (d *Dialer) Dial(ctx context.Context, addr string) (net.Conn, error) {
	to := d.n.NodeOf(addr)
	if to == "" || to == d.from {
		return d.d.DialContext(ctx, "tcp", addr)
	}
	for {
		cut, rtt, changed := d.n.dialState(d.from, to)
		if !cut {
			if err := sleep(ctx, rtt); err != nil {
				return nil, dialError(addr, fmt.Errorf("faultnet: %s -> %s: %w", d.from, to, err))
			}
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			d.n.stats.blockedDials.Add(1)
			return nil, dialError(addr, fmt.Errorf("faultnet: %s -> %s is cut: %w", d.from, to, ctx.Err()))
		}
	}
	raw, err := d.d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	d.n.stats.dials.Add(1)
	return newConn(d.n, d.from, to, raw), nil
}

func dialError(addr string, err error) error {
	return &net.OpError{Op: "dial", Net: "tcp", Addr: tcpAddr(addr), Err: err}
}

type strAddr string

func (a strAddr) Network() string { return "tcp" }
func (a strAddr) String() string  { return string(a) }

func tcpAddr(a string) net.Addr { return strAddr(a) }

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// resetError is what reads and writes on a reset connection return; it
// wraps syscall.ECONNRESET.
type resetError struct{ from, to, why string }

func (e *resetError) Error() string {
	return fmt.Sprintf("faultnet: connection %s -> %s reset (%s): %v", e.from, e.to, e.why, syscall.ECONNRESET)
}
func (e *resetError) Unwrap() error { return syscall.ECONNRESET }

// IsReset reports whether err comes from a connection the Net reset.
func IsReset(err error) bool {
	var r *resetError
	return errors.As(err, &r)
}

// maxBuffered bounds the bytes a connection holds back in each direction;
// past it, writes block (and the socket is not read), as a full TCP window
// would.
const maxBuffered = 4 << 20

// closeFlushTimeout bounds how long a closed connection keeps trying to
// deliver what it held back before the socket is closed anyway.
const closeFlushTimeout = 5 * time.Second

type chunk struct {
	b      []byte
	at     time.Time // not delivered before
	err    error     // a read error (EOF) to deliver after the data
	judged bool      // the verdict was "deliver"; a partly read chunk is not judged twice
}

// Conn is a TCP connection with the faults of its two nodes applied. It
// implements net.Conn, deadlines included.
type Conn struct {
	n        *Net
	from, to string
	raw      net.Conn

	outTainted, inTainted atomic.Bool // data was dropped in that direction

	rmu sync.Mutex // serialises Reads, so verdicts are taken in stream order

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every change below
	out       []chunk
	outBytes  int
	outLast   time.Time
	in        []chunk
	inBytes   int
	inLast    time.Time
	rDeadline time.Time
	wDeadline time.Time
	err       error // reset: every Read and Write fails with it
	closed    bool
}

func newConn(n *Net, from, to string, raw net.Conn) *Conn {
	c := &Conn{n: n, from: from, to: to, raw: raw, changed: make(chan struct{})}
	n.track(c)
	go c.writeLoop()
	go c.readLoop()
	return c
}

func (c *Conn) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitLocked releases c.mu until something changes or until (if not zero)
// passes, then takes it again.
func (c *Conn) waitLocked(until time.Time) {
	ch := c.changed
	c.mu.Unlock()
	var timer <-chan time.Time
	if !until.IsZero() {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ch:
	case <-timer:
	}
	c.mu.Lock()
}

// reset fails the connection with a reset error and closes the socket,
// dropping whatever is held back.
func (c *Conn) reset(why string) {
	c.mu.Lock()
	if c.err == nil {
		c.err = &resetError{from: c.from, to: c.to, why: why}
		c.n.stats.resets.Add(1)
	}
	c.notifyLocked()
	c.mu.Unlock()
	_ = c.raw.Close()
}

func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero():
		return a
	case a.Before(b):
		return a
	}
	return b
}

func timeoutError(op string, c *Conn) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.raw.LocalAddr(), Addr: c.raw.RemoteAddr(), Err: os.ErrDeadlineExceeded}
}

// Write queues p for delivery and returns; the bytes leave after the
// link's delay, unless the link is cut (then they vanish) or loses them
// (then the connection is reset). It blocks only while maxBuffered bytes
// are held back.
func (c *Conn) Write(p []byte) (int, error) {
	at := time.Now().Add(c.n.delay(c.from, c.to))
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.err != nil:
			return 0, c.err
		case c.closed:
			return 0, &net.OpError{Op: "write", Net: "tcp", Err: net.ErrClosed}
		case !c.wDeadline.IsZero() && !time.Now().Before(c.wDeadline):
			return 0, timeoutError("write", c)
		case c.outBytes == 0 || c.outBytes+len(p) <= maxBuffered:
			if len(p) == 0 {
				return 0, nil
			}
			if at.Before(c.outLast) {
				at = c.outLast
			}
			c.outLast = at
			c.out = append(c.out, chunk{b: slices.Clone(p), at: at})
			c.outBytes += len(p)
			c.notifyLocked()
			return len(p), nil
		}
		c.waitLocked(c.wDeadline)
	}
}

// writeLoop delivers queued chunks to the socket when they are due.
func (c *Conn) writeLoop() {
	defer c.n.untrack(c)
	c.mu.Lock()
	for {
		if c.err != nil {
			c.mu.Unlock()
			return
		}
		if len(c.out) == 0 {
			if c.closed {
				c.mu.Unlock()
				_ = c.raw.Close()
				return
			}
			c.waitLocked(time.Time{})
			continue
		}
		head := c.out[0]
		if time.Now().Before(head.at) {
			c.waitLocked(head.at)
			continue
		}
		c.out = c.out[1:]
		c.outBytes -= len(head.b)
		c.notifyLocked()
		c.mu.Unlock()
		switch c.n.judge(c, c.from, c.to, &c.outTainted) {
		case lose:
			c.reset("a chunk was lost")
			return
		case deliver:
			if _, err := c.raw.Write(head.b); err != nil {
				c.mu.Lock()
				if c.err == nil {
					c.err = err
				}
				c.notifyLocked()
				c.mu.Unlock()
				_ = c.raw.Close()
				return
			}
		}
		c.mu.Lock()
	}
}

// readLoop reads the socket and queues what arrives, stamped with when the
// application may see it.
func (c *Conn) readLoop() {
	buf := make([]byte, 32<<10)
	for {
		k, err := c.raw.Read(buf)
		at := time.Now().Add(c.n.delay(c.to, c.from))
		c.mu.Lock()
		for k > 0 && c.err == nil && !c.closed && c.inBytes > 0 && c.inBytes+k > maxBuffered {
			c.waitLocked(time.Time{})
		}
		if c.err != nil || c.closed {
			c.mu.Unlock()
			if err != nil {
				return
			}
			continue // keep draining until the socket closes
		}
		if at.Before(c.inLast) {
			at = c.inLast
		}
		c.inLast = at
		if k > 0 {
			c.in = append(c.in, chunk{b: slices.Clone(buf[:k]), at: at})
			c.inBytes += k
		}
		if err != nil {
			c.in = append(c.in, chunk{err: err, at: at})
		}
		c.notifyLocked()
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Read returns bytes that arrived and are due, waiting for them within the
// read deadline. Bytes that arrive over a cut link are dropped as they
// become due.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.err != nil:
			return 0, c.err
		case c.closed:
			return 0, &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}
		}
		now := time.Now()
		if !c.rDeadline.IsZero() && !now.Before(c.rDeadline) {
			return 0, timeoutError("read", c)
		}
		if len(c.in) == 0 || now.Before(c.in[0].at) {
			var due time.Time
			if len(c.in) > 0 {
				due = c.in[0].at
			}
			c.waitLocked(earliest(due, c.rDeadline))
			continue
		}
		head := &c.in[0]
		if !head.judged {
			c.mu.Unlock()
			v := c.n.judge(c, c.to, c.from, &c.inTainted)
			c.mu.Lock()
			if c.err != nil || c.closed {
				continue
			}
			head = &c.in[0] // only Read removes chunks, and Read is serialised
			switch v {
			case lose:
				c.mu.Unlock()
				c.reset("a chunk was lost")
				c.mu.Lock()
				continue
			case drop:
				// A dropped end of stream (FIN) leaves the reader waiting
				// until the heal resets the connection.
				c.inBytes -= len(head.b)
				c.in = c.in[1:]
				c.notifyLocked()
				continue
			}
			head.judged = true
		}
		if head.err != nil {
			return 0, head.err
		}
		k := copy(p, head.b)
		head.b = head.b[k:]
		c.inBytes -= k
		if len(head.b) == 0 {
			c.in = c.in[1:]
		}
		c.notifyLocked()
		return k, nil
	}
}

// Close closes the connection. Bytes held back by a delay are still
// delivered (unless the link is cut), as the kernel delivers a closed
// socket's send buffer.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.notifyLocked()
	c.mu.Unlock()
	// writeLoop closes the socket once it delivered what is held back;
	// this bounds the wait when the peer does not read.
	time.AfterFunc(closeFlushTimeout, func() { _ = c.raw.Close() })
	return nil
}

// LocalAddr implements net.Conn.
func (c *Conn) LocalAddr() net.Addr { return c.raw.LocalAddr() }

// RemoteAddr implements net.Conn.
func (c *Conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.rDeadline, c.wDeadline = t, t
	c.notifyLocked()
	c.mu.Unlock()
	return nil
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.rDeadline = t
	c.notifyLocked()
	c.mu.Unlock()
	return nil
}

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.wDeadline = t
	c.notifyLocked()
	c.mu.Unlock()
	return nil
}

// Nodes returns the dialing node and the node dialed.
func (c *Conn) Nodes() (from, to string) { return c.from, c.to }
