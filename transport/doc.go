// Package transport carries the traffic between ordinal nodes.
//
// Peer is a node's peer port: one listener for Raft and for the gRPC calls
// nodes make to each other, every connection authenticated first by the
// peer handshake (mutual TLS with node certificates, a cluster token, or
// both; see DESIGN.md, "The peer port"). A node does:
//
//	p, err := transport.ListenPeer("10.0.0.1:34905", "", transport.PeerConfig{
//		NodeID: "n1", TLS: peerTLS, Raft: true,
//	})
//	trans := transport.NewTransport(p.Raft(), transport.RaftConfig{Logger: logger})
//	go grpcServer.Serve(p.GRPCListener()) // grpc.NewServer(p.ServerOption(), ...)
//	conn, err := grpc.NewClient(addrOfN2, p.DialOptions("n2")...)
//
// Underneath, StreamLayer implements raft.StreamLayer over TCP with
// optional (mutual) TLS, bounded dials and bounded server-side handshakes,
// plus a dial hook that fault-injection harnesses use to drop, delay or
// blackhole traffic between specific node pairs. NewTransport wraps a
// StreamLayer in hashicorp/raft's NetworkTransport with ordinal's
// defaults. Used on its own (without a Peer):
//
//	sl, err := transport.Listen("10.0.0.1:7000", "", transport.Config{
//		ServerTLS: serverTLS,
//		ClientTLS: clientTLS,
//	})
//	if err != nil {
//		return err
//	}
//	trans := transport.NewTransport(sl, transport.RaftConfig{Logger: logger})
//	r, err := raft.NewRaft(conf, fsm, logs, stable, snaps, trans)
//
// See DESIGN.md in this directory for the reasoning behind the choices made
// here.
package transport
