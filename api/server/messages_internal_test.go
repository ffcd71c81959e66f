package server

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/api/runtimev1"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/snowflake"
)

// The messages that buf's lint gave RPCs of their own carry the fields of
// the ones they replaced, under the same numbers and types, so that the
// encoding on the wire did not change and the server can hand one on as
// the other.
func TestRenamedMessagesMatch(t *testing.T) {
	pairs := []struct{ a, b proto.Message }{
		{&ordinalv1.JoinRequest{}, &ordinalv1.PeerServiceJoinRequest{}},
		{&ordinalv1.JoinResponse{}, &ordinalv1.PeerServiceJoinResponse{}},
		{&ordinalv1.ConfirmTermRequest{}, &ordinalv1.ConfirmTermStreamRequest{}},
		{&ordinalv1.ConfirmTermResponse{}, &ordinalv1.ConfirmTermStreamResponse{}},
	}
	for _, p := range pairs {
		a, b := p.a.ProtoReflect().Descriptor(), p.b.ProtoReflect().Descriptor()
		if got, want := describe(b), describe(a); got != want {
			t.Errorf("%s has fields\n%s\nwant those of %s:\n%s", b.FullName(), got, a.FullName(), want)
		}
	}
}

// describe lists a message's fields (number, name, kind, cardinality) and
// reserved numbers and names.
func describe(md protoreflect.MessageDescriptor) string {
	var s string
	for i := 0; i < md.Fields().Len(); i++ {
		f := md.Fields().Get(i)
		s += fmt.Sprintf("%d %s %v %v\n", f.Number(), f.Name(), f.Kind(), f.Cardinality())
	}
	for i := 0; i < md.ReservedRanges().Len(); i++ {
		r := md.ReservedRanges().Get(i)
		s += fmt.Sprintf("reserved %d-%d\n", r[0], r[1]-1)
	}
	for i := 0; i < md.ReservedNames().Len(); i++ {
		s += fmt.Sprintf("reserved %q\n", md.ReservedNames().Get(i))
	}
	return s
}

// clusterJoinRequest copies every field: with every field of a
// PeerService.Join request set, the JoinRequest it makes encodes to the
// same bytes.
func TestClusterJoinRequestCopiesEveryField(t *testing.T) {
	req := &ordinalv1.PeerServiceJoinRequest{}
	m := req.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		switch f.Kind() {
		case protoreflect.StringKind:
			m.Set(f, protoreflect.ValueOfString("v-"+string(f.Name())))
		case protoreflect.BoolKind:
			m.Set(f, protoreflect.ValueOfBool(true))
		default:
			t.Fatalf("field %s: kind %v, which this test does not fill: add it", f.Name(), f.Kind())
		}
	}
	opts := proto.MarshalOptions{Deterministic: true}
	want, err := opts.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := opts.Marshal(clusterJoinRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("clusterJoinRequest(%v) = %v: a field was not copied", req, clusterJoinRequest(req))
	}
}

// AutoIncrement keeps Layotto's numbers: 0 (AUTO_INCREMENT_UNSPECIFIED,
// Layotto's WEAK) and the explicit AUTO_INCREMENT_WEAK (2) are WEAK, 1 is
// STRONG, anything else is refused. Layotto's own enum, on
// Runtime/GetNextId, has 0 and 1 only.
func TestModeOf(t *testing.T) {
	for _, tc := range []struct {
		inc     ordinalv1.SequencerOptions_AutoIncrement
		want    alloc.Mode
		invalid bool
	}{
		{inc: ordinalv1.SequencerOptions_AUTO_INCREMENT_UNSPECIFIED, want: alloc.Weak},
		{inc: ordinalv1.SequencerOptions_AUTO_INCREMENT_WEAK, want: alloc.Weak},
		{inc: ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG, want: alloc.Strong},
		{inc: 3, invalid: true},
		{inc: -1, invalid: true},
	} {
		got, err := modeOf(tc.inc)
		if tc.invalid != (err != nil) || got != tc.want {
			t.Errorf("modeOf(%v) = %v, %v; want %v, error %v", tc.inc, got, err, tc.want, tc.invalid)
		}
	}
	for _, tc := range []struct {
		inc     runtimev1.SequencerOptions_AutoIncrement
		want    ordinalv1.SequencerOptions_AutoIncrement
		invalid bool
	}{
		{inc: runtimev1.SequencerOptions_WEAK, want: ordinalv1.SequencerOptions_AUTO_INCREMENT_UNSPECIFIED},
		{inc: runtimev1.SequencerOptions_STRONG, want: ordinalv1.SequencerOptions_AUTO_INCREMENT_STRONG},
		{inc: 2, invalid: true},
		{inc: -1, invalid: true},
	} {
		got, err := incrementOfLayotto(tc.inc)
		if tc.invalid != (err != nil) || got != tc.want {
			t.Errorf("incrementOfLayotto(%v) = %v, %v; want %v, error %v", tc.inc, got, err, tc.want, tc.invalid)
		}
	}
}

// The Snowflake errors reach callers with the codes that say what to do:
// no free worker is a resource running out, a conflicting declaration a
// precondition, a layout out of time steps a range.
func TestSnowflakeErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("acquire: %w", fsm.ErrNoWorker), codes.ResourceExhausted},
		{fmt.Errorf("declare: %w", fsm.ErrSnowflakeConflict), codes.FailedPrecondition},
		{fmt.Errorf("%w: %w", snowflake.ErrTimeExhausted, fsm.ErrOverflow), codes.OutOfRange},
	} {
		if got := status.Code(toStatus(tc.err, fsm.Key{Store: "sf", Name: "k"})); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.err, got, tc.want)
		}
	}
}
