package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/backup"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
	"github.com/ordinal-dev/ordinal/transport"
)

// fetchBackup takes a backup through conn's ClusterService and returns
// the file's bytes, or the call's error.
func fetchBackup(ctx context.Context, conn grpc.ClientConnInterface) ([]byte, error) {
	stream, err := ordinalv1.NewClusterServiceClient(conn).Backup(ctx, &ordinalv1.BackupRequest{})
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		if len(chunk.GetData()) == 0 || len(chunk.GetData()) > 256<<10 {
			return nil, status.Errorf(codes.Internal, "a chunk of %d bytes", len(chunk.GetData()))
		}
		buf.Write(chunk.GetData())
	}
}

// mustBackup takes and reads a backup through conn.
func mustBackup(t *testing.T, conn grpc.ClientConnInterface) (*backup.Backup, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	data, err := fetchBackup(ctx, conn)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	b, err := backup.Read(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("read the backup: %v", err)
	}
	return b, data
}

// highs records the highest ID handed out per key.
type highs struct {
	mu sync.Mutex
	m  map[fsm.Key]int64
}

func newHighs() *highs { return &highs{m: map[fsm.Key]int64{}} }

func (h *highs) note(k fsm.Key, id int64) {
	h.mu.Lock()
	h.m[k] = max(h.m[k], id)
	h.mu.Unlock()
}

func (h *highs) get(k fsm.Key) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[k]
}

// hammer takes IDs of every key, STRONG and WEAK, through every
// connection at once, for d, and records the highest it got per key. It
// returns how many calls it made.
func hammer(t *testing.T, conns []*grpc.ClientConn, keys []fsm.Key, d time.Duration, h *highs) int {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		calls int
	)
	deadline := time.Now().Add(d)
	for _, conn := range conns {
		for _, mode := range []ordinalv1.SequencerOptions_AutoIncrement{ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG, ordinalv1.SequencerOptions_AUTO_INCREMENT_WEAK} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				seq := ordinalv1.NewSequencerServiceClient(conn)
				n := 0
				for i := 0; time.Now().Before(deadline); i++ {
					k := keys[i%len(keys)]
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					resp, err := seq.GetNextIds(ctx, &ordinalv1.GetNextIdsRequest{StoreName: k.Store, Key: k.Name,
						Options: &ordinalv1.SequencerOptions{Increment: mode}, Count: int64(1 + i%20)})
					cancel()
					if err != nil {
						t.Errorf("%v %v: %v", mode, k, err)
						return
					}
					h.note(k, resp.FirstId+resp.Count-1)
					n++
				}
				mu.Lock()
				calls += n
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	return calls
}

func nodeConns(nodes []*testcluster.Node) []*grpc.ClientConn {
	var out []*grpc.ClientConn
	for _, nd := range nodes {
		out = append(out, nd.Conn())
	}
	return out
}

// A backup through a follower is the leader's: the follower relays it. It
// holds every ID handed out before it, and the rates the leader observed.
func TestBackupThroughFollowerIsTheLeaders(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.Leader()
	follower := c.Followers(leader)[0]
	keys := []fsm.Key{{Store: "default", Name: "a"}, {Store: "orders", Name: "b"}}
	h := newHighs()
	hammer(t, nodeConns(c.Nodes()), keys, 300*time.Millisecond, h)

	b, _ := mustBackup(t, follower.Conn())
	clusterID := leader.Daemon().Node().FSM().ClusterID()
	if b.ClusterID != clusterID || b.State.ClusterID() != clusterID {
		t.Fatalf("backup of cluster %q (state %q), the cluster is %q", b.ClusterID, b.State.ClusterID(), clusterID)
	}
	if b.Index == 0 || b.Term == 0 || time.Since(b.TakenAt) > time.Minute || b.TakenAt.Location() != time.UTC {
		t.Fatalf("header %+v", b.Header)
	}
	for _, k := range keys {
		if hw := b.State.HighWater(k); hw < uint64(h.get(k)) {
			t.Errorf("%v: high-water mark %d in the backup, %d was handed out before it", k, hw, h.get(k))
		}
	}
	rated := map[fsm.Key]uint64{}
	for _, kr := range b.Rates.Keys {
		rated[kr.Key] = kr.Peak
	}
	for _, k := range keys {
		if rated[k] == 0 {
			t.Errorf("%v: no rate recorded (rates %v)", k, b.Rates.Keys)
		}
	}
	if b.Rates.ClusterPeak == 0 || b.Rates.Window != backup.DefaultRateWindow {
		t.Errorf("rates %+v", b.Rates)
	}

	// Through the leader: the same cluster, at least as far along.
	lb, _ := mustBackup(t, leader.Conn())
	if lb.ClusterID != clusterID || lb.Index < b.Index || lb.State.Len() != b.State.Len() {
		t.Fatalf("backup through the leader: cluster %q, index %d, %d keys; through the follower: index %d, %d keys",
			lb.ClusterID, lb.Index, lb.State.Len(), b.Index, b.State.Len())
	}
}

// A backup call that arrives on a follower's peer port was forwarded
// already: the follower answers Unavailable rather than forwarding it
// again. The leader's peer port serves it.
func TestForwardedBackupIsNotForwardedAgain(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.Leader()
	follower := c.Followers(leader)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := fetchBackup(ctx, peerConn(t, c, follower, "n9"))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("backup on a follower's peer port: %v, want Unavailable", err)
	}
	data, err := fetchBackup(ctx, peerConn(t, c, leader, "n9"))
	if err != nil {
		t.Fatalf("backup on the leader's peer port: %v", err)
	}
	if _, err := backup.Read(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
}

// peerConn returns a connection to nd's peer port as node asID of the
// cluster would make it.
func peerConn(t *testing.T, c *testcluster.Cluster, nd *testcluster.Node, asID string) *grpc.ClientConn {
	t.Helper()
	certFile, keyFile := c.PKI().Peer(asID)
	tlsCfg, err := transport.LoadPeerTLS(certFile, keyFile, c.PKI().PeerCAFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	port, err := transport.ListenPeer("127.0.0.1:0", "", transport.PeerConfig{NodeID: asID, TLS: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(nd.RaftAddr, port.DialOptions(nd.ID)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		port.Close()
	})
	return conn
}

// An ids caller (a client certificate without the admin role) may not
// take backups.
func TestBackupNeedsAdmin(t *testing.T) {
	c := testcluster.New(t, 1)
	nd := c.Node("n1")
	conn, err := grpc.NewClient(nd.GRPCAddr, c.DialOptions("orders-service")...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := fetchBackup(ctx, conn); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("backup with an ids certificate: %v, want PermissionDenied", err)
	}
}
