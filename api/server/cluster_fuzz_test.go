package server_test

import (
	"math"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/daemon"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
	"github.com/ordinal-dev/ordinal/internal/testpki"
	"github.com/ordinal-dev/ordinal/transport"
)

// clusterCodes are the codes the ClusterService and PeerService may answer
// arbitrary requests with; anything else (Internal, Unknown, a panic)
// is a bug.
var clusterCodes = map[codes.Code]bool{
	codes.OK: true, codes.InvalidArgument: true, codes.NotFound: true, codes.FailedPrecondition: true,
	codes.AlreadyExists: true, codes.PermissionDenied: true, codes.Unavailable: true, codes.DeadlineExceeded: true,
}

// FuzzCluster feeds arbitrary membership, publishing and reservation
// requests to a real single-node cluster, as an admin on the client port
// and as a member on the peer port: it must never panic, must answer only
// with documented codes, and must keep serving strictly increasing STRONG
// IDs with itself as the leader.
func FuzzCluster(f *testing.F) {
	f.Add("n2", "127.0.0.1:1", "127.0.0.1:2", true, "", uint64(1), uint64(1))
	f.Add("n1", "127.0.0.1:9", "", false, "cluster", uint64(math.MaxUint64), uint64(1))
	f.Add("", "", "", false, "", uint64(0), uint64(0))
	f.Add("a b", "x", "host:0", true, "c", uint64(5), uint64(6))
	f.Add("n\x00", "[::1]:99999", "localhost:65535", false, "", uint64(1<<25), uint64(1<<20))
	f.Add(string(make([]byte, 300)), "h:1", "h:1", true, "", uint64(2), uint64(2))

	pki := testpki.New(f, "")
	cfg := daemon.Config{
		Cluster:  cluster.Config{NodeID: "n1", DataDir: f.TempDir(), RaftAddr: "127.0.0.1:0", Bootstrap: true},
		GRPCAddr: "127.0.0.1:0",
	}
	testcluster.Secure(f, pki, "n1", &cfg)
	d, err := daemon.Start(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })
	if err := d.WaitReady(callCtx(f)); err != nil {
		f.Fatal(err)
	}
	adminConn, err := grpc.NewClient(d.GRPCAddr(), pki.DialOption(testpki.AdminName))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { adminConn.Close() })
	admin := ordinalv1.NewClusterServiceClient(adminConn)
	seq := ordinalv1.NewSequencerServiceClient(adminConn)

	certFile, keyFile := pki.Peer("n9")
	peerTLS, err := transport.LoadPeerTLS(certFile, keyFile, pki.PeerCAFile, nil)
	if err != nil {
		f.Fatal(err)
	}
	port, err := transport.ListenPeer("127.0.0.1:0", "", transport.PeerConfig{NodeID: "n9", TLS: peerTLS})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { port.Close() })
	peerConn, err := grpc.NewClient(d.RaftAddr(), port.DialOptions("n1")...)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { peerConn.Close() })
	peer := ordinalv1.NewPeerServiceClient(peerConn)

	var last int64
	f.Fuzz(func(t *testing.T, nodeID, raftAddr, grpcAddr string, hasState bool, clusterID string, want, need uint64) {
		for _, s := range []string{nodeID, raftAddr, grpcAddr, clusterID} {
			if !utf8.ValidString(s) {
				return // the client cannot send it (TestInvalidUTF8IsInvalidArgument covers what a server does with it)
			}
		}
		ctx := callCtx(t)
		check := func(what string, err error) {
			t.Helper()
			if !clusterCodes[status.Code(err)] {
				t.Fatalf("%s: unexpected %v", what, err)
			}
		}
		join := &ordinalv1.JoinRequest{NodeId: nodeID, RaftAddr: raftAddr, GrpcAddr: grpcAddr, HasState: hasState, ClusterId: clusterID}
		_, err := admin.Join(ctx, join)
		check("ClusterService/Join", err)
		_, err = peer.Join(ctx, &ordinalv1.PeerServiceJoinRequest{NodeId: nodeID, RaftAddr: raftAddr, GrpcAddr: grpcAddr, HasState: hasState, ClusterId: clusterID})
		check("PeerService/Join", err)
		_, err = peer.Publish(ctx, &ordinalv1.PublishRequest{NodeId: nodeID})
		check("PeerService/Publish", err)
		_, err = admin.TransferLeadership(ctx, &ordinalv1.TransferLeadershipRequest{NodeId: nodeID})
		check("ClusterService/TransferLeadership", err)
		_, err = admin.Remove(ctx, &ordinalv1.RemoveRequest{NodeId: nodeID})
		check("ClusterService/Remove", err)
		r, err := peer.Reserve(ctx, &ordinalv1.ReserveRequest{Key: "fuzz", Want: want, Need: need})
		check("PeerService/Reserve", err)
		if err == nil && (r.GetFirst() < 1 || r.GetLast() < r.GetFirst() || r.GetLast()-r.GetFirst()+1 < need || r.GetLast()-r.GetFirst() >= max(want, need)) {
			t.Fatalf("Reserve want %d need %d gave %d..%d", want, need, r.GetFirst(), r.GetLast())
		}
		resp, err := seq.GetNextId(ctx, &ordinalv1.GetNextIdRequest{Key: "fuzz-strong", Options: &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG}})
		if err != nil || resp.GetNextId() <= last {
			t.Fatalf("STRONG after the requests: %v, %v (last %d)", resp, err, last)
		}
		last = resp.GetNextId()
		if !d.Node().IsLeader() {
			t.Fatal("n1 no longer leads")
		}
	})
}
