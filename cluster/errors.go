package cluster

import (
	"errors"
	"fmt"

	"github.com/ordinal-dev/ordinal/alloc"
)

var (
	// ErrNoLeader is returned when the cluster has no known leader, for
	// example during an election or after losing quorum. Retry later.
	ErrNoLeader = fmt.Errorf("cluster: no leader: %w", alloc.ErrUnavailable)

	// ErrNotReady is returned while the node is starting and has not yet
	// caught up with the cluster.
	ErrNotReady = fmt.Errorf("cluster: node not ready: %w", alloc.ErrUnavailable)

	// ErrShutdown is returned by calls made after Close.
	ErrShutdown = fmt.Errorf("cluster: node shut down: %w", alloc.ErrUnavailable)

	// ErrNoQuorum is returned when the leader cannot reach a majority of
	// voters, so it cannot prove it still leads.
	ErrNoQuorum = fmt.Errorf("cluster: no quorum: %w", alloc.ErrUnavailable)

	// ErrForeignCluster is returned by Join for a node that belongs to
	// another cluster. Clusters never merge; wipe the node's data directory
	// to move it.
	ErrForeignCluster = errors.New("cluster: node belongs to another cluster")

	// ErrUnknownNode is returned by Remove, TransferLeadership and Publish
	// for a node ID that is not a member (or, for TransferLeadership, not
	// a voter).
	ErrUnknownNode = errors.New("cluster: no such member")

	// ErrAddressInUse is returned by Join when another member already has
	// the joining node's Raft address.
	ErrAddressInUse = errors.New("cluster: raft address used by another member")

	// ErrMoveLeader is returned by Join when asked to move the leader
	// itself to another address, or to re-admit it as a node that lost
	// its data: the leader runs, at its address, with its data, so the
	// request does not come from it.
	ErrMoveLeader = errors.New("cluster: the leader cannot be moved")

	// ErrNoOtherVoter is returned by TransferLeadership, without a target,
	// in a cluster whose only voter is the leader.
	ErrNoOtherVoter = errors.New("cluster: no other voter")

	// ErrLastVoter is returned by Remove for the cluster's only voter.
	ErrLastVoter = errors.New("cluster: cannot remove the only voter")

	// ErrInvalidRequest is returned by Join and Publish for a node ID or
	// address the cluster cannot record: empty, too long, or with
	// characters that do not belong in one.
	ErrInvalidRequest = errors.New("cluster: invalid request")

	// ErrPeerRefused is returned by Start when every join address refused
	// this node's peer credentials or belongs to another cluster: the
	// node's certificate is not from the cluster's peer CA, or its cluster
	// token differs. Retrying does not help.
	ErrPeerRefused = errors.New("cluster: every join address refused this node")

	// ErrNotVoter is returned by ConfirmableTerm on a node that is not a
	// voter in its own latest configuration: a non-voter being staged, a
	// removed member, a member re-admitted after losing its data that has
	// not received its configuration yet, or a voter just promoted that
	// has not appended its promotion. Its term must not count towards a
	// leader's proof.
	ErrNotVoter = errors.New("cluster: this node is not a voter in its own configuration")

	// ErrIdentityMismatch is returned by New when the data directory
	// belongs to a node with another ID than the one configured.
	ErrIdentityMismatch = errors.New("cluster: data directory belongs to another node")
)
