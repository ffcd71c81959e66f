package grpccodec

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
)

// smallRequest is a typical request: store, key and mode.
var smallRequest = &ordinalv1.GetNextIdRequest{StoreName: "orders", Key: "order_table",
	Options: &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG}}

// BenchmarkUnmarshal decodes a valid request with grpc's default codec and
// with Lenient, and an invalid one with Lenient (the rare path: strict
// decode, lenient decode, CheckUTF8, side table).
func BenchmarkUnmarshal(b *testing.B) {
	wire, err := proto.Marshal(smallRequest)
	if err != nil {
		b.Fatal(err)
	}
	invalid := cat(strField(1, "orders"), strField(2, bad), bytesField(3, varintField(1, 1)))
	for _, bc := range []struct {
		name  string
		codec encoding.CodecV2
		wire  []byte
	}{
		{"default", encoding.GetCodecV2(Name), wire},
		{"lenient", Lenient(), wire},
		{"lenient-invalid", Lenient(), invalid},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			data := buffers(bc.wire)
			for b.Loop() {
				m := new(ordinalv1.GetNextIdRequest)
				if err := bc.codec.Unmarshal(data, m); err != nil {
					b.Fatal(err)
				}
				pending.take(m)
			}
		})
	}
}

// BenchmarkCheckUTF8 walks a valid small request, and one with metadata.
func BenchmarkCheckUTF8(b *testing.B) {
	withMetadata := proto.Clone(smallRequest).(*ordinalv1.GetNextIdRequest)
	withMetadata.Metadata = map[string]string{"trace": "abc", "tenant": "t1"}
	for name, m := range map[string]proto.Message{"small": smallRequest, "metadata": withMetadata} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := CheckUTF8(m); !ok {
					b.Fatal("invalid")
				}
			}
		})
	}
}

// BenchmarkInterceptor is the unary interceptor's cost on a valid request,
// against calling the handler directly, and what checking every request
// with CheckUTF8 would cost instead.
func BenchmarkInterceptor(b *testing.B) {
	handler := func(ctx context.Context, req any) (any, error) { return req, nil }
	info := &grpc.UnaryServerInfo{FullMethod: ordinalv1.SequencerService_GetNextId_FullMethodName}
	ctx := context.Background()
	every := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if _, ok := CheckUTF8(messageV2Of(req)); !ok {
			return nil, nil
		}
		return h(ctx, req)
	}
	for _, bc := range []struct {
		name        string
		interceptor grpc.UnaryServerInterceptor
	}{
		{"none", func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(ctx, req)
		}},
		{"side-table", UnaryServerInterceptor()},
		{"check-every-request", every},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.interceptor(ctx, smallRequest, info, handler); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
