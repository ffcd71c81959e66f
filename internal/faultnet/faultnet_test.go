package faultnet

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// server accepts connections on 127.0.0.1 and hands them to the test.
type server struct {
	ln    net.Listener
	conns chan net.Conn
}

func listen(t *testing.T) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, conns: make(chan net.Conn, 16)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			s.conns <- c
		}
	}()
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

func (s *server) accept(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
		return nil
	}
}

// pair registers nodes a and b (b listening on a fresh server) and dials
// b from a.
func pair(t *testing.T) (*Net, net.Conn, net.Conn) {
	t.Helper()
	n := New(1)
	n.SetLogf(t.Logf)
	s := listen(t)
	n.Register("a")
	n.Register("b", s.addr())
	c := dial(t, n, "a", s.addr())
	return n, c, s.accept(t)
}

func dial(t *testing.T, n *Net, from, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := n.Dialer(from).Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

// read reads exactly len(want) bytes within timeout.
func read(t *testing.T, c net.Conn, want string, timeout time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read %q: %v", want, err)
	}
	if string(buf) != want {
		t.Fatalf("read %q, want %q", buf, want)
	}
}

// silent checks that nothing arrives on c within d.
func silent(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 1)
	k, err := c.Read(buf)
	if k > 0 {
		t.Fatalf("read %q across a cut link", buf[:k])
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read across a cut link: got %v, want a timeout", err)
	}
}

func TestPassThrough(t *testing.T) {
	_, c, s := pair(t)
	if _, ok := c.(*Conn); !ok {
		t.Fatalf("dial between registered nodes returned %T, want *Conn", c)
	}
	write(t, c, "ping")
	read(t, s, "ping", time.Second)
	write(t, s, "pong")
	read(t, c, "pong", time.Second)
}

func TestUnregisteredAddressIsNotWrapped(t *testing.T) {
	n := New(1)
	s := listen(t)
	n.Register("a")
	n.Isolate("a")
	c := dial(t, n, "a", s.addr()) // no node listens there as far as n knows
	if _, ok := c.(*Conn); ok {
		t.Fatal("connection to an unregistered address was wrapped")
	}
	sc := s.accept(t)
	write(t, c, "x")
	read(t, sc, "x", time.Second)
}

func TestCutBlackholesAnExistingConnectionAndHealResetsIt(t *testing.T) {
	n, c, s := pair(t)
	write(t, c, "before")
	read(t, s, "before", time.Second)

	n.Cut("a", "b")
	write(t, c, "lost") // the sender cannot tell
	write(t, s, "lost too")
	silent(t, s, 200*time.Millisecond)
	silent(t, c, 200*time.Millisecond)

	n.Heal("a", "b")
	// The stream lost bytes: it cannot go on, both ends see it fail.
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !IsReset(err) {
		t.Fatalf("read after heal on a connection that lost data: %v, want a reset", err)
	}
	if _, err := c.Write([]byte("x")); !IsReset(err) {
		t.Fatalf("write after reset: %v, want a reset", err)
	}
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadAll(s); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("peer of a reset connection: %v", err)
	}
	if st := n.Stats(); st.Dropped == 0 || st.Resets != 1 {
		t.Fatalf("stats %+v: want drops and one reset", st)
	}
	// A new connection works.
	c2 := dial(t, n, "a", s.LocalAddr().String())
	write(t, c2, "again")
}

func TestIdleConnectionSurvivesACut(t *testing.T) {
	n, c, s := pair(t)
	n.Isolate("b")
	silent(t, c, 100*time.Millisecond)
	n.HealAll()
	write(t, c, "still here")
	read(t, s, "still here", time.Second)
	write(t, s, "yes")
	read(t, c, "yes", time.Second)
}

func TestDialHangsWhileCut(t *testing.T) {
	n := New(1)
	s := listen(t)
	n.Register("a")
	n.Register("b", s.addr())
	n.CutOneWay("b", "a") // a handshake needs both directions

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := n.Dialer("a").Dial(ctx, s.addr())
	if err == nil || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("dial across a cut: err %v after %v, want a timeout after 200ms", err, time.Since(start))
	}
	if n.Stats().BlockedDials != 1 {
		t.Fatalf("stats %+v", n.Stats())
	}

	// A dial waiting on the cut goes through once it heals.
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := n.Dialer("a").Dial(ctx, s.addr())
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	n.Heal("a", "b")
	if err := <-done; err != nil {
		t.Fatalf("dial after heal: %v", err)
	}
}

func TestCutOneWay(t *testing.T) {
	n, c, s := pair(t)
	n.CutOneWay("a", "b")
	write(t, c, "vanishes")
	silent(t, s, 200*time.Millisecond)
	write(t, s, "arrives")
	read(t, c, "arrives", time.Second)

	n.CutOneWay("b", "a")
	n.Heal("a", "b")
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !IsReset(err) {
		t.Fatalf("read after heal: %v, want a reset (a -> b lost data)", err)
	}
}

func TestDelayKeepsOrder(t *testing.T) {
	n, c, s := pair(t)
	const d = 100 * time.Millisecond
	n.Delay("a", "b", d)
	n.Jitter("a", "b", 30*time.Millisecond)
	go io.Copy(s, s) // echo

	start := time.Now()
	write(t, c, "x")
	read(t, c, "x", 2*time.Second)
	if rtt := time.Since(start); rtt < 2*d {
		t.Fatalf("round trip %v, want at least %v", rtt, 2*d)
	}

	// Many small writes with jitter arrive complete and in order.
	const count = 2000
	go func() {
		w := bufio.NewWriterSize(c, 64)
		for i := range uint32(count) {
			binary.Write(w, binary.BigEndian, i)
		}
		w.Flush()
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for i := range uint32(count) {
		var got uint32
		if err := binary.Read(r, binary.BigEndian, &got); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if got != i {
			t.Fatalf("read %d, want %d: reordered", got, i)
		}
	}
	if n.Stats().Delayed == 0 {
		t.Fatal("nothing was delayed")
	}
}

func TestDeadlinesWhileDelayed(t *testing.T) {
	n, c, s := pair(t)
	n.Delay("a", "b", 300*time.Millisecond)
	write(t, s, "late")
	silent(t, c, 100*time.Millisecond) // arrived, not yet due
	read(t, c, "late", time.Second)
}

func TestDropResetsTheConnection(t *testing.T) {
	n, c, s := pair(t)
	n.Drop("a", "b", 1)
	write(t, c, "lost") // the sender cannot tell
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !IsReset(err) {
		t.Fatalf("read after a loss: %v, want a reset", err)
	}
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	if b, err := io.ReadAll(s); len(b) > 0 || err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("peer read %q, %v: want nothing and EOF or a reset", b, err)
	}
	if st := n.Stats(); st.Lost != 1 || st.Resets != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDropIsPartial(t *testing.T) {
	n := New(42)
	s := listen(t)
	n.Register("a")
	n.Register("b", s.addr())
	n.Drop("a", "b", 0.3)
	go func() {
		for c := range s.conns {
			go io.Copy(c, c)
		}
	}()
	survived := 0
	const conns = 40
	for range conns {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := n.Dialer("a").Dial(ctx, s.addr())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		ok := true
		for range 3 {
			if _, err := c.Write([]byte("p")); err != nil {
				ok = false
				break
			}
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				if !IsReset(err) {
					t.Fatalf("want a reset, got %v", err)
				}
				ok = false
				break
			}
		}
		if ok {
			survived++
		}
		c.Close()
	}
	// Six chunks per connection at p=0.3: about 12% survive.
	if survived == 0 || survived == conns {
		t.Fatalf("%d of %d connections survived p=0.3 losses; want some but not all", survived, conns)
	}
	t.Logf("%d of %d survived; stats %+v", survived, conns, n.Stats())
}

func TestResetClosesOpenConnections(t *testing.T) {
	n, c, _ := pair(t)
	n.Reset("b", "a")
	c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 1)); !IsReset(err) {
		t.Fatalf("read after Reset: %v", err)
	}
}

func TestCloseDeliversWhatWasDelayed(t *testing.T) {
	n, c, s := pair(t)
	n.Delay("a", "b", 100*time.Millisecond)
	write(t, c, "last words")
	c.Close()
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(s)
	if string(b) != "last words" || err != nil {
		t.Fatalf("peer read %q, %v", b, err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for n.Conns() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n.Conns() != 0 {
		t.Fatalf("%d connections still tracked after close", n.Conns())
	}
}

func TestPartitionAndIsolate(t *testing.T) {
	n := New(1)
	for _, nd := range []string{"a", "b", "c", "d"} {
		n.Register(nd)
	}
	n.Delay("a", "b", time.Millisecond)
	n.Partition([]string{"a", "b"}, []string{"c"}) // d is in no group
	want := map[[2]string]bool{
		{"a", "b"}: false, {"a", "c"}: true, {"a", "d"}: true,
		{"b", "c"}: true, {"b", "d"}: true, {"c", "d"}: true,
	}
	for p, cut := range want {
		if n.Link(p[0], p[1]).Cut != cut || n.Link(p[1], p[0]).Cut != cut {
			t.Errorf("%s-%s cut=%v, want %v", p[0], p[1], n.Link(p[0], p[1]).Cut, cut)
		}
	}
	if n.Link("a", "b").Delay != time.Millisecond {
		t.Error("Partition dropped a delay")
	}
	n.Partition([]string{"a", "b", "c", "d"})
	n.Isolate("c")
	for _, x := range []string{"a", "b", "d"} {
		if !n.Link(x, "c").Cut || !n.Link("c", x).Cut || n.Link(x, "a").Cut && x != "a" {
			t.Errorf("after Isolate(c): %s-c %v / c-%s %v", x, n.Link(x, "c"), x, n.Link("c", x))
		}
	}
	n.HealAll()
	if l := n.Link("a", "b"); l != (Link{}) {
		t.Errorf("after HealAll a->b is %v", l)
	}
}

// TestGRPC checks the dial option on a real gRPC connection: a cut makes
// calls on the open connection time out, a heal brings it back.
func TestGRPC(t *testing.T) {
	n := New(1)
	n.SetLogf(t.Logf)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	healthpb.RegisterHealthServer(g, health.NewServer())
	go g.Serve(ln)
	defer g.Stop()
	n.Register("a")
	n.Register("b", ln.Addr().String())

	cc, err := grpc.NewClient(ln.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()), n.Dialer("a").DialOption())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)
	check := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		return err
	}
	if err := check(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	n.Cut("a", "b")
	if err := check(300 * time.Millisecond); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("call across a cut: %v, want DeadlineExceeded", err)
	}
	n.Heal("a", "b")
	// A call can still land on the connection being reset and fail once;
	// the channel must recover promptly.
	deadline := time.Now().Add(5 * time.Second)
	for err := check(time.Second); err != nil; err = check(time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("call after heal: %v", err)
		}
	}
	if n.Stats().Resets == 0 {
		t.Fatal("the connection that lost the call was not reset")
	}
}

// TestConcurrentUse hammers a connection with faults changing underneath,
// for the race detector.
func TestConcurrentUse(t *testing.T) {
	n, c, s := pair(t)
	go io.Copy(s, s)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Write([]byte("abc")); err != nil {
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 7)
		for {
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := c.Read(buf); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	for i := range 20 {
		switch i % 4 {
		case 0:
			n.Delay("a", "b", time.Millisecond)
		case 1:
			n.Jitter("a", "b", time.Millisecond)
		case 2:
			n.Cut("a", "b")
		case 3:
			n.Heal("a", "b")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	c.Close()
	wg.Wait()
}
