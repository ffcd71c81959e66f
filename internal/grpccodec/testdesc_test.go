package grpccodec

import (
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// testMessage returns the descriptor of message M of a test file in the
// given syntax ("editions" or "proto3"), as if from
//
//	edition = "2023";
//	package grpccodec.test.editions;
//	message M {
//	  string s = 1;
//	  string raw = 2 [features.utf8_validation = NONE];
//	  repeated string rs = 3;
//	  M child = 4 [features.message_encoding = DELIMITED];
//	  repeated M children = 5;
//	  map<string, M> mm = 6;
//	  map<int32, string> ms = 7;
//	  map<string, int64> mi = 8;
//	  oneof o { string os = 9; M om = 10; int32 oi = 11; }
//	  repeated int32 packed = 12;
//	  E e = 13;
//	  bytes b = 14;
//	  map<string, E> me = 15;
//	  repeated M delimited = 16 [features.message_encoding = DELIMITED];
//	  map<string, bytes> mb = 17;
//	  map<bool, double> md = 18;
//	  extensions 100 to 200;
//	}
//	enum E { option features.enum_type = CLOSED; E_ZERO = 0; E_ONE = 1; E_TWO = 2; }
//	extend M { string xs = 100; repeated string xrs = 101; M xm = 102; }
//
// The proto3 file lacks the features, the extensions and field 16; its enum
// is open. The editions file's extensions are
// registered in protoregistry.GlobalTypes.
func testMessage(t testing.TB, syntax string) protoreflect.MessageDescriptor {
	t.Helper()
	testFilesOnce.Do(func() {
		testFiles = map[string]protoreflect.FileDescriptor{}
		for _, s := range []string{"editions", "proto3"} {
			fd, err := protodesc.NewFile(testFileProto(s), protoregistry.GlobalFiles)
			if err != nil {
				testFilesErr = err
				return
			}
			testFiles[s] = fd
			for i := 0; i < fd.Extensions().Len(); i++ {
				if err := protoregistry.GlobalTypes.RegisterExtension(dynamicpb.NewExtensionType(fd.Extensions().Get(i))); err != nil {
					testFilesErr = err
					return
				}
			}
		}
	})
	if testFilesErr != nil {
		t.Fatal(testFilesErr)
	}
	return testFiles[syntax].Messages().ByName("M")
}

var (
	testFilesOnce sync.Once
	testFiles     map[string]protoreflect.FileDescriptor
	testFilesErr  error
)

func testFileProto(syntax string) *descriptorpb.FileDescriptorProto {
	editions := syntax == "editions"
	pkg := "grpccodec.test." + syntax
	m := "." + pkg + ".M"
	e := "." + pkg + ".E"
	type T = descriptorpb.FieldDescriptorProto_Type
	const (
		str   = descriptorpb.FieldDescriptorProto_TYPE_STRING
		msg   = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
		i32   = descriptorpb.FieldDescriptorProto_TYPE_INT32
		i64   = descriptorpb.FieldDescriptorProto_TYPE_INT64
		enum  = descriptorpb.FieldDescriptorProto_TYPE_ENUM
		byt   = descriptorpb.FieldDescriptorProto_TYPE_BYTES
		boo   = descriptorpb.FieldDescriptorProto_TYPE_BOOL
		dbl   = descriptorpb.FieldDescriptorProto_TYPE_DOUBLE
		opt   = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
		rep   = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
		noOne = int32(-1)
	)
	field := func(name string, num int32, label descriptorpb.FieldDescriptorProto_Label, typ T, typeName string, oneof int32, features *descriptorpb.FeatureSet) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{
			Name: proto.String(name), Number: proto.Int32(num), Label: label.Enum(), Type: typ.Enum(),
			JsonName: proto.String(name),
		}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		if oneof >= 0 {
			f.OneofIndex = proto.Int32(oneof)
		}
		if features != nil && editions {
			f.Options = &descriptorpb.FieldOptions{Features: features}
		}
		return f
	}
	entry := func(name string, k T, v T, vName string) *descriptorpb.DescriptorProto {
		return &descriptorpb.DescriptorProto{
			Name: proto.String(name),
			Field: []*descriptorpb.FieldDescriptorProto{
				field("key", 1, opt, k, "", noOne, nil),
				field("value", 2, opt, v, vName, noOne, nil),
			},
			Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
		}
	}
	delimited := &descriptorpb.FeatureSet{MessageEncoding: descriptorpb.FeatureSet_DELIMITED.Enum()}
	md := &descriptorpb.DescriptorProto{
		Name: proto.String("M"),
		Field: []*descriptorpb.FieldDescriptorProto{
			field("s", 1, opt, str, "", noOne, nil),
			field("raw", 2, opt, str, "", noOne, &descriptorpb.FeatureSet{Utf8Validation: descriptorpb.FeatureSet_NONE.Enum()}),
			field("rs", 3, rep, str, "", noOne, nil),
			field("child", 4, opt, msg, m, noOne, delimited),
			field("children", 5, rep, msg, m, noOne, nil),
			field("mm", 6, rep, msg, m+".MmEntry", noOne, nil),
			field("ms", 7, rep, msg, m+".MsEntry", noOne, nil),
			field("mi", 8, rep, msg, m+".MiEntry", noOne, nil),
			field("os", 9, opt, str, "", 0, nil),
			field("om", 10, opt, msg, m, 0, nil),
			field("oi", 11, opt, i32, "", 0, nil),
			field("packed", 12, rep, i32, "", noOne, nil),
			field("e", 13, opt, enum, e, noOne, nil),
			field("b", 14, opt, byt, "", noOne, nil),
			field("me", 15, rep, msg, m+".MeEntry", noOne, nil),
			field("mb", 17, rep, msg, m+".MbEntry", noOne, nil),
			field("md", 18, rep, msg, m+".MdEntry", noOne, nil),
		},
		NestedType: []*descriptorpb.DescriptorProto{
			entry("MmEntry", str, msg, m),
			entry("MsEntry", i32, str, ""),
			entry("MiEntry", str, i64, ""),
			entry("MeEntry", str, enum, e),
			entry("MbEntry", str, byt, ""),
			entry("MdEntry", boo, dbl, ""),
		},
		OneofDecl: []*descriptorpb.OneofDescriptorProto{{Name: proto.String("o")}},
	}
	val := func(name string, n int32) *descriptorpb.EnumValueDescriptorProto {
		return &descriptorpb.EnumValueDescriptorProto{Name: proto.String(name), Number: proto.Int32(n)}
	}
	ed := &descriptorpb.EnumDescriptorProto{
		Name:  proto.String("E"),
		Value: []*descriptorpb.EnumValueDescriptorProto{val("E_ZERO", 0), val("E_ONE", 1), val("E_TWO", 2)},
	}
	f := &descriptorpb.FileDescriptorProto{
		Name:        proto.String("grpccodec_test_" + syntax + ".proto"),
		Package:     proto.String(pkg),
		Syntax:      proto.String(syntax),
		MessageType: []*descriptorpb.DescriptorProto{md},
		EnumType:    []*descriptorpb.EnumDescriptorProto{ed},
	}
	if editions {
		f.Edition = descriptorpb.Edition_EDITION_2023.Enum()
		md.Field = append(md.Field, field("delimited", 16, rep, msg, m, noOne, delimited))
		md.ExtensionRange = []*descriptorpb.DescriptorProto_ExtensionRange{{Start: proto.Int32(100), End: proto.Int32(201)}}
		ed.Options = &descriptorpb.EnumOptions{Features: &descriptorpb.FeatureSet{EnumType: descriptorpb.FeatureSet_CLOSED.Enum()}}
		ext := func(name string, num int32, label descriptorpb.FieldDescriptorProto_Label, typ T, typeName string) *descriptorpb.FieldDescriptorProto {
			x := field(name, num, label, typ, typeName, noOne, nil)
			x.Extendee = proto.String(m)
			return x
		}
		f.Extension = []*descriptorpb.FieldDescriptorProto{
			ext("xs", 100, opt, str, ""),
			ext("xrs", 101, rep, str, ""),
			ext("xm", 102, opt, msg, m),
		}
	}
	return f
}
