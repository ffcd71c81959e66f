package grpccodec

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/api/runtimev1"
)

// sequencer is a minimal ordinal Sequencer: every ID is 1. It fails the
// test if a handler ever sees invalid UTF-8.
type sequencer struct {
	ordinalv1.UnimplementedSequencerServiceServer
	t     *testing.T
	calls atomic.Int64
}

func (s *sequencer) saw(strs ...string) {
	s.calls.Add(1)
	for _, str := range strs {
		if !utf8.ValidString(str) {
			s.t.Errorf("a handler got invalid UTF-8 %q", str)
		}
	}
}

func (s *sequencer) GetNextId(_ context.Context, req *ordinalv1.GetNextIdRequest) (*ordinalv1.GetNextIdResponse, error) {
	s.saw(req.GetStoreName(), req.GetKey())
	for k, v := range req.GetMetadata() {
		s.saw(k, v)
	}
	return &ordinalv1.GetNextIdResponse{NextId: 1}, nil
}

func (s *sequencer) NextIdStream(stream ordinalv1.SequencerService_NextIdStreamServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		s.saw(req.GetStoreName(), req.GetKey())
		if err := stream.Send(&ordinalv1.NextIdStreamResponse{Seq: req.GetSeq(), FirstId: 1, Count: req.GetCount()}); err != nil {
			return err
		}
	}
}

type runtimeServer struct {
	runtimev1.UnimplementedRuntimeServer
	seq *sequencer
}

func (r *runtimeServer) GetNextId(_ context.Context, req *runtimev1.GetNextIdRequest) (*runtimev1.GetNextIdResponse, error) {
	r.seq.saw(req.GetStoreName(), req.GetKey())
	for k, v := range req.GetMetadata() {
		r.seq.saw(k, v)
	}
	return &runtimev1.GetNextIdResponse{NextId: 1}, nil
}

// rawCodec is a client codec that sends and receives *[]byte as they are,
// so that a test can send what the proto codec would refuse to marshal.
type rawCodec struct{}

func (rawCodec) Name() string { return Name }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// serve starts a server on 127.0.0.1:0 with opts and the test services,
// and returns a connection to it.
func serve(t *testing.T, opts ...grpc.ServerOption) (*grpc.ClientConn, *sequencer) {
	t.Helper()
	seq := &sequencer{t: t}
	srv := grpc.NewServer(opts...)
	ordinalv1.RegisterSequencerServiceServer(srv, seq)
	runtimev1.RegisterRuntimeServer(srv, &runtimeServer{seq: seq})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, seq
}

func lenientServer(t *testing.T) (*grpc.ClientConn, *sequencer) {
	return serve(t,
		grpc.ForceServerCodecV2(Lenient()),
		grpc.UnaryInterceptor(UnaryServerInterceptor()),
		grpc.StreamInterceptor(StreamServerInterceptor()))
}

func invokeRaw(ctx context.Context, conn *grpc.ClientConn, method string, req []byte) ([]byte, error) {
	var resp []byte
	err := conn.Invoke(ctx, method, &req, &resp, grpc.ForceCodecV2(rawCodec{}))
	return resp, err
}

func wantStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || (msg != "" && st.Message() != msg) {
		t.Fatalf("got %v; want %v %q", err, code, msg)
	}
}

func TestServerInvalidUTF8(t *testing.T) {
	conn, seq := lenientServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	cases := []struct {
		name   string
		method string
		req    []byte
		field  string
	}{
		{"key", ordinalv1.SequencerService_GetNextId_FullMethodName,
			cat(strField(1, "orders"), strField(2, bad)), "key"},
		{"store_name", ordinalv1.SequencerService_GetNextId_FullMethodName,
			cat(strField(1, bad), strField(2, "k")), "store_name"},
		{"metadata key", ordinalv1.SequencerService_GetNextId_FullMethodName,
			cat(strField(2, "k"), mapEntry(4, bad, "v")), "metadata key"},
		{"metadata value", ordinalv1.SequencerService_GetNextId_FullMethodName,
			cat(strField(2, "k"), mapEntry(4, "trace", bad)), `metadata["trace"]`},
		{"layotto key", runtimev1.Runtime_GetNextId_FullMethodName,
			cat(strField(1, "s"), strField(2, bad), bytesField(3, varintField(1, 1))), "key"},
		{"layotto store_name", runtimev1.Runtime_GetNextId_FullMethodName,
			cat(strField(1, bad), strField(2, "k")), "store_name"},
		{"layotto metadata value", runtimev1.Runtime_GetNextId_FullMethodName,
			cat(strField(2, "k"), mapEntry(4, "a", "ok"), mapEntry(4, "b", bad)), `metadata["b"]`},
		// The interceptor answers before the handler: an unimplemented
		// method says InvalidArgument too.
		{"unimplemented method", ordinalv1.SequencerService_GetNextIds_FullMethodName,
			cat(strField(2, bad), varintField(5, 10)), "key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := invokeRaw(ctx, conn, tc.method, tc.req)
			wantStatus(t, err, codes.InvalidArgument, tc.field+" is not valid UTF-8")
		})
	}

	t.Run("stream", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			req   []byte
			field string
		}{
			{"key", cat(varintField(1, 2), strField(3, bad), varintField(5, 1)), "key"},
			{"store_name", cat(varintField(1, 2), strField(2, bad), strField(3, "k"), varintField(5, 1)), "store_name"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				stream, err := conn.NewStream(ctx, &ordinalv1.SequencerService_ServiceDesc.Streams[0],
					ordinalv1.SequencerService_NextIdStream_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
				if err != nil {
					t.Fatal(err)
				}
				// A valid request first: it is answered.
				valid := cat(varintField(1, 1), strField(3, "k"), varintField(5, 4))
				if err := stream.SendMsg(&valid); err != nil {
					t.Fatal(err)
				}
				var raw []byte
				if err := stream.RecvMsg(&raw); err != nil {
					t.Fatal(err)
				}
				resp := new(ordinalv1.NextIdStreamResponse)
				if err := proto.Unmarshal(raw, resp); err != nil || resp.GetSeq() != 1 || resp.GetCount() != 4 {
					t.Fatalf("response %v, %v", resp, err)
				}
				// Then the invalid one ends the stream.
				if err := stream.SendMsg(&tc.req); err != nil && !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
				err = stream.RecvMsg(&raw)
				wantStatus(t, err, codes.InvalidArgument, tc.field+" is not valid UTF-8")
			})
		}
	})

	t.Run("valid", func(t *testing.T) {
		before := seq.calls.Load()
		raw, err := invokeRaw(ctx, conn, ordinalv1.SequencerService_GetNextId_FullMethodName,
			cat(strField(1, "orders"), strField(2, "ключ"), mapEntry(4, "a", "b")))
		if err != nil {
			t.Fatal(err)
		}
		resp := new(ordinalv1.GetNextIdResponse)
		if err := proto.Unmarshal(raw, resp); err != nil || resp.GetNextId() != 1 {
			t.Fatalf("response %v, %v", resp, err)
		}
		// And through the generated clients, with the default codec.
		got, err := ordinalv1.NewSequencerServiceClient(conn).GetNextId(ctx, &ordinalv1.GetNextIdRequest{Key: "k"})
		if err != nil || got.GetNextId() != 1 {
			t.Fatalf("GetNextId: %v, %v", got, err)
		}
		lgot, err := runtimev1.NewRuntimeClient(conn).GetNextId(ctx, &runtimev1.GetNextIdRequest{Key: "k"})
		if err != nil || lgot.GetNextId() != 1 {
			t.Fatalf("Layotto GetNextId: %v, %v", lgot, err)
		}
		if n := seq.calls.Load() - before; n < 3 {
			t.Fatalf("handlers called %d times", n)
		}
	})

	t.Run("malformed", func(t *testing.T) {
		for name, req := range map[string][]byte{
			"truncated varint":            truncated,
			"invalid key, then truncated": cat(strField(2, bad), truncated),
		} {
			_, err := invokeRaw(ctx, conn, ordinalv1.SequencerService_GetNextId_FullMethodName, req)
			if st, _ := status.FromError(err); st.Code() != codes.Internal ||
				!strings.Contains(st.Message(), "failed to unmarshal") {
				t.Errorf("%s: got %v; want Internal from the codec", name, err)
			}
		}
	})

	if n := pending.len(); n != 0 {
		t.Errorf("%d leniently decoded messages were never checked", n)
	}
}

// Without the codec, grpc-go answers Internal before any interceptor runs:
// the reason this package exists.
func TestServerDefaultCodecSaysInternal(t *testing.T) {
	conn, seq := serve(t, grpc.UnaryInterceptor(UnaryServerInterceptor()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := invokeRaw(ctx, conn, ordinalv1.SequencerService_GetNextId_FullMethodName, strField(2, bad))
	if st, _ := status.FromError(err); st.Code() != codes.Internal ||
		!strings.Contains(st.Message(), "grpc: failed to unmarshal the received message") {
		t.Fatalf("got %v; want grpc's Internal", err)
	}
	if seq.calls.Load() != 0 {
		t.Fatal("a handler ran")
	}
}

// TestProtowireAgreesWithGenerated makes sure the hand-encoded requests
// mean what the tests say they mean.
func TestProtowireAgreesWithGenerated(t *testing.T) {
	got := new(ordinalv1.NextIdStreamRequest)
	wire := cat(varintField(1, 2), strField(2, "s"), strField(3, "k"), bytesField(4, varintField(1, 1)), varintField(5, 7))
	if err := proto.Unmarshal(wire, got); err != nil {
		t.Fatal(err)
	}
	want := &ordinalv1.NextIdStreamRequest{Seq: 2, StoreName: "s", Key: "k", Count: 7,
		Options: &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG}}
	if !proto.Equal(got, want) || len(got.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("decoded %v", got)
	}
}
