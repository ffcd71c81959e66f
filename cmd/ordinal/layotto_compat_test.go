package main

import (
	"context"
	"fmt"
	"github.com/ordinal-dev/ordinal/internal/testcluster"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// The Layotto wire contract, written down from Layotto's
// spec/proto/runtime/v1/runtime.proto rather than taken from ordinal's own
// generated code, so that a change to ordinal's .proto files that breaks
// existing Layotto clients fails this test instead of passing with it.
const (
	runtimeGetNextID = "/spec.proto.runtime.v1.Runtime/GetNextId"

	// GetNextIdRequest fields.
	reqStoreName protowire.Number = 1 // string
	reqKey       protowire.Number = 2 // string
	reqOptions   protowire.Number = 3 // SequencerOptions
	reqMetadata  protowire.Number = 4 // map<string, string>

	// SequencerOptions fields and AutoIncrement values.
	optIncrement protowire.Number = 1 // enum
	incWeak                       = 0
	incStrong                     = 1

	// GetNextIdResponse fields.
	respNextID protowire.Number = 1 // int64
)

// layottoRequest is a GetNextIdRequest as a Layotto client builds it.
type layottoRequest struct {
	store, key string
	// increment is the SequencerOptions.increment to send; nil sends no
	// options field at all, as Layotto's demo does.
	increment *uint64
	metadata  map[string]string
}

// encode writes the request field by field in the protobuf wire format.
func (r layottoRequest) encode() []byte {
	var b []byte
	if r.store != "" {
		b = protowire.AppendTag(b, reqStoreName, protowire.BytesType)
		b = protowire.AppendString(b, r.store)
	}
	if r.key != "" {
		b = protowire.AppendTag(b, reqKey, protowire.BytesType)
		b = protowire.AppendString(b, r.key)
	}
	if r.increment != nil {
		var opts []byte
		if *r.increment != 0 { // proto3 leaves zero values out
			opts = protowire.AppendTag(opts, optIncrement, protowire.VarintType)
			opts = protowire.AppendVarint(opts, *r.increment)
		}
		b = protowire.AppendTag(b, reqOptions, protowire.BytesType)
		b = protowire.AppendBytes(b, opts)
	}
	keys := make([]string, 0, len(r.metadata))
	for k := range r.metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		// A map entry is a message with the key as field 1 and the value
		// as field 2.
		var entry []byte
		entry = protowire.AppendTag(entry, 1, protowire.BytesType)
		entry = protowire.AppendString(entry, k)
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendString(entry, r.metadata[k])
		b = protowire.AppendTag(b, reqMetadata, protowire.BytesType)
		b = protowire.AppendBytes(b, entry)
	}
	return b
}

// decodeNextID reads GetNextIdResponse.next_id, skipping unknown fields as
// a Layotto client would. An absent field is proto3's zero.
func decodeNextID(b []byte) (int64, error) {
	var id int64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, fmt.Errorf("bad tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num == respNextID && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, fmt.Errorf("bad next_id: %w", protowire.ParseError(n))
			}
			id, b = int64(v), b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, fmt.Errorf("bad field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return id, nil
}

// rawCodec sends and receives message bytes as they are, so that the test
// controls every byte on the wire. It is named "proto" so that the request
// carries the content type a Layotto client sends, application/grpc+proto.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*p = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// invokeRaw calls method with req's bytes and returns the reply's bytes.
func invokeRaw(ctx context.Context, conn *grpc.ClientConn, method string, req []byte) ([]byte, error) {
	var reply []byte
	err := conn.Invoke(ctx, method, req, &reply, grpc.ForceCodecV2(rawCodec{}))
	return reply, err
}

func ptr[T any](v T) *T { return &v }

// TestLayottoWireCompat checks that ordinal answers Layotto's
// Runtime/GetNextId for requests encoded by hand from Layotto's field
// numbers alone.
func TestLayottoWireCompat(t *testing.T) {
	t.Parallel()
	conn := testcluster.Single(t).Conn()

	tests := []struct {
		name string
		req  layottoRequest
		// want lists the exact ids expected from successive calls; nil
		// means only that they strictly increase.
		want []int64
	}{
		{"no options on a fresh key", layottoRequest{store: "sequencer_demo", key: "key666"},
			[]int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"metadata is accepted", layottoRequest{store: "sequencer_demo", key: "with_metadata",
			metadata: map[string]string{"trace-id": "abc", "tenant": "t1"}}, []int64{1, 2, 3}},
		{"explicit WEAK options", layottoRequest{store: "sequencer_demo", key: "explicit_weak",
			increment: ptr[uint64](incWeak)}, []int64{1, 2, 3}},
		{"no store name uses the default store", layottoRequest{key: "no_store"}, []int64{1, 2}},
		{"STRONG increases strictly", layottoRequest{store: "sequencer_demo", key: "strong",
			increment: ptr[uint64](incStrong), metadata: map[string]string{"k": "v"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			calls := len(tt.want)
			if tt.want == nil {
				calls = 10
			}
			var got []int64
			for range calls {
				reply, err := invokeRaw(ctx, conn, runtimeGetNextID, tt.req.encode())
				if err != nil {
					t.Fatalf("GetNextId after %v: %v", got, err)
				}
				id, err := decodeNextID(reply)
				if err != nil {
					t.Fatalf("decode reply %x: %v", reply, err)
				}
				got = append(got, id)
			}
			if tt.want != nil && !slices.Equal(got, tt.want) {
				t.Fatalf("ids %v, want %v", got, tt.want)
			}
			for i := 1; i < len(got); i++ {
				if got[i] <= got[i-1] {
					t.Fatalf("ids %v do not strictly increase", got)
				}
			}
		})
	}
}

// TestLayottoWireErrors checks the status codes a Layotto client sees for
// what ordinal does not serve.
func TestLayottoWireErrors(t *testing.T) {
	t.Parallel()
	conn := testcluster.Single(t).Conn()
	tests := []struct {
		name   string
		method string
		req    layottoRequest
		want   codes.Code
	}{
		{"other Runtime method", "/spec.proto.runtime.v1.Runtime/SayHello", layottoRequest{key: "k"}, codes.Unimplemented},
		{"other Runtime method with a body", "/spec.proto.runtime.v1.Runtime/GetState", layottoRequest{store: "s", key: "k"}, codes.Unimplemented},
		{"missing key", runtimeGetNextID, layottoRequest{store: "s"}, codes.InvalidArgument},
		{"unknown increment", runtimeGetNextID, layottoRequest{key: "k", increment: ptr[uint64](7)}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := invokeRaw(ctx, conn, tt.method, tt.req.encode())
			if got := status.Code(err); got != tt.want {
				t.Fatalf("%s: code %v (%v), want %v", tt.method, got, err, tt.want)
			}
		})
	}
}

// TestDecodeNextID checks the hand decoder itself, since the compat test is
// only as good as it.
func TestDecodeNextID(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    int64
		wantErr bool
	}{
		{"empty is zero", nil, 0, false},
		{"next_id 1", []byte{0x08, 0x01}, 1, false},
		{"next_id 300", []byte{0x08, 0xac, 0x02}, 300, false},
		{"unknown field skipped", []byte{0x12, 0x01, 'x', 0x08, 0x05}, 5, false},
		{"truncated varint", []byte{0x08, 0xac}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeNextID(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("decodeNextID(%x) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}
