// Package transport carries Raft traffic between ordinal nodes.
//
// It provides StreamLayer, an implementation of raft.StreamLayer over TCP
// with optional (mutual) TLS, bounded dials and bounded server-side
// handshakes, plus a dial hook that fault-injection harnesses use to drop,
// delay or blackhole traffic between specific node pairs. NewTransport wraps
// a StreamLayer in hashicorp/raft's NetworkTransport with ordinal's defaults.
//
// A typical node does:
//
//	sl, err := transport.Listen("10.0.0.1:7000", "", transport.Config{
//		ServerTLS: serverTLS,
//		ClientTLS: clientTLS,
//	})
//	if err != nil {
//		return err
//	}
//	trans := transport.NewTransport(sl, transport.TransportConfig{Logger: logger})
//	r, err := raft.NewRaft(conf, fsm, logs, stable, snaps, trans)
//
// See DESIGN.md in this directory for the reasoning behind the choices made
// here.
package transport
