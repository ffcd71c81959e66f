package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// roundTripConfigs returns client and server Configs for each security mode.
func roundTripConfigs(t *testing.T) map[string][2]Config {
	ca := newTestCA(t, "ordinal test CA")
	serverCert, clientCert := ca.issue(t, "server"), ca.issue(t, "client")
	return map[string][2]Config{
		"plain": {{}, {}},
		"tls": {
			{ClientTLS: ca.clientTLS()},
			{ServerTLS: ca.serverTLS(serverCert, false)},
		},
		"mutual-tls": {
			{ClientTLS: ca.clientTLS(clientCert)},
			{ServerTLS: ca.serverTLS(serverCert, true)},
		},
	}
}

func TestTransport_RoundTrip(t *testing.T) {
	for name, cfgs := range roundTripConfigs(t) {
		t.Run(name, func(t *testing.T) {
			client, server := newTrans(t, cfgs[0]), newTrans(t, cfgs[1])
			got := serve(t, server)
			testAppendEntries(t, client, server, got)
			testRequestVote(t, client, server, got)
		})
	}
}

func testAppendEntries(t *testing.T, client, server *raft.NetworkTransport, got <-chan any) {
	t.Helper()
	args := &raft.AppendEntriesRequest{
		RPCHeader:         raft.RPCHeader{ID: []byte("leader"), Addr: client.EncodePeer("leader", client.LocalAddr())},
		Term:              7,
		PrevLogEntry:      41,
		PrevLogTerm:       6,
		LeaderCommitIndex: 40,
		Entries: []*raft.Log{
			{Index: 42, Term: 7, Type: raft.LogCommand, Data: []byte("id-block-1")},
			{Index: 43, Term: 7, Type: raft.LogCommand, Data: []byte("id-block-2")},
		},
	}
	var resp raft.AppendEntriesResponse
	if err := client.AppendEntries("follower", server.LocalAddr(), args, &resp); err != nil {
		t.Fatalf("AppendEntries: %v", err)
	}
	if !resp.Success || resp.Term != 7 || resp.LastLog != 43 {
		t.Fatalf("AppendEntries response = %+v, want success at term 7, last log 43", resp)
	}
	req, ok := receive(t, got).(*raft.AppendEntriesRequest)
	if !ok {
		t.Fatalf("server received %T, want *raft.AppendEntriesRequest", req)
	}
	if req.Term != 7 || req.PrevLogEntry != 41 || req.PrevLogTerm != 6 || req.LeaderCommitIndex != 40 {
		t.Fatalf("server received header %+v, want term 7, prev 41/6, commit 40", req)
	}
	if string(req.ID) != "leader" || len(req.Entries) != 2 {
		t.Fatalf("server received ID %q with %d entries, want \"leader\" with 2", req.ID, len(req.Entries))
	}
	for i, e := range req.Entries {
		if want := args.Entries[i]; e.Index != want.Index || e.Term != want.Term || !bytes.Equal(e.Data, want.Data) {
			t.Fatalf("entry %d = %+v, want %+v", i, e, want)
		}
	}
}

func testRequestVote(t *testing.T, client, server *raft.NetworkTransport, got <-chan any) {
	t.Helper()
	args := &raft.RequestVoteRequest{
		RPCHeader:    raft.RPCHeader{ID: []byte("candidate"), Addr: []byte(client.LocalAddr())},
		Term:         9,
		LastLogIndex: 43,
		LastLogTerm:  7,
	}
	var resp raft.RequestVoteResponse
	if err := client.RequestVote("voter", server.LocalAddr(), args, &resp); err != nil {
		t.Fatalf("RequestVote: %v", err)
	}
	if !resp.Granted || resp.Term != 9 {
		t.Fatalf("RequestVote response = %+v, want granted at term 9", resp)
	}
	req, ok := receive(t, got).(*raft.RequestVoteRequest)
	if !ok {
		t.Fatalf("server received %T, want *raft.RequestVoteRequest", req)
	}
	if req.Term != 9 || req.LastLogIndex != 43 || req.LastLogTerm != 7 || string(req.ID) != "candidate" {
		t.Fatalf("server received %+v, want term 9, last log 43/7 from candidate", req)
	}
}

func TestTransport_TLSRejectsUntrustedPeers(t *testing.T) {
	trusted, rogue := newTestCA(t, "trusted CA"), newTestCA(t, "rogue CA")
	serverCert := trusted.issue(t, "server")
	mtlsServer := Config{ServerTLS: trusted.serverTLS(serverCert, true)}
	cases := map[string]struct {
		client, server Config
		wantVerifyErr  bool
	}{
		"client cert from untrusted CA": {
			client: Config{ClientTLS: presenting(trusted.clientTLS(), rogue.issue(t, "intruder"))},
			server: mtlsServer,
		},
		"no client cert": {
			client: Config{ClientTLS: trusted.clientTLS()},
			server: mtlsServer,
		},
		"plain TCP client": {
			client: Config{},
			server: mtlsServer,
		},
		"server cert from untrusted CA": {
			client:        Config{ClientTLS: trusted.clientTLS(trusted.issue(t, "client"))},
			server:        Config{ServerTLS: rogue.serverTLS(rogue.issue(t, "impostor"), false)},
			wantVerifyErr: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			client, server := newTrans(t, tc.client), newTrans(t, tc.server)
			got := serve(t, server)
			var resp raft.RequestVoteResponse
			err := client.RequestVote("voter", server.LocalAddr(), &raft.RequestVoteRequest{Term: 1}, &resp)
			if err == nil {
				t.Fatalf("RequestVote succeeded (response %+v), want failure", resp)
			}
			t.Logf("RequestVote error (expected): %v", err)
			var verifyErr *tls.CertificateVerificationError
			if tc.wantVerifyErr && !errors.As(err, &verifyErr) {
				t.Fatalf("RequestVote error = %v, want a *tls.CertificateVerificationError", err)
			}
			assertNothingReceived(t, got)
		})
	}
}

// presenting makes cfg offer cert even when the server's list of acceptable
// CAs does not include its issuer (crypto/tls would otherwise send nothing).
func presenting(cfg *tls.Config, cert tls.Certificate) *tls.Config {
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &cert, nil
	}
	return cfg
}

func TestTransport_DialHookErrorSurfaces(t *testing.T) {
	errBlackhole := errors.New("blackholed by test")
	dialed := make(chan string, 1)
	client := newTrans(t, Config{Dial: func(_ context.Context, address string) (net.Conn, error) {
		select {
		case dialed <- address:
		default:
		}
		return nil, errBlackhole
	}})
	server := newTrans(t, Config{})
	got := serve(t, server)

	var resp raft.AppendEntriesResponse
	err := client.AppendEntries("follower", server.LocalAddr(), &raft.AppendEntriesRequest{Term: 1}, &resp)
	if !errors.Is(err, errBlackhole) {
		t.Fatalf("AppendEntries error = %v, want %v", err, errBlackhole)
	}
	if want := "dial raft peer " + string(server.LocalAddr()); !strings.Contains(err.Error(), want) {
		t.Fatalf("AppendEntries error %q does not mention %q", err, want)
	}
	if addr := <-dialed; addr != string(server.LocalAddr()) {
		t.Fatalf("dial hook got address %q, want %q", addr, server.LocalAddr())
	}
	assertNothingReceived(t, got)
}

func TestTransport_DialHookPassThrough(t *testing.T) {
	var calls atomic.Int32
	var d net.Dialer
	client := newTrans(t, Config{Dial: func(ctx context.Context, address string) (net.Conn, error) {
		calls.Add(1)
		return d.DialContext(ctx, "tcp", address)
	}})
	server := newTrans(t, Config{})
	got := serve(t, server)
	testRequestVote(t, client, server, got)
	if calls.Load() == 0 {
		t.Fatal("dial hook was not used")
	}
}

func TestTransportConfig_Defaults(t *testing.T) {
	cfg := RaftConfig{}.withDefaults()
	if cfg.MaxPool != DefaultMaxPool || cfg.Timeout != DefaultRPCTimeout || cfg.Logger == nil {
		t.Fatalf("defaults = %+v, want MaxPool %d, Timeout %v and a logger", cfg, DefaultMaxPool, DefaultRPCTimeout)
	}
	logger := hclog.NewNullLogger()
	set := RaftConfig{MaxPool: 1, Timeout: time.Second, Logger: logger}
	if got := set.withDefaults(); got != set {
		t.Fatalf("withDefaults changed explicit values: got %+v, want %+v", got, set)
	}
}
