package grpccodec

import (
	"context"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// UnaryServerInterceptor answers codes.InvalidArgument ("key is not valid
// UTF-8") to a request that Lenient decoded despite invalid UTF-8, instead
// of calling the handler. Other requests cost it one atomic load. Put it
// first in the chain: an interceptor before it sees the invalid string (and
// one that marshals the request, to log it, fails).
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !pending.empty() {
			if err := rejectInvalid(req); err != nil {
				return nil, err
			}
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor makes RecvMsg return codes.InvalidArgument ("key
// is not valid UTF-8") for a request message that Lenient decoded despite
// invalid UTF-8; other messages cost it one atomic load. A handler that
// returns Recv's error, as ordinal's NextIdStream does, ends the stream with
// it, after answering the requests before. A handler that would rather
// answer such a request in-band and go on can use Lenient without this
// interceptor and call CheckUTF8 on each request itself.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &checkedStream{ServerStream: ss})
	}
}

type checkedStream struct {
	grpc.ServerStream
}

func (s *checkedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if pending.empty() {
		return err
	}
	if reject := rejectInvalid(m); err == nil {
		err = reject
	}
	return err
}

// rejectInvalid returns the InvalidArgument error for m if Lenient decoded
// it and it holds invalid UTF-8.
func rejectInvalid(m any) error {
	if !pending.take(m) {
		return nil
	}
	if field, ok := CheckUTF8(messageV2Of(m)); !ok {
		return status.Errorf(codes.InvalidArgument, "%s is not valid UTF-8", field)
	}
	return nil
}

// pending holds the messages that Lenient decoded despite invalid UTF-8 and
// whose interceptor has not yet seen them.
var pending lenientSet

// lenientSet is a set of messages, by address. It holds no reference to
// them: an entry whose message becomes garbage before take is removed by a
// runtime cleanup, which checks the entry's sequence number so that it
// never removes the entry of a newer message at the same address. A stale
// entry that take finds before its cleanup ran only makes the interceptor
// run CheckUTF8 on a valid message.
type lenientSet struct {
	n   atomic.Int64 // len(set), readable without mu
	mu  sync.Mutex
	set map[uintptr]uint64 // address -> sequence number
	seq uint64
}

type lenientEntry struct {
	addr uintptr
	seq  uint64
}

// add records the message v (a pointer); it reports false if v is not one.
func (s *lenientSet) add(v any) bool {
	p := pointerOf(v)
	if p == nil {
		return false
	}
	s.mu.Lock()
	if s.set == nil {
		s.set = make(map[uintptr]uint64)
	}
	s.seq++
	e := lenientEntry{addr: uintptr(p), seq: s.seq}
	s.set[e.addr] = e.seq
	s.n.Store(int64(len(s.set)))
	s.mu.Unlock()
	// A no-op for a message that is not heap-allocated (a global).
	runtime.AddCleanup((*byte)(p), s.forget, e)
	return true
}

// take removes v from the set and reports whether it was there.
func (s *lenientSet) take(v any) bool {
	if s.n.Load() == 0 {
		return false
	}
	p := pointerOf(v)
	if p == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.set[uintptr(p)]; !ok {
		return false
	}
	delete(s.set, uintptr(p))
	s.n.Store(int64(len(s.set)))
	return true
}

func (s *lenientSet) forget(e lenientEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq, ok := s.set[e.addr]; ok && seq == e.seq {
		delete(s.set, e.addr)
		s.n.Store(int64(len(s.set)))
	}
}

// empty reports whether the set is empty: the interceptors' fast path.
func (s *lenientSet) empty() bool { return s.n.Load() == 0 }

// len returns the number of entries.
func (s *lenientSet) len() int { return int(s.n.Load()) }

func pointerOf(v any) unsafe.Pointer {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return nil
	}
	return rv.UnsafePointer()
}
