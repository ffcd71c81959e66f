package grpccodec

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/typepb"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/api/runtimev1"
)

// bad is not valid UTF-8.
const bad = "k\xffey"

// Wire-format builders for messages the default marshaller refuses.

func strField(num protowire.Number, s string) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func bytesField(num protowire.Number, v []byte) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func varintField(num protowire.Number, v uint64) []byte {
	b := protowire.AppendTag(nil, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func mapEntry(num protowire.Number, k, v string) []byte {
	return bytesField(num, cat(strField(1, k), strField(2, v)))
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// truncated ends inside a varint.
var truncated = []byte{byte(protowire.EncodeTag(5, protowire.VarintType)), 0xff}

func buffers(b []byte) mem.BufferSlice { return mem.BufferSlice{mem.SliceBuffer(b)} }

// TestStrictUTF8ErrorIsRecognised pins how google.golang.org/protobuf
// reports invalid UTF-8. If it fails after an upgrade, isInvalidUTF8 must
// learn the new form, or such requests fail with Internal again.
func TestStrictUTF8ErrorIsRecognised(t *testing.T) {
	b := strField(2, bad)

	// Generated messages: the fast-path decoder's error has an
	// InvalidUTF8() bool method (internal/impl.errInvalidUTF8).
	err := proto.Unmarshal(b, new(ordinalv1.GetNextIdRequest))
	var marker interface{ InvalidUTF8() bool }
	if err == nil || !errors.As(err, &marker) || !marker.InvalidUTF8() {
		t.Fatalf("generated message: error %v has no InvalidUTF8() method returning true", err)
	}
	if !isInvalidUTF8(err) {
		t.Fatalf("generated message: isInvalidUTF8(%v) = false", err)
	}
	// The same through grpc's default codec, which returns it unwrapped.
	err = encoding.GetCodecV2(Name).Unmarshal(buffers(b), new(ordinalv1.GetNextIdRequest))
	if !isInvalidUTF8(err) {
		t.Fatalf("grpc codec: isInvalidUTF8(%v) = false", err)
	}

	// Messages without fast-path methods (dynamicpb): the reflective
	// decoder's errors.InvalidUTF8, recognised by its text.
	dm := dynamicpb.NewMessage((&ordinalv1.GetNextIdRequest{}).ProtoReflect().Descriptor())
	err = proto.Unmarshal(b, dm)
	if err == nil || !errors.Is(err, proto.Error) || !strings.Contains(err.Error(), " contains invalid UTF-8") {
		t.Fatalf("dynamicpb: error %v is not a proto.Error saying \" contains invalid UTF-8\"", err)
	}
	if !isInvalidUTF8(err) {
		t.Fatalf("dynamicpb: isInvalidUTF8(%v) = false", err)
	}

	// Other errors are not taken for it.
	for _, m := range []proto.Message{new(ordinalv1.GetNextIdRequest), dm} {
		err := proto.Unmarshal(truncated, m)
		if err == nil || isInvalidUTF8(err) {
			t.Fatalf("%T: truncated varint: isInvalidUTF8(%v) = true", m, err)
		}
	}
	if isInvalidUTF8(errors.New("field x contains invalid UTF-8")) {
		t.Fatal("a non-proto error was taken for invalid UTF-8")
	}
}

func TestCodecLenientPath(t *testing.T) {
	c := Lenient()
	cases := []struct {
		name  string
		msg   func() proto.Message
		wire  []byte
		field string
		check func(t *testing.T, m proto.Message)
	}{
		{
			name: "key", msg: func() proto.Message { return new(ordinalv1.GetNextIdRequest) },
			wire:  cat(strField(1, "orders"), strField(2, bad)),
			field: "key",
			check: func(t *testing.T, m proto.Message) {
				r := m.(*ordinalv1.GetNextIdRequest)
				if r.GetKey() != bad || r.GetStoreName() != "orders" {
					t.Errorf("decoded %q/%q", r.GetStoreName(), r.GetKey())
				}
			},
		},
		{
			name: "store_name", msg: func() proto.Message { return new(ordinalv1.GetNextIdsRequest) },
			wire:  cat(strField(1, bad), strField(2, "k"), varintField(5, 7)),
			field: "store_name",
			check: func(t *testing.T, m proto.Message) {
				r := m.(*ordinalv1.GetNextIdsRequest)
				if r.GetStoreName() != bad || r.GetKey() != "k" || r.GetCount() != 7 {
					t.Errorf("decoded %v", r)
				}
			},
		},
		{
			name: "metadata key", msg: func() proto.Message { return new(runtimev1.GetNextIdRequest) },
			wire:  cat(strField(2, "k"), mapEntry(4, "ok", "v"), mapEntry(4, bad, "v")),
			field: "metadata key",
			check: func(t *testing.T, m proto.Message) {
				r := m.(*runtimev1.GetNextIdRequest)
				if len(r.GetMetadata()) != 2 || r.GetMetadata()[bad] != "v" {
					t.Errorf("decoded metadata %q", r.GetMetadata())
				}
			},
		},
		{
			name: "metadata value", msg: func() proto.Message { return new(ordinalv1.GetNextIdRequest) },
			wire:  cat(strField(2, "k"), mapEntry(4, "zz", bad), mapEntry(4, "env", bad), mapEntry(4, "a", "fine")),
			field: `metadata["env"]`,
		},
		{
			name: "stream key", msg: func() proto.Message { return new(ordinalv1.NextIdStreamRequest) },
			wire:  cat(varintField(1, 9), strField(3, bad), bytesField(4, varintField(1, 1)), varintField(5, 3)),
			field: "key",
			check: func(t *testing.T, m proto.Message) {
				r := m.(*ordinalv1.NextIdStreamRequest)
				if r.GetSeq() != 9 || r.GetKey() != bad || r.GetCount() != 3 ||
					r.GetOptions().GetIncrement() != ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG {
					t.Errorf("decoded %v", r)
				}
			},
		},
		{
			name: "unknown fields kept", msg: func() proto.Message { return new(ordinalv1.GetNextIdRequest) },
			wire:  cat(varintField(99, 5), strField(2, bad), strField(100, "x"), varintField(2, 3)),
			field: "key",
			check: func(t *testing.T, m proto.Message) {
				want := cat(varintField(99, 5), strField(100, "x"), varintField(2, 3))
				if got := m.ProtoReflect().GetUnknown(); !bytes.Equal(got, want) {
					t.Errorf("unknown fields %x, want %x", got, want)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.msg()
			if err := c.Unmarshal(buffers(tc.wire), m); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if tc.check != nil {
				tc.check(t, m)
			}
			if field, ok := CheckUTF8(m); ok || field != tc.field {
				t.Errorf("CheckUTF8 = %q, %v; want %q, false", field, ok, tc.field)
			}
			if !pending.take(m) {
				t.Error("the message was not marked as leniently decoded")
			}
		})
	}
	if n := pending.len(); n != 0 {
		t.Fatalf("%d entries left", n)
	}
}

func TestCodecValidAndMalformed(t *testing.T) {
	c, def := Lenient(), encoding.GetCodecV2(Name)
	if c.Name() != "proto" {
		t.Fatalf("Name() = %q", c.Name())
	}

	valid := &ordinalv1.GetNextIdRequest{StoreName: "s", Key: "k", Metadata: map[string]string{"a": "b"},
		Options: &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG}}
	big := &ordinalv1.GetNextIdRequest{Key: strings.Repeat("x", 64<<10)} // above grpc's pooling threshold
	for _, m := range []proto.Message{valid, big} {
		got, err := c.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		want, err := def.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Materialize(), want.Materialize()) {
			t.Fatal("Marshal differs from the default codec")
		}
		out := new(ordinalv1.GetNextIdRequest)
		if err := c.Unmarshal(got, out); err != nil || !proto.Equal(out, m) {
			t.Fatalf("round trip: %v, %v", err, out)
		}
		got.Free()
		want.Free()
		if pending.take(out) {
			t.Fatal("a valid message was marked")
		}
	}
	if _, err := c.Marshal(&ordinalv1.GetNextIdRequest{Key: bad}); err == nil {
		t.Fatal("Marshal accepted invalid UTF-8")
	}
	if _, err := c.Marshal("not a message"); err == nil {
		t.Fatal("Marshal accepted a string")
	}

	for name, wire := range map[string][]byte{
		"truncated varint":                truncated,
		"invalid key, then truncated":     cat(strField(2, bad), truncated),
		"invalid key, then bad length":    cat(strField(2, bad), []byte{byte(protowire.EncodeTag(1, protowire.BytesType)), 9, 'x'}),
		"invalid key in a bad map entry":  bytesField(4, cat(strField(1, bad), []byte{0x12, 5})),
		"invalid key, then end group":     cat(strField(2, bad), protowire.AppendTag(nil, 6, protowire.EndGroupType)),
		"invalid key, then field zero":    cat(strField(2, bad), []byte{0x02, 0}),
		"invalid key, then a huge number": cat(strField(2, bad), protowire.AppendTag(nil, protowire.MaxValidNumber+1, protowire.VarintType), []byte{1}),
	} {
		m := new(ordinalv1.GetNextIdRequest)
		if err := c.Unmarshal(buffers(wire), m); err == nil {
			t.Errorf("%s: Unmarshal accepted %x as %v", name, wire, m)
		}
		if pending.take(m) {
			t.Errorf("%s: a rejected message was marked", name)
		}
	}
	if err := c.Unmarshal(buffers(nil), new(string)); err == nil {
		t.Fatal("Unmarshal into a string succeeded")
	}
}

// A string sent twice, invalid and then valid, ends valid: the handler gets
// it as such.
func TestCodecInvalidThenValid(t *testing.T) {
	m := new(ordinalv1.GetNextIdRequest)
	if err := Lenient().Unmarshal(buffers(cat(strField(2, bad), strField(2, "good"))), m); err != nil {
		t.Fatal(err)
	}
	if m.GetKey() != "good" || pending.take(m) {
		t.Fatalf("key %q, marked %v", m.GetKey(), pending.take(m))
	}
}

// dynamicpb messages have no fast-path methods: both decoders use
// protobuf's reflective one.
func TestCodecDynamicMessage(t *testing.T) {
	md := (&ordinalv1.GetNextIdRequest{}).ProtoReflect().Descriptor()
	m := dynamicpb.NewMessage(md)
	if err := Lenient().Unmarshal(buffers(cat(strField(2, "k"), mapEntry(4, "a", bad))), m); err != nil {
		t.Fatal(err)
	}
	defer pending.take(m)
	if field, ok := CheckUTF8(m); ok || field != `metadata["a"]` {
		t.Fatalf("CheckUTF8 = %q, %v", field, ok)
	}
	if got := m.Get(md.Fields().ByName("key")).String(); got != "k" {
		t.Fatalf("key %q", got)
	}
}

func TestCheckUTF8(t *testing.T) {
	str := func(s string) *structpb.Value { return structpb.NewStringValue(s) }
	list := func(vs ...*structpb.Value) *structpb.Value {
		return structpb.NewListValue(&structpb.ListValue{Values: vs})
	}
	cases := []struct {
		name  string
		m     proto.Message
		field string // "" for valid
	}{
		{"nil", nil, ""},
		{"typed nil", (*ordinalv1.GetNextIdRequest)(nil), ""},
		{"empty", &ordinalv1.GetNextIdRequest{}, ""},
		{"valid", &ordinalv1.GetNextIdRequest{StoreName: "s", Key: "ключ", Metadata: map[string]string{"a": "b"}}, ""},
		{"key", &ordinalv1.GetNextIdRequest{Key: bad}, "key"},
		{"declaration order", &ordinalv1.GetNextIdRequest{StoreName: bad, Key: bad}, "store_name"},
		{"map key", &ordinalv1.GetNextIdRequest{Metadata: map[string]string{"a": bad, bad: "x"}}, "metadata key"},
		{"map value", &ordinalv1.GetNextIdRequest{Metadata: map[string]string{"b": bad, "a": bad, "0": "ok"}}, `metadata["a"]`},
		{"long map key", &ordinalv1.GetNextIdRequest{Metadata: map[string]string{strings.Repeat("é", 40): bad}},
			`metadata["` + strings.Repeat("é", 16) + `…"]`},
		{"nested", &structpb.Struct{Fields: map[string]*structpb.Value{
			"x": list(str("ok"), list(str("fine"), str(bad)))}},
			`fields["x"].list_value.values[1].list_value.values[1].string_value`},
		{"repeated string", &typepb.Type{Name: "t", Oneofs: []string{"a", bad}}, "oneofs[1]"},
		{"repeated message", &typepb.Type{Fields: []*typepb.Field{{Name: "f"}, {Name: "g", JsonName: bad}}}, "fields[1].json_name"},
		// proto2 strings are not validated by protobuf, so not here either.
		{"proto2", &descriptorpb.FileDescriptorProto{Name: proto.String(bad)}, ""},
	}
	for _, tc := range cases {
		field, ok := CheckUTF8(tc.m)
		if ok != (tc.field == "") || field != tc.field {
			t.Errorf("%s: CheckUTF8 = %q, %v; want %q", tc.name, field, ok, tc.field)
		}
	}
}

// TestCheckUTF8Editions: in editions, a string is validated unless its
// utf8_validation feature is NONE; the lenient decoder handles delimited
// (group-encoded) messages.
func TestCheckUTF8Editions(t *testing.T) {
	md := testMessage(t, "editions")
	raw, verified := md.Fields().ByName("raw"), md.Fields().ByName("s")
	m := dynamicpb.NewMessage(md)
	m.Set(raw, protoreflect.ValueOfString(bad))
	if field, ok := CheckUTF8(m); !ok {
		t.Fatalf("utf8_validation NONE was checked: %q", field)
	}
	child := m.Mutable(md.Fields().ByName("child")).Message()
	child.Set(verified, protoreflect.ValueOfString(bad))
	if field, ok := CheckUTF8(m); ok || field != "child.s" {
		t.Fatalf("CheckUTF8 = %q, %v; want child.s", field, ok)
	}
	if md.Fields().ByName("child").Kind() != protoreflect.GroupKind {
		t.Fatal("child is not delimited")
	}

	// Strict rejects the delimited child's string; lenient decodes it.
	wire := cat(strField(2, bad),
		protowire.AppendTag(nil, 4, protowire.StartGroupType), strField(1, bad), protowire.AppendTag(nil, 4, protowire.EndGroupType))
	if err := proto.Unmarshal(wire, dynamicpb.NewMessage(md)); !isInvalidUTF8(err) {
		t.Fatalf("strict: %v", err)
	}
	got := dynamicpb.NewMessage(md)
	if err := unmarshalLenient(wire, got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, m) {
		t.Fatalf("lenient decoded %v, want %v", got, m)
	}
}

// TestLenientSetCleanup: an entry whose message is never taken goes away
// with the message; a global message works too.
func TestLenientSetCleanup(t *testing.T) {
	func() {
		for range 10 {
			if !pending.add(new(ordinalv1.GetNextIdRequest)) {
				t.Fatal("add failed")
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for pending.len() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d entries left after GC", pending.len())
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}

	if !pending.add(&globalMessage) || !pending.take(&globalMessage) || pending.take(&globalMessage) {
		t.Fatal("global message")
	}
	if pending.add(42) || pending.add(nil) || pending.add((*ordinalv1.GetNextIdRequest)(nil)) {
		t.Fatal("added a non-pointer")
	}
}

var globalMessage ordinalv1.GetNextIdRequest
