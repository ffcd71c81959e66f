package grpccodec

import (
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// CheckUTF8 reports whether every string field of m that protobuf requires
// to be valid UTF-8 (proto3 strings; in editions, strings whose
// utf8_validation feature is VERIFY) is valid UTF-8, walking m through
// protoreflect. When one is not, ok is false and field names the first one,
// in field declaration order (extensions last, by number), as a path from m:
//
//	key                     a field of m
//	options.name            a field of a message field
//	tags[2]                 an element of a repeated field
//	metadata key            a key of a map field
//	metadata["env"]         the value of a map field for a key (the
//	                        smallest such key; long keys are shortened)
//	[pkg.ext]               an extension field
//
// Strings in proto2 files, which protobuf does not validate, are not
// checked. A nil m is valid.
func CheckUTF8(m proto.Message) (field string, ok bool) {
	if m == nil {
		return "", true
	}
	rm := m.ProtoReflect()
	if !rm.IsValid() {
		return "", true
	}
	return checkMessage(rm)
}

func checkMessage(m protoreflect.Message) (string, bool) {
	md := m.Descriptor()
	fields := md.Fields()
	for i, n := 0, fields.Len(); i < n; i++ {
		fd := fields.Get(i)
		if !mayHoldString(fd) || !m.Has(fd) {
			continue
		}
		if path, ok := checkField(fd, m.Get(fd)); !ok {
			return path, false
		}
	}
	if md.ExtensionRanges().Len() == 0 {
		return "", true
	}
	var exts []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if fd.IsExtension() && mayHoldString(fd) {
			exts = append(exts, fd)
		}
		return true
	})
	slices.SortFunc(exts, func(a, b protoreflect.FieldDescriptor) int { return int(a.Number()) - int(b.Number()) })
	for _, fd := range exts {
		if path, ok := checkField(fd, m.Get(fd)); !ok {
			return path, false
		}
	}
	return "", true
}

// mayHoldString reports whether a value of fd can contain a string.
func mayHoldString(fd protoreflect.FieldDescriptor) bool {
	if fd.IsMap() {
		v := fd.MapValue().Kind()
		return fd.MapKey().Kind() == protoreflect.StringKind ||
			v == protoreflect.StringKind || v == protoreflect.MessageKind
	}
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.MessageKind, protoreflect.GroupKind:
		return true
	}
	return false
}

// checkField checks the value v of the field fd, which mayHoldString.
func checkField(fd protoreflect.FieldDescriptor, v protoreflect.Value) (string, bool) {
	name := string(fd.Name())
	if fd.IsExtension() {
		name = "[" + string(fd.FullName()) + "]"
	}
	switch {
	case fd.IsMap():
		return checkMap(name, fd, v.Map())
	case fd.IsList():
		list := v.List()
		strs := fd.Kind() == protoreflect.StringKind
		if strs && !validated(fd) {
			break
		}
		for i, n := 0, list.Len(); i < n; i++ {
			var sub string
			var bad bool
			if strs {
				bad = !utf8.ValidString(list.Get(i).String())
			} else if p, ok := checkMessage(list.Get(i).Message()); !ok {
				sub, bad = "."+p, true
			}
			if bad {
				return name + "[" + strconv.Itoa(i) + "]" + sub, false
			}
		}
	case fd.Kind() == protoreflect.StringKind:
		if validated(fd) && !utf8.ValidString(v.String()) {
			return name, false
		}
	default:
		if p, ok := checkMessage(v.Message()); !ok {
			return name + "." + p, false
		}
	}
	return "", true
}

func checkMap(name string, fd protoreflect.FieldDescriptor, mp protoreflect.Map) (string, bool) {
	kd, vd := fd.MapKey(), fd.MapValue()
	keys := kd.Kind() == protoreflect.StringKind && validated(kd)
	values := vd.Kind() == protoreflect.StringKind && validated(vd)
	messages := vd.Kind() == protoreflect.MessageKind
	var (
		badKey   bool
		found    bool
		firstKey protoreflect.MapKey
		firstSub string
	)
	mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		if keys && !utf8.ValidString(k.String()) {
			badKey = true
			return false
		}
		var sub string
		var bad bool
		if values {
			bad = !utf8.ValidString(v.String())
		} else if messages {
			if p, ok := checkMessage(v.Message()); !ok {
				sub, bad = "."+p, true
			}
		}
		if bad && (!found || keyLess(k, firstKey)) {
			found, firstKey, firstSub = true, k, sub
		}
		return true
	})
	switch {
	case badKey:
		return name + " key", false
	case found:
		return name + "[" + formatKey(firstKey) + "]" + firstSub, false
	}
	return "", true
}

// validated reports whether protobuf's decoder requires the string field fd
// to be valid UTF-8, as its internal/strs.EnforceUTF8 does (editions
// descriptors say so through an EnforceUTF8 method). Repeated extension
// strings are never validated (internal/impl coderStringSliceValue).
func validated(fd protoreflect.FieldDescriptor) bool {
	if fd.IsExtension() && fd.IsList() {
		return false
	}
	switch fd.Syntax() {
	case protoreflect.Proto3:
		return true
	case protoreflect.Editions:
		if e, ok := fd.(interface{ EnforceUTF8() bool }); ok {
			return e.EnforceUTF8()
		}
	}
	return false
}

func keyLess(a, b protoreflect.MapKey) bool {
	switch x := a.Interface().(type) {
	case string:
		return x < b.String()
	case bool:
		return !x && b.Bool()
	case int32, int64:
		return a.Int() < b.Int()
	}
	return a.Uint() < b.Uint()
}

// maxKeyLen bounds the bytes of a map key quoted in a field path.
const maxKeyLen = 32

func formatKey(k protoreflect.MapKey) string {
	s, ok := k.Interface().(string)
	if !ok {
		return fmt.Sprint(k.Interface())
	}
	if len(s) > maxKeyLen {
		cut := maxKeyLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strconv.Quote(s)
}
