package grpccodec

import (
	"errors"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

var (
	errDecode    = errors.New("grpccodec: cannot parse invalid wire-format data")
	errRecursion = errors.New("grpccodec: exceeded maximum recursion depth")
)

// unmarshalLenient replaces m with the message encoded in b, as
// proto.Unmarshal does, except that string fields are not checked for valid
// UTF-8.
//
// It walks the wire format itself only for the fields UTF-8 validation
// touches (see lenientDecoder.intercepts); every other field is left to
// proto.Unmarshal with Merge, a run of consecutive fields at a time, so that
// their decoding is protobuf's own.
func unmarshalLenient(b []byte, m proto.Message) error {
	proto.Reset(m)
	d := lenientDecoder{resolver: protoregistry.GlobalTypes}
	if _, err := d.message(b, m.ProtoReflect(), 0, protowire.DefaultRecursionLimit); err != nil {
		return err
	}
	return proto.CheckInitialized(m)
}

type lenientDecoder struct {
	resolver protoregistry.ExtensionTypeResolver
}

// message merges the fields encoded in b into m. If group is not 0, b
// starts with the content of that group field: message stops after its
// end-group tag and returns the number of bytes consumed, that tag
// included. depth counts as protobuf's RecursionLimit does: entering a
// message takes one, and below zero is an error.
func (d lenientDecoder) message(b []byte, m protoreflect.Message, group protowire.Number, depth int) (int, error) {
	if depth--; depth < 0 {
		return 0, errRecursion
	}
	md := m.Descriptor()
	fields := md.Fields()
	extensible := md.ExtensionRanges().Len() > 0
	run, pos := 0, 0 // b[run:pos] is not yet decoded
	for pos < len(b) {
		start := pos
		num, wtyp, n := protowire.ConsumeTag(b[pos:])
		if n < 0 {
			return 0, errDecode
		}
		pos += n
		if wtyp == protowire.EndGroupType {
			if num != group {
				return 0, errDecode
			}
			return pos, d.strict(b[run:start], m, depth)
		}
		fd := fields.ByNumber(num)
		if fd == nil && extensible {
			xt, err := d.resolver.FindExtensionByNumber(md.FullName(), num)
			switch {
			case err == nil:
				fd = xt.TypeDescriptor()
			case !errors.Is(err, protoregistry.NotFound):
				return 0, err
			}
		}
		if fd == nil || !intercepts(fd, wtyp) {
			n := protowire.ConsumeFieldValue(num, wtyp, b[pos:])
			if n < 0 {
				return 0, errDecode
			}
			pos += n
			continue
		}
		if err := d.strict(b[run:start], m, depth); err != nil {
			return 0, err
		}
		n, err := d.field(b[pos:], m, fd, num, depth)
		if err != nil {
			return 0, err
		}
		pos += n
		run = pos
	}
	if group != 0 {
		return 0, errDecode
	}
	return pos, d.strict(b[run:], m, depth)
}

// strict merges the fields encoded in b into m with proto.Unmarshal. depth
// is what message left after entering m.
func (d lenientDecoder) strict(b []byte, m protoreflect.Message, depth int) error {
	if len(b) == 0 {
		return nil
	}
	return proto.UnmarshalOptions{
		Merge:          true,
		AllowPartial:   true, // unmarshalLenient checks the whole message
		Resolver:       d.resolver,
		RecursionLimit: depth + 1, // it enters m again
	}.Unmarshal(b, m.Interface())
}

// intercepts reports whether the field is decoded by the lenient decoder
// rather than proto.Unmarshal: a string, message, group or map field that
// may hold a string, arriving with its own wire type (with another, protobuf
// keeps it as an unknown field).
func intercepts(fd protoreflect.FieldDescriptor, wtyp protowire.Type) bool {
	if fd.IsMap() {
		k, v := fd.MapKey().Kind(), fd.MapValue().Kind()
		return wtyp == protowire.BytesType &&
			(k == protoreflect.StringKind || v == protoreflect.StringKind || v == protoreflect.MessageKind)
	}
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.MessageKind:
		return wtyp == protowire.BytesType
	case protoreflect.GroupKind:
		return wtyp == protowire.StartGroupType
	}
	return false
}

// field decodes the value of a field that intercepts accepted; b starts
// after the tag. It returns the number of bytes consumed.
func (d lenientDecoder) field(b []byte, m protoreflect.Message, fd protoreflect.FieldDescriptor, num protowire.Number, depth int) (int, error) {
	if fd.IsMap() {
		return d.mapEntry(b, m.Mutable(fd).Map(), fd, depth)
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return 0, errDecode
		}
		s := protoreflect.ValueOfString(string(v))
		if fd.IsList() {
			m.Mutable(fd).List().Append(s)
		} else {
			m.Set(fd, s)
		}
		return n, nil
	case protoreflect.MessageKind:
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return 0, errDecode
		}
		if _, err := d.submessage(v, m, fd, 0, depth); err != nil {
			return 0, err
		}
		return n, nil
	default: // GroupKind
		return d.submessage(b, m, fd, num, depth)
	}
}

// submessage merges b into the message held by fd in m, or into a new
// element appended to it if fd is a list. group is as for message, whose
// result it returns.
func (d lenientDecoder) submessage(b []byte, m protoreflect.Message, fd protoreflect.FieldDescriptor, group protowire.Number, depth int) (int, error) {
	if !fd.IsList() {
		return d.message(b, m.Mutable(fd).Message(), group, depth)
	}
	list := m.Mutable(fd).List()
	elem := list.NewElement()
	n, err := d.message(b, elem.Message(), group, depth)
	if err != nil {
		return 0, err
	}
	list.Append(elem)
	return n, nil
}

// mapEntry decodes one map entry (b starts with its length) into mp, as
// protobuf does: a missing key or value is the default; fields other than
// key and value, or with another wire type, are skipped; a message value
// given twice is merged; the entry replaces one of the same key.
func (d lenientDecoder) mapEntry(b []byte, mp protoreflect.Map, fd protoreflect.FieldDescriptor, depth int) (int, error) {
	if depth--; depth < 0 {
		return 0, errRecursion
	}
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return 0, errDecode
	}
	kd, vd := fd.MapKey(), fd.MapValue()
	key := kd.Default()
	var val protoreflect.Value
	if vd.Kind() == protoreflect.MessageKind {
		val = mp.NewValue()
	} else {
		val = vd.Default()
	}
	for len(v) > 0 {
		num, wtyp, tn := protowire.ConsumeTag(v)
		if tn < 0 || num > protowire.MaxValidNumber {
			return 0, errDecode
		}
		v = v[tn:]
		fn := protowire.ConsumeFieldValue(num, wtyp, v)
		if fn < 0 {
			return 0, errDecode
		}
		switch {
		case num == 1 && wtyp == wireType(kd.Kind()):
			key = scalar(kd.Kind(), v[:fn])
		case num == 2 && wtyp == wireType(vd.Kind()):
			if vd.Kind() == protoreflect.MessageKind {
				c, _ := protowire.ConsumeBytes(v)
				if _, err := d.message(c, val.Message(), 0, depth); err != nil {
					return 0, err
				}
			} else {
				val = scalar(vd.Kind(), v[:fn])
			}
		}
		v = v[fn:]
	}
	mp.Set(key.MapKey(), val)
	return n, nil
}

// wireType is the wire type of a singular field of kind k.
func wireType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	}
	return protowire.VarintType
}

// scalar decodes a non-message value of kind k; b is exactly the value, of
// the kind's wire type, as protowire.ConsumeFieldValue delimited it. The
// conversions are protobuf's (internal/impl/codec_gen.go).
func scalar(k protoreflect.Kind, b []byte) protoreflect.Value {
	switch wireType(k) {
	case protowire.Fixed32Type:
		v, _ := protowire.ConsumeFixed32(b)
		switch k {
		case protoreflect.FloatKind:
			return protoreflect.ValueOfFloat32(math.Float32frombits(v))
		case protoreflect.Sfixed32Kind:
			return protoreflect.ValueOfInt32(int32(v))
		}
		return protoreflect.ValueOfUint32(v)
	case protowire.Fixed64Type:
		v, _ := protowire.ConsumeFixed64(b)
		switch k {
		case protoreflect.DoubleKind:
			return protoreflect.ValueOfFloat64(math.Float64frombits(v))
		case protoreflect.Sfixed64Kind:
			return protoreflect.ValueOfInt64(int64(v))
		}
		return protoreflect.ValueOfUint64(v)
	case protowire.BytesType:
		v, _ := protowire.ConsumeBytes(b)
		if k == protoreflect.StringKind {
			return protoreflect.ValueOfString(string(v))
		}
		return protoreflect.ValueOfBytes(append([]byte{}, v...))
	}
	v, _ := protowire.ConsumeVarint(b)
	switch k {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(protowire.DecodeBool(v))
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(v))
	case protoreflect.Int32Kind:
		return protoreflect.ValueOfInt32(int32(v))
	case protoreflect.Sint32Kind:
		return protoreflect.ValueOfInt32(int32(protowire.DecodeZigZag(v & 0xffffffff)))
	case protoreflect.Uint32Kind:
		return protoreflect.ValueOfUint32(uint32(v))
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(int64(v))
	case protoreflect.Sint64Kind:
		return protoreflect.ValueOfInt64(protowire.DecodeZigZag(v))
	}
	return protoreflect.ValueOfUint64(v)
}
