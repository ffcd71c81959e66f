// Package grpccodec lets ordinal's gRPC servers answer requests whose string
// fields hold invalid UTF-8 with codes.InvalidArgument ("key is not valid
// UTF-8") instead of codes.Internal.
//
// # Why this exists
//
// protobuf-go rejects a proto3 string field that is not valid UTF-8 while
// decoding. grpc-go decodes a request before any interceptor or handler
// runs, and recv() in its rpc_util.go turns every codec Unmarshal error into
// codes.Internal ("grpc: failed to unmarshal the received message"). A
// client's bad input therefore looks like a server fault, and no code of
// ours ever gets to say which field is wrong.
//
// # How
//
//	srv := grpc.NewServer(
//		grpc.ForceServerCodecV2(grpccodec.Lenient()),
//		grpc.ChainUnaryInterceptor(grpccodec.UnaryServerInterceptor(), ...),
//		grpc.ChainStreamInterceptor(grpccodec.StreamServerInterceptor(), ...),
//	)
//
// Lenient is a server codec named "proto". Marshal, and Unmarshal of every
// well-formed request, are grpc's default proto codec, called directly: the
// normal path costs nothing extra. Only when that Unmarshal fails because a
// string field holds invalid UTF-8 are the same bytes decoded again without
// UTF-8 validation, into the same message, which is then remembered in a
// small side table keyed by the message's address. The interceptors look a
// request up in that table; only a request found there is walked with
// CheckUTF8 and answered InvalidArgument naming the field. While no
// leniently decoded request waits for its interceptor the table is empty
// and the lookup is a single atomic load, so a valid request pays a few
// nanoseconds (BenchmarkInterceptor) instead of a protoreflect walk, which
// costs about as much as decoding the request (BenchmarkCheckUTF8).
// CheckUTF8 stays the authority: an entry only makes the interceptor check,
// so a stale entry can never reject a valid request. The entry of a request
// that never reaches the interceptor (it is not installed, or an earlier
// interceptor rejects the call) is dropped by a runtime cleanup once the
// message is garbage; the table holds no reference to messages.
//
// The error is recognised by the InvalidUTF8() bool method that protobuf-go
// puts on the error of its generated-code decoder (impl.errInvalidUTF8),
// found with errors.As; its reflective decoder (dynamicpb and other messages
// without fast-path methods) reports "field X contains invalid UTF-8" as a
// plain proto.Error, which is recognised by that text. Both are pinned by
// TestStrictUTF8ErrorIsRecognised, so an upgrade of google.golang.org/protobuf
// that changes either fails that test instead of silently turning these
// requests back into Internal errors. The recognition only decides whether
// to try the lenient decoder: a request is passed on only when the lenient
// decoder accepts the bytes and CheckUTF8 then finds an invalid string.
//
// # The lenient decoder
//
// Two designs were considered. One builds, per message type, a dynamicpb
// type from a copy of the message's descriptors in which strings are bytes,
// decodes into it and copies the values back through protoreflect. That
// copy is not simple: protobuf forbids bytes map keys, so string-keyed maps
// must become repeated entry messages (which changes how closed enum values
// in them decode); every file the message depends on must be copied under
// new names, each keeping its own syntax or edition and features; and
// extensions must be resolved against the copies. The design chosen here
// walks the wire format with protowire and decodes by itself only what
// UTF-8 validation touches: string fields (stored with protoreflect's Set,
// which does not validate), message and group fields (recursed into, to
// reach the strings inside) and map fields with a string key or a string or
// message value. Every other field, a run of consecutive ones at a time,
// goes to proto.Unmarshal with Merge, so scalars, packed lists, enums,
// oneofs, unknown fields, extensions and the recursion limit keep
// protobuf's own semantics. FuzzLenientUnmarshal checks that whenever
// proto.Unmarshal accepts a message the lenient decoder yields an equal one
// (proto.Equal), and that it rejects whatever proto.Unmarshal rejects for
// another reason than invalid UTF-8.
//
// A request that is malformed in any other way still fails as before
// (codes.Internal). A string field sent twice, first invalid and then valid,
// is rejected by protobuf but ends up valid here (the last value wins, as
// protobuf decodes fields) and is handed to the handler as such.
//
// If another codec is registered under the name "proto" (vtprotobuf, for
// instance), Lenient delegates to it; if its errors do not carry the marker,
// such requests keep failing with Internal.
package grpccodec

import (
	"errors"
	"strings"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// Name is the codec's name: it replaces grpc's "proto" codec.
const Name = grpcproto.Name

// Lenient returns the server codec; use it with grpc.ForceServerCodecV2
// together with UnaryServerInterceptor and StreamServerInterceptor. It is
// safe for concurrent use.
func Lenient() encoding.CodecV2 {
	strict := encoding.GetCodecV2(Name)
	if c, ok := strict.(*codec); ok {
		// Lenient itself was registered as "proto".
		strict = c.strict
	}
	return &codec{strict: strict}
}

type codec struct {
	// strict is the codec registered as "proto": grpc's default proto codec.
	strict encoding.CodecV2
}

func (c *codec) Name() string { return Name }

// Marshal is the default codec's.
func (c *codec) Marshal(v any) (mem.BufferSlice, error) {
	return c.strict.Marshal(v)
}

// Unmarshal is the default codec's unless that fails only because a string
// field holds invalid UTF-8; then v is decoded without UTF-8 validation and
// remembered for the interceptors.
func (c *codec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.strict.Unmarshal(data, v)
	if err == nil || !isInvalidUTF8(err) {
		return err
	}
	m := messageV2Of(v)
	if m == nil {
		return err
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	if unmarshalLenient(buf.ReadOnlyData(), m) != nil {
		return err
	}
	if _, ok := CheckUTF8(m); ok {
		// An invalid value was replaced by a later valid one of the same
		// field: what the handler gets is valid.
		return nil
	}
	if !pending.add(v) {
		return err
	}
	return nil
}

// isInvalidUTF8 reports whether err is protobuf's error for a string field
// holding invalid UTF-8.
func isInvalidUTF8(err error) bool {
	var u interface{ InvalidUTF8() bool }
	if errors.As(err, &u) {
		return u.InvalidUTF8()
	}
	// The reflective decoder's errors.InvalidUTF8(name).
	return errors.Is(err, proto.Error) && strings.Contains(err.Error(), " contains invalid UTF-8")
}

// messageV2Of is grpc's: v as a proto.Message, or nil.
func messageV2Of(v any) proto.Message {
	switch v := v.(type) {
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(v)
	case protoadapt.MessageV2:
		return v
	}
	return nil
}
