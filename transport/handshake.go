package transport

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// The peer handshake runs on every connection to a peer port, Raft and gRPC
// alike, before either protocol sees a byte. It is described in DESIGN.md
// ("The peer port"); in short:
//
//	client                                       server
//	preamble: "ORDP" version kind flags  ------>
//	[TLS handshake, mutual, peer CA]     <-----> (only when peer TLS is on)
//	hello: node, want, cluster, nonce    ------>
//	                                     <------  hello: node, cluster, nonce, MAC
//	                                              (or a refusal, then close)
//	finish: MAC                          ------>
//	                                              route to Raft or gRPC
//
// The MACs are HMAC-SHA256 over the two hellos (and, under TLS, keying
// material exported from the TLS session) keyed with the cluster token, so
// each side proves it holds the token without sending it, and a recorded
// handshake cannot be replayed. Without a token the MACs are empty.
const (
	peerMagic   = "ORDP"
	peerVersion = 1

	// kindRaft and kindGRPC say what the connection carries.
	kindRaft = 'R'
	kindGRPC = 'G'

	// flagTLS says the client starts TLS right after the preamble.
	flagTLS = 1

	preambleSize = len(peerMagic) + 3
	maxFrameSize = 4096
	nonceSize    = 32

	// exporterLabel names the TLS keying material the MACs bind to, so
	// that a handshake relayed between two TLS sessions fails.
	exporterLabel = "EXPORTER-ordinal-peer-token"

	serverMACLabel = "ordinal peer v1 server\x00"
	clientMACLabel = "ordinal peer v1 client\x00"
)

// Refusal reasons a server sends in its hello, so that the dialer can
// return the matching sentinel error.
const (
	reasonDenied    = "denied"
	reasonForeign   = "foreign-cluster"
	reasonWrongNode = "wrong-node"
	reasonProtocol  = "protocol"
	reasonRole      = "no-raft"
)

// hello is one side's introduction. The client sends Node, Want, Cluster,
// Nonce and Token; the server answers with Node, Cluster, Nonce, Token and
// MAC, or with Error and Reason when it refuses the connection.
type hello struct {
	// Node is the sender's node ID.
	Node string `json:"node,omitempty"`
	// Want is the node ID the client means to reach; empty when any
	// member will do (joining, discovery).
	Want string `json:"want,omitempty"`
	// Cluster is the sender's cluster ID, empty before it has one.
	Cluster string `json:"cluster,omitempty"`
	// Nonce is fresh randomness for the MACs.
	Nonce []byte `json:"nonce,omitempty"`
	// Token says the sender has a cluster token and sends MACs.
	Token bool `json:"token,omitempty"`
	// MAC proves the server holds the cluster token.
	MAC []byte `json:"mac,omitempty"`
	// Error, with Reason, refuses the connection.
	Error  string `json:"error,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// finish is the client's last message: its proof of the token.
type finish struct {
	MAC []byte `json:"mac,omitempty"`
}

// identity is what one side of a handshake knows about itself.
type identity struct {
	nodeID    string
	clusterID func() string
	token     []byte
	tls       *peerTLS
}

func (id identity) cluster() string {
	if id.clusterID == nil {
		return ""
	}
	return id.clusterID()
}

// writeFrame writes v as JSON behind a two-byte length.
func writeFrame(w io.Writer, v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(body) > maxFrameSize {
		return nil, fmt.Errorf("handshake frame of %d bytes exceeds %d", len(body), maxFrameSize)
	}
	buf := make([]byte, 2+len(body))
	binary.BigEndian.PutUint16(buf, uint16(len(body)))
	copy(buf[2:], body)
	_, err = w.Write(buf)
	return body, err
}

// readFrame reads one frame into v and returns its raw body.
func readFrame(r io.Reader, v any) ([]byte, error) {
	var size [2]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(size[:]))
	if n > maxFrameSize {
		return nil, fmt.Errorf("%w: handshake frame of %d bytes exceeds %d", ErrNotPeer, n, maxFrameSize)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return nil, fmt.Errorf("%w: malformed handshake frame: %w", ErrNotPeer, err)
	}
	return body, nil
}

// mac is HMAC-SHA256 under token over label, the TLS session's exported
// keying material (nil without TLS) and the two hellos as sent.
func mac(token []byte, label string, binding, clientHello, serverHello []byte) []byte {
	h := hmac.New(sha256.New, token)
	h.Write([]byte(label))
	for _, part := range [][]byte{binding, clientHello, serverHello} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	return h.Sum(nil)
}

// tlsBinding exports keying material from conn's TLS session, nil when
// conn is not TLS.
func tlsBinding(conn net.Conn) ([]byte, error) {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return nil, nil
	}
	st := tc.ConnectionState()
	return st.ExportKeyingMaterial(exporterLabel, nil, 32)
}

func newNonce() []byte {
	b := make([]byte, nonceSize)
	_, _ = rand.Read(b)
	return b
}

// clientHandshake runs the client side on conn and returns the connection
// to use (TLS-wrapped when peer TLS is on) and what it learned of the
// server. want, when not empty, is the node ID the caller means to reach.
func clientHandshake(ctx context.Context, conn net.Conn, kind byte, want string, self identity) (net.Conn, PeerInfo, error) {
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return nil, PeerInfo{}, err
		}
	}
	// crypto/tls closes the connection when ctx ends mid-handshake; the
	// rest of the handshake is bounded by the deadline set above, and by
	// closing the connection when ctx ends for hooked connections that
	// ignore deadlines. The close runs on a goroutine of its own and must
	// not read conn, which becomes the TLS connection below: closing the
	// TCP connection under it ends the TLS one too.
	raw := conn
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })
	defer stop()

	var flags byte
	if self.tls != nil {
		flags |= flagTLS
	}
	pre := append([]byte(peerMagic), peerVersion, kind, flags)
	if _, err := conn.Write(pre); err != nil {
		return nil, PeerInfo{}, err
	}
	var certID string
	if self.tls != nil {
		tc := tls.Client(conn, self.tls.clientConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			var rh tls.RecordHeaderError
			switch {
			case errors.As(err, &rh):
				return nil, PeerInfo{}, fmt.Errorf("%w: tls handshake: %w (the node answered without TLS: every node needs the same peer TLS settings)", ErrPermissionDenied, err)
			case errors.Is(err, errUnknownPeerCA), isRemoteTLSAlert(err):
				return nil, PeerInfo{}, fmt.Errorf("%w: tls handshake: %w", ErrPermissionDenied, err)
			}
			return nil, PeerInfo{}, fmt.Errorf("tls handshake: %w", err)
		}
		conn = tc
		id, err := certPeerID(tc.ConnectionState())
		if err != nil {
			return nil, PeerInfo{}, err
		}
		certID = id
	}
	binding, err := tlsBinding(conn)
	if err != nil {
		return nil, PeerInfo{}, err
	}
	ch := hello{Node: self.nodeID, Want: want, Cluster: self.cluster(), Nonce: newNonce(), Token: len(self.token) > 0}
	chBytes, err := writeFrame(conn, ch)
	if err != nil {
		return nil, PeerInfo{}, err
	}
	var sh hello
	if _, err := readFrame(conn, &sh); err != nil {
		if isRemoteTLSAlert(err) {
			// TLS 1.3 reports a refused client certificate on the first
			// read.
			return nil, PeerInfo{}, fmt.Errorf("%w: the node refused this node's certificate: %w", ErrPermissionDenied, err)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, PeerInfo{}, fmt.Errorf("%w: the other end closed the connection during the handshake (is it an ordinal peer port of the same version?)", ErrNotPeer)
		}
		return nil, PeerInfo{}, err
	}
	if sh.Error != "" {
		return nil, PeerInfo{}, refusalError(sh.Reason, sh.Error)
	}
	switch {
	case self.tls != nil && sh.Node != certID:
		return nil, PeerInfo{}, fmt.Errorf("%w: the node's certificate is for %q but it says it is %q", ErrPermissionDenied, certID, sh.Node)
	case want != "" && sh.Node != want:
		return nil, PeerInfo{}, fmt.Errorf("%w: reached node %q, wanted %q", ErrWrongNode, sh.Node, want)
	case sh.Cluster != "" && ch.Cluster != "" && sh.Cluster != ch.Cluster:
		return nil, PeerInfo{}, fmt.Errorf("%w: the node belongs to cluster %s, this node to cluster %s", ErrForeignCluster, sh.Cluster, ch.Cluster)
	case len(self.token) > 0 && !sh.Token:
		return nil, PeerInfo{}, fmt.Errorf("%w: the node has no cluster token but this node has one (--cluster-token-file): it is not of this cluster", ErrPermissionDenied)
	}
	shBytes, err := json.Marshal(hello{Node: sh.Node, Cluster: sh.Cluster, Nonce: sh.Nonce, Token: sh.Token})
	if err != nil {
		return nil, PeerInfo{}, err
	}
	var fin finish
	if len(self.token) > 0 {
		want := mac(self.token, serverMACLabel, binding, chBytes, shBytes)
		if !hmac.Equal(sh.MAC, want) {
			return nil, PeerInfo{}, fmt.Errorf("%w: the node's cluster token differs from this node's (--cluster-token-file): it belongs to another cluster", ErrPermissionDenied)
		}
		fin.MAC = mac(self.token, clientMACLabel, binding, chBytes, shBytes)
	}
	if _, err := writeFrame(conn, fin); err != nil {
		return nil, PeerInfo{}, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, PeerInfo{}, err
	}
	if !stop() {
		return nil, PeerInfo{}, ctx.Err()
	}
	return conn, PeerInfo{NodeID: sh.Node, ClusterID: sh.Cluster, Certified: self.tls != nil, Kind: kind}, nil
}

// serverResult is the outcome of the server side of a handshake.
type serverResult struct {
	conn net.Conn
	kind byte
	info PeerInfo
}

// serverHandshake runs the server side on conn within deadline. allow
// reports whether the node accepts connections of a kind.
func serverHandshake(conn net.Conn, deadline time.Time, self identity, allow func(kind byte) bool) (serverResult, error) {
	if err := conn.SetDeadline(deadline); err != nil {
		return serverResult{}, err
	}
	var pre [preambleSize]byte
	if _, err := io.ReadFull(conn, pre[:]); err != nil {
		return serverResult{}, fmt.Errorf("%w: reading the preamble: %w", ErrNotPeer, err)
	}
	if string(pre[:len(peerMagic)]) != peerMagic {
		return serverResult{}, fmt.Errorf("%w: the connection does not start with the peer preamble (a gRPC or Raft client of another version, or not an ordinal node)", ErrNotPeer)
	}
	version, kind, flags := pre[4], pre[5], pre[6]
	refuse := func(reason, msg string, err error) (serverResult, error) {
		_, _ = writeFrame(conn, hello{Error: msg, Reason: reason})
		return serverResult{}, fmt.Errorf("%w: %s", err, msg)
	}
	switch {
	case version != peerVersion:
		return refuse(reasonProtocol, fmt.Sprintf("peer protocol version %d is not supported (this node speaks %d)", version, peerVersion), ErrNotPeer)
	case kind != kindRaft && kind != kindGRPC && kind != kindProbe:
		return refuse(reasonProtocol, fmt.Sprintf("unknown connection kind %q", kind), ErrNotPeer)
	case self.tls != nil && flags&flagTLS == 0:
		return refuse(reasonDenied, "this node requires peer TLS (--peer-cert-file, --peer-key-file, --peer-ca-file)", ErrPermissionDenied)
	case self.tls == nil && flags&flagTLS != 0:
		// The client's TLS handshake will read this as a bad record; it
		// reports that the node answered without TLS.
		return refuse(reasonDenied, "this node does not use peer TLS", ErrPermissionDenied)
	case !allow(kind):
		return refuse(reasonRole, "this node does not run Raft (it keeps its counters in etcd)", ErrNotPeer)
	}
	var certID string
	if self.tls != nil {
		tc := tls.Server(conn, self.tls.serverConfig())
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			return serverResult{}, fmt.Errorf("%w: tls handshake: %w", ErrPermissionDenied, err)
		}
		conn = tc
		id, err := certPeerID(tc.ConnectionState())
		if err != nil {
			return refuse(reasonDenied, err.Error(), ErrPermissionDenied)
		}
		certID = id
	}
	binding, err := tlsBinding(conn)
	if err != nil {
		return serverResult{}, err
	}
	var ch hello
	chBytes, err := readFrame(conn, &ch)
	if err != nil {
		return serverResult{}, fmt.Errorf("%w: reading the hello: %w", ErrNotPeer, err)
	}
	ours := self.cluster()
	switch {
	case self.tls != nil && ch.Node != certID:
		return refuse(reasonDenied, fmt.Sprintf("the certificate is for node %q but the connection says it is %q", certID, ch.Node), ErrPermissionDenied)
	case validateNodeID(ch.Node) != nil:
		return refuse(reasonProtocol, fmt.Sprintf("invalid node ID: %v", validateNodeID(ch.Node)), ErrNotPeer)
	case ch.Want != "" && ch.Want != self.nodeID:
		return refuse(reasonWrongNode, fmt.Sprintf("this is node %q, not %q", self.nodeID, ch.Want), ErrWrongNode)
	case ch.Cluster != "" && ours != "" && ch.Cluster != ours:
		return refuse(reasonForeign, fmt.Sprintf("this node belongs to cluster %s, the caller to cluster %s; clusters never merge", ours, ch.Cluster), ErrForeignCluster)
	case len(self.token) > 0 && !ch.Token:
		return refuse(reasonDenied, "this node requires the cluster token (--cluster-token-file)", ErrPermissionDenied)
	case len(self.token) == 0 && ch.Token:
		return refuse(reasonDenied, "this node has no cluster token but the caller has one: it is not of this cluster", ErrPermissionDenied)
	}
	sh := hello{Node: self.nodeID, Cluster: ours, Nonce: newNonce(), Token: len(self.token) > 0}
	shBytes, err := json.Marshal(sh)
	if err != nil {
		return serverResult{}, err
	}
	if len(self.token) > 0 {
		sh.MAC = mac(self.token, serverMACLabel, binding, chBytes, shBytes)
	}
	if _, err := writeFrame(conn, sh); err != nil {
		return serverResult{}, err
	}
	var fin finish
	if _, err := readFrame(conn, &fin); err != nil {
		return serverResult{}, fmt.Errorf("reading the finish: %w", err)
	}
	if len(self.token) > 0 && !hmac.Equal(fin.MAC, mac(self.token, clientMACLabel, binding, chBytes, shBytes)) {
		return serverResult{}, fmt.Errorf("%w: the caller's cluster token differs", ErrPermissionDenied)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return serverResult{}, err
	}
	return serverResult{conn: conn, kind: kind, info: PeerInfo{NodeID: ch.Node, ClusterID: ch.Cluster, Certified: self.tls != nil, Kind: kind}}, nil
}

// isRemoteTLSAlert reports whether err is a TLS alert the other end sent
// (crypto/tls reports them as a net.OpError "remote error"): it refused
// the handshake, typically this node's certificate.
func isRemoteTLSAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}

// refusalError turns a server's refusal into the matching sentinel error.
func refusalError(reason, msg string) error {
	var err error
	switch reason {
	case reasonForeign:
		err = ErrForeignCluster
	case reasonWrongNode:
		err = ErrWrongNode
	case reasonDenied:
		err = ErrPermissionDenied
	default:
		err = ErrNotPeer
	}
	return fmt.Errorf("%w: the node refused the connection: %s", err, msg)
}

// validateNodeID reports whether id can name a node: 1 to 128 characters
// of letters, digits, '.', '_' and '-'. Node IDs travel in certificates,
// logs and the Raft configuration, so anything else is refused.
func validateNodeID(id string) error {
	if id == "" || len(id) > maxNodeIDLen {
		return fmt.Errorf("node ID must be 1 to %d characters long, got %d", maxNodeIDLen, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("node ID %q has the character %q: use letters, digits, '.', '_' and '-'", id, c)
		}
	}
	return nil
}

// ValidateNodeID reports, with an error a person can act on, whether id
// can name a node: 1 to 128 characters of letters, digits, '.', '_' and
// '-'.
func ValidateNodeID(id string) error { return validateNodeID(id) }

const maxNodeIDLen = 128
