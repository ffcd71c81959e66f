package transport

import "errors"

var (
	// ErrClosed is returned by Peer.Conn once the peer port is closed.
	ErrClosed = errors.New("transport: peer port closed")

	// ErrUnadvertisable is returned by NewStreamLayer and Listen when the
	// address other nodes would use to reach this one is missing, malformed,
	// has port 0, or has an unspecified host (0.0.0.0, ::, or empty). Raft
	// stores the advertised address in its configuration, so a value that
	// peers cannot dial would make the node unreachable after it joins.
	ErrUnadvertisable = errors.New("transport: address is not advertisable")

	// ErrInvalidConfig is returned by NewStreamLayer and Listen when the
	// Config cannot work, for example a ServerTLS without any certificate
	// source. Failing at construction is preferable to failing every
	// handshake at run time.
	ErrInvalidConfig = errors.New("transport: invalid config")
)

// Errors of the peer handshake (see DESIGN.md, "The peer port"). A dial to
// a peer port returns them wrapped with the address; errors.Is tells them
// apart.
var (
	// ErrNotPeer means the other end does not speak ordinal's peer
	// protocol: a client port, another program, or an incompatible
	// version. Check that the address is a node's peer address
	// (--raft-addr), not its gRPC address.
	ErrNotPeer = errors.New("transport: not an ordinal peer port")

	// ErrPermissionDenied means one side refused the other's credentials:
	// a certificate not signed by the peer CA or naming another node, a
	// missing or different cluster token, or TLS on one side only. It does
	// not go away by retrying.
	ErrPermissionDenied = errors.New("transport: peer credentials refused")

	// ErrForeignCluster means the two nodes belong to different clusters.
	// Clusters never merge.
	ErrForeignCluster = errors.New("transport: node belongs to another cluster")

	// ErrWrongNode means the address reached another node than the one
	// the dialer meant (a reused address, a node that moved).
	ErrWrongNode = errors.New("transport: address reached another node")
)
