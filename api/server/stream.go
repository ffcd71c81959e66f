package server

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
)

// maxStreamInFlight bounds the requests of one stream served at once; the
// stream stops reading while that many are in flight, which pushes back on
// a client sending faster than the node serves.
const maxStreamInFlight = 256

// NextIdStream implements ordinal.v1.SequencerService. Requests are served
// concurrently, so that the requests of one stream share leadership proofs
// and reservations with each other and with other calls, and answered as
// they complete.
func (s *Server) NextIdStream(stream ordinalv1.SequencerService_NextIdStreamServer) error {
	ctx := stream.Context()
	var (
		sendMu  sync.Mutex
		sendErr error
		wg      sync.WaitGroup
	)
	slots := make(chan struct{}, maxStreamInFlight)
	defer wg.Wait()
	requests := receiveAll(stream)
	for {
		req, err := requests.next(s.draining)
		if req == nil {
			return err
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			resp := s.serveStreamRequest(ctx, req)
			sendMu.Lock()
			defer sendMu.Unlock()
			if sendErr == nil {
				sendErr = stream.Send(resp)
			}
		}()
	}
}

// requestStream delivers a stream's requests, read in their own goroutine
// so that the handler can also watch for the server draining. The goroutine
// ends when the stream does, which happens once the handler returns.
type requestStream[Req any] struct {
	reqs <-chan *Req
	errs <-chan error
}

func receiveAll[Req any](stream interface {
	Recv() (*Req, error)
	Context() context.Context
}) requestStream[Req] {
	reqs := make(chan *Req)
	errs := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				errs <- err
				return
			}
			select {
			case reqs <- req:
			case <-stream.Context().Done():
				return
			}
		}
	}()
	return requestStream[Req]{reqs: reqs, errs: errs}
}

// next returns the stream's next request, or nil when the handler should
// end: with the stream's error, or nil when the client closed its side or
// the server drains. Ending streams on drain lets the server stop without
// waiting for clients that would keep them open for ever; the requests in
// flight are still answered, and new ones go elsewhere.
func (r requestStream[Req]) next(draining <-chan struct{}) (*Req, error) {
	select {
	case req := <-r.reqs:
		return req, nil
	case err := <-r.errs:
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	case <-draining:
		return nil, nil
	}
}

func (s *Server) serveStreamRequest(ctx context.Context, req *ordinalv1.NextIdStreamRequest) *ordinalv1.NextIdStreamResponse {
	resp := &ordinalv1.NextIdStreamResponse{Seq: req.GetSeq()}
	count, err := s.countOf(req.GetCount())
	if err == nil {
		var first int64
		first, err = s.nextFromRequest(ctx, req.GetStoreName(), req.GetKey(), req.GetOptions().GetIncrement(), count)
		resp.FirstId, resp.Count = first, int64(count)
	}
	if err != nil {
		st := status.Convert(err)
		resp.FirstId, resp.Count = 0, 0
		resp.Code, resp.Message = int32(st.Code()), st.Message()
	}
	return resp
}
