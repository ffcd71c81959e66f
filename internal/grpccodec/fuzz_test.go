package grpccodec

import (
	"testing"

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

// fuzzTypes are the message types FuzzLenientUnmarshal decodes into:
// ordinal's requests, well-known types with repeated strings, nested and
// recursive messages, maps of messages and oneofs, a proto2 type with
// extension ranges and closed enums, and dynamic messages (protobuf's
// reflective decoder) in editions, with delimited fields and extensions,
// and in proto3.
func fuzzTypes(t testing.TB) []func() proto.Message {
	editions, proto3 := testMessage(t, "editions"), testMessage(t, "proto3")
	structDesc := (&structpb.Struct{}).ProtoReflect().Descriptor()
	return []func() proto.Message{
		func() proto.Message { return new(ordinalv1.GetNextIdRequest) },
		func() proto.Message { return new(ordinalv1.NextIdStreamRequest) },
		func() proto.Message { return new(runtimev1.GetNextIdRequest) },
		func() proto.Message { return new(structpb.Struct) },
		func() proto.Message { return new(typepb.Type) },
		func() proto.Message { return new(descriptorpb.FileDescriptorProto) },
		func() proto.Message { return dynamicpb.NewMessage(editions) },
		func() proto.Message { return dynamicpb.NewMessage(proto3) },
		func() proto.Message { return dynamicpb.NewMessage(structDesc) },
	}
}

// FuzzLenientUnmarshal: the lenient decoder never panics; it accepts every
// message the strict decoder (proto.Unmarshal) accepts and yields an equal
// one; it rejects every message the strict decoder rejects for another
// reason than invalid UTF-8.
func FuzzLenientUnmarshal(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed.which, seed.wire)
	}
	types := fuzzTypes(f)
	c := Lenient()
	f.Fuzz(func(t *testing.T, which uint8, b []byte) {
		newMessage := types[int(which)%len(types)]
		strict := newMessage()
		panicked, serr := unmarshalStrict(b, strict)
		if panicked != nil {
			// protobuf's reflective decoder (dynamicpb) panics on a map
			// entry whose key is followed by a key of another wire type
			// (proto/decode.go unmarshalMap, v1.36.12); generated
			// messages, the only ones the servers decode, are not
			// affected. The lenient decoder hands such map fields to it
			// too, so there is nothing to compare: only a dynamic
			// message may panic.
			if _, dynamic := strict.(*dynamicpb.Message); !dynamic {
				t.Fatalf("%T (generated): proto.Unmarshal panicked on %x: %v", strict, b, panicked)
			}
			return
		}
		lenient := newMessage()
		lerr := unmarshalLenient(b, lenient)
		switch {
		case serr == nil:
			if lerr != nil {
				t.Fatalf("%T: strict accepted %x, lenient: %v", strict, b, lerr)
			}
			if !proto.Equal(strict, lenient) {
				t.Fatalf("%T: decoding %x\nstrict:  %v\nlenient: %v", strict, b, strict, lenient)
			}
			if field, ok := CheckUTF8(lenient); !ok {
				t.Fatalf("%T: CheckUTF8 rejects %q of %x, which strict accepted", strict, field, b)
			}
		case !isInvalidUTF8(serr):
			if lerr == nil {
				t.Fatalf("%T: strict rejected %x (%v), lenient accepted: %v", strict, b, serr, lenient)
			}
		case lerr == nil:
			CheckUTF8(lenient)
		}

		// The codec: never panics, and marks exactly the messages it
		// decoded despite invalid UTF-8.
		m := newMessage()
		err := c.Unmarshal(buffers(b), m)
		marked := pending.take(m)
		if marked && err != nil {
			t.Fatalf("%T: marked a rejected message", m)
		}
		if marked {
			if _, ok := CheckUTF8(m); ok {
				t.Fatalf("%T: marked a valid message", m)
			}
		} else if err == nil {
			if field, ok := CheckUTF8(m); !ok {
				t.Fatalf("%T: accepted invalid %q unmarked", m, field)
			}
		}
	})
}

type fuzzSeed struct {
	which uint8
	wire  []byte
}

func fuzzSeeds(t testing.TB) []fuzzSeed {
	marshal := func(m proto.Message) []byte {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	seeds := []fuzzSeed{
		{0, marshal(&ordinalv1.GetNextIdRequest{StoreName: "s", Key: "k", Metadata: map[string]string{"a": "b"},
			Options: &ordinalv1.SequencerOptions{Increment: ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG}})},
		{0, cat(strField(1, bad), strField(2, "k"), mapEntry(4, bad, bad))},
		{0, cat(strField(2, bad), strField(2, "k"))},
		{0, cat(strField(2, bad), truncated)},
		// A map key followed by a key of another wire type (skipped).
		{0, bytesField(4, cat(strField(1, "0"), protowire.AppendFixed64(protowire.AppendTag(nil, 1, protowire.Fixed64Type), 0)))},
		{1, marshal(&ordinalv1.NextIdStreamRequest{Seq: 3, Key: "k", Count: 10})},
		{1, cat(varintField(1, 3), strField(3, bad), varintField(5, 10))},
		{2, cat(strField(2, "k"), mapEntry(4, "a", bad))},
		{3, marshal(&structpb.Struct{Fields: map[string]*structpb.Value{
			"a": structpb.NewStringValue("x"), "b": structpb.NewListValue(&structpb.ListValue{
				Values: []*structpb.Value{structpb.NewNumberValue(1), structpb.NewBoolValue(true)}})}})},
		{3, bytesField(1, cat(strField(1, "a"), bytesField(2, strField(3, bad))))},
		{4, marshal(&typepb.Type{Name: "t", Oneofs: []string{"o"}, Fields: []*typepb.Field{{Name: "f", Number: 1}}})},
		{4, cat(strField(1, "t"), strField(3, bad), bytesField(2, strField(4, bad)))},
		{5, marshal(&descriptorpb.FileDescriptorProto{Name: proto.String("x.proto"),
			MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String("M")}},
			Options:     &descriptorpb.FileOptions{GoPackage: proto.String("x")}})},
		{5, cat(strField(1, bad), bytesField(4, strField(1, bad)))},
	}
	// Dynamic messages (see testMessage): fields 1 s, 2 raw, 3 rs,
	// 4 child (delimited in editions), 5 children, 6 mm, 7 ms, 8 mi, 9-11
	// oneof, 12 packed, 13 e, 14 b, 15 me, 16 delimited, 17 mb, 18 md,
	// extensions 100 xs, 101 xrs, 102 xm.
	child := cat(strField(1, "c"), strField(3, bad))
	dyn := [][]byte{
		cat(strField(1, "s"), strField(2, bad), strField(3, "a"), strField(3, bad)),
		cat(group(4, child), bytesField(5, child), bytesField(5, nil)),
		cat(bytesField(6, cat(strField(1, "k"), bytesField(2, child))), bytesField(7, cat(varintField(1, 7), strField(2, bad)))),
		cat(bytesField(8, cat(strField(1, bad), varintField(2, 9))), bytesField(15, cat(strField(1, "e"), varintField(2, 5)))),
		cat(strField(9, bad), bytesField(10, child), varintField(11, 4), strField(9, "x")),
		cat(bytesField(12, []byte{1, 2, 3}), varintField(12, 4), varintField(13, 7), bytesField(14, []byte{0xff})),
		cat(group(16, child), group(16), bytesField(17, cat(strField(1, "b"), bytesField(2, []byte{0xff})))),
		cat(bytesField(18, cat(varintField(1, 1), protowire.AppendFixed64(protowire.AppendTag(nil, 2, protowire.Fixed64Type), 0x3ff0000000000000)))),
		cat(strField(100, bad), strField(101, bad), strField(101, "x"), bytesField(102, child), varintField(150, 1)),
		cat(strField(1, "s"), varintField(1, 5), bytesField(4, child), group(5, child)),
	}
	for _, b := range dyn {
		seeds = append(seeds, fuzzSeed{6, b}, fuzzSeed{7, b})
	}
	seeds = append(seeds, fuzzSeed{8, bytesField(1, cat(strField(1, bad), bytesField(2, strField(3, "v"))))})
	return seeds
}

// TestFuzzSeeds runs the seeds' cases with more precise expectations than
// the fuzz target checks.
func TestFuzzSeeds(t *testing.T) {
	types := fuzzTypes(t)
	for i, seed := range fuzzSeeds(t) {
		newMessage := types[seed.which]
		strict, lenient := newMessage(), newMessage()
		serr := proto.Unmarshal(seed.wire, strict)
		lerr := unmarshalLenient(seed.wire, lenient)
		if serr == nil && (lerr != nil || !proto.Equal(strict, lenient)) {
			t.Errorf("seed %d (%T): strict %v, lenient %v (%v)", i, strict, strict, lenient, lerr)
		}
		if serr != nil && !isInvalidUTF8(serr) && lerr == nil {
			t.Errorf("seed %d (%T): strict rejected (%v), lenient accepted", i, strict, serr)
		}
	}

	// The editions extensions, delimited fields and oneof decode leniently.
	md := testMessage(t, "editions")
	m := dynamicpb.NewMessage(md)
	b := cat(strField(100, bad), strField(101, bad), strField(101, "x"), bytesField(102, strField(1, bad)),
		strField(9, "first"), strField(9, bad), group(16, strField(1, bad)))
	if err := proto.Unmarshal(b, dynamicpb.NewMessage(md)); !isInvalidUTF8(err) {
		t.Fatalf("strict: %v", err)
	}
	if err := unmarshalLenient(b, m); err != nil {
		t.Fatal(err)
	}
	if field, ok := CheckUTF8(m); ok || field != "os" {
		t.Fatalf("CheckUTF8 = %q, %v; want os", field, ok)
	}
	m.Clear(md.Fields().ByName("os"))
	if field, ok := CheckUTF8(m); ok || field != "delimited[0].s" {
		t.Fatalf("CheckUTF8 = %q, %v; want delimited[0].s", field, ok)
	}
	m.Clear(md.Fields().ByName("delimited"))
	// xs is a singular extension string in an editions file: protobuf's
	// extension descriptors do not expose EnforceUTF8, so it is not
	// validated, by protobuf nor here; xrs, repeated, neither.
	if field, ok := CheckUTF8(m); ok || field != "[grpccodec.test.editions.xm].s" {
		t.Fatalf("CheckUTF8 = %q, %v; want the xm extension", field, ok)
	}
	var xs protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Name() == "xs" {
			xs = fd
		}
		return true
	})
	if xs == nil || m.Get(xs).String() != bad {
		t.Fatal("extension xs not decoded")
	}
}

// group encodes a group (delimited) field.
func group(num protowire.Number, content ...[]byte) []byte {
	return cat(protowire.AppendTag(nil, num, protowire.StartGroupType), cat(content...),
		protowire.AppendTag(nil, num, protowire.EndGroupType))
}

// unmarshalStrict is proto.Unmarshal, returning a panic's value.
func unmarshalStrict(b []byte, m proto.Message) (panicked any, err error) {
	defer func() { panicked = recover() }()
	return nil, proto.Unmarshal(b, m)
}
