// Package inflight lets a fault test see its gRPC calls in flight: sent
// to a node and not answered yet. The pause tests send calls to a node
// that is frozen (or whose link to etcd is) and must show that the calls
// were waiting there when it resumed, or they could pass without ever
// exercising the stale path they are about.
//
// A call counts as sent once its request is in the connection's transport
// (grpc's SendMsg returned); Conn adds, on Linux, the bytes that reached
// the server's socket and the server has not read, which is what a frozen
// process leaves there.
package inflight

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/protobuf/proto"
)

// Calls counts a batch of calls made through Invoke.
type Calls struct {
	started  atomic.Int64
	sent     atomic.Int64
	unsent   atomic.Int64 // returned before their request was sent
	open     atomic.Int64 // sent and not returned
	returned atomic.Int64
}

// Invoke makes a unary call as grpc's ClientConn.Invoke does (one stream,
// SendMsg, RecvMsg), counting it as sent between the two.
func (c *Calls) Invoke(ctx context.Context, cc grpc.ClientConnInterface, method string, req, reply any) error {
	c.started.Add(1)
	defer c.returned.Add(1)
	cs, err := cc.NewStream(ctx, &grpc.StreamDesc{}, method)
	if err == nil {
		err = cs.SendMsg(req)
	}
	if err != nil {
		c.unsent.Add(1)
		return err
	}
	c.sent.Add(1)
	defer c.open.Add(-1)
	c.open.Add(1)
	return cs.RecvMsg(reply)
}

// Started is how many calls began.
func (c *Calls) Started() int { return int(c.started.Load()) }

// Sent is how many calls had their request handed to the transport.
func (c *Calls) Sent() int { return int(c.sent.Load()) }

// Sending is how many calls began and neither sent their request nor
// returned (exact once no call starts any more).
func (c *Calls) Sending() int {
	return int(c.started.Load() - c.sent.Load() - c.unsent.Load())
}

// Open is how many calls are in flight: sent and not returned.
func (c *Calls) Open() int { return int(c.open.Load()) }

// Returned is how many calls returned, with an answer or an error.
func (c *Calls) Returned() int { return int(c.returned.Load()) }

func (c *Calls) String() string {
	return fmt.Sprintf("%d started, %d sent, %d in flight, %d returned (%d before sending)", c.Started(), c.Sent(), c.Open(), c.Returned(), c.unsent.Load())
}

// MinRequestBytes is a lower bound on the bytes one unary call with
// request req puts on the wire: an HTTP/2 HEADERS frame (a 9-byte frame
// header and at least one byte of header block) and a DATA frame (a 9-byte
// frame header, grpc's 5-byte message prefix and the message). TLS only
// adds to it.
func MinRequestBytes(req proto.Message) int { return 9 + 1 + 9 + 5 + proto.Size(req) }

// Conn is a client connection that knows its own end of the TCP
// connection, so that a test can read how much the server has not read.
type Conn struct {
	*grpc.ClientConn
	server string

	mu    sync.Mutex
	local string // our end of the latest TCP connection
}

// Dial opens a connection to target, a host:port, with opts.
func Dial(target string, opts ...grpc.DialOption) (*Conn, error) {
	c := &Conn{server: target}
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.mu.Lock()
			c.local = nc.LocalAddr().String()
			c.mu.Unlock()
		}
		return nc, err
	}
	cc, err := grpc.NewClient("passthrough:///"+target, append(opts, grpc.WithContextDialer(dialer))...)
	if err != nil {
		return nil, err
	}
	c.ClientConn = cc
	return c, nil
}

// WaitReady connects and waits until the connection is ready or ctx ends.
// A frozen process cannot finish a TLS handshake: connect before freezing.
func (c *Conn) WaitReady(ctx context.Context) error {
	c.Connect()
	for s := c.GetState(); s != connectivity.Ready; s = c.GetState() {
		if !c.WaitForStateChange(ctx, s) {
			return fmt.Errorf("connection to %s: %v after %w", c.server, s, ctx.Err())
		}
	}
	return nil
}

// Unread returns how many bytes of this connection reached the server's
// socket and the server has not read: the receive queue of the server's
// end, from /proc/net/tcp (Linux only).
func (c *Conn) Unread() (int, error) {
	c.mu.Lock()
	local := c.local
	c.mu.Unlock()
	if local == "" {
		return 0, fmt.Errorf("not connected to %s", c.server)
	}
	return receiveQueue(c.server, local)
}

// receiveQueue returns the receive queue of the TCP socket whose own
// address is local and whose peer's is remote.
func receiveQueue(local, remote string) (int, error) {
	la, err := net.ResolveTCPAddr("tcp", local)
	if err != nil {
		return 0, err
	}
	ra, err := net.ResolveTCPAddr("tcp", remote)
	if err != nil {
		return 0, err
	}
	var errs []string
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		n, found, err := scanProcNetTCP(file, la, ra)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if found {
			return n, nil
		}
	}
	if len(errs) == 2 {
		return 0, fmt.Errorf("read socket table: %s", strings.Join(errs, "; "))
	}
	return 0, fmt.Errorf("no TCP socket %s <- %s", local, remote)
}

// scanProcNetTCP looks for the socket local <- remote in file, a socket
// table in the format of /proc/net/tcp.
func scanProcNetTCP(file string, local, remote *net.TCPAddr) (rxQueue int, found bool, err error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		l, err1 := parseProcAddr(fields[1])
		r, err2 := parseProcAddr(fields[2])
		if err1 != nil || err2 != nil || !sameAddr(l, local) || !sameAddr(r, remote) {
			continue
		}
		_, rx, ok := strings.Cut(fields[4], ":")
		if !ok {
			return 0, false, fmt.Errorf("%s: bad queue field %q", file, fields[4])
		}
		n, err := strconv.ParseUint(rx, 16, 32)
		if err != nil {
			return 0, false, fmt.Errorf("%s: bad receive queue %q", file, rx)
		}
		return int(n), true, nil
	}
	return 0, false, sc.Err()
}

// parseProcAddr parses an address of /proc/net/tcp: the IP as 32-bit
// words in host byte order, in hex, a colon, the port in hex.
func parseProcAddr(s string) (*net.TCPAddr, error) {
	ipHex, portHex, ok := strings.Cut(s, ":")
	if !ok || len(ipHex)%8 != 0 {
		return nil, fmt.Errorf("bad address %q", s)
	}
	raw, err := hex.DecodeString(ipHex)
	if err != nil {
		return nil, err
	}
	ip := make(net.IP, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(ip[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return nil, err
	}
	return &net.TCPAddr{IP: ip, Port: int(port)}, nil
}

func sameAddr(a, b *net.TCPAddr) bool { return a.Port == b.Port && a.IP.Equal(b.IP) }
