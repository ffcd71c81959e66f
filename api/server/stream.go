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

// NextIdStream implements ordinal.v1.Sequencer. Requests are served
// concurrently, so that the requests of one stream share leadership proofs
// and reservations with each other and with other calls, and answered as
// they complete.
func (s *Server) NextIdStream(stream ordinalv1.Sequencer_NextIdStreamServer) error {
	ctx := stream.Context()
	var (
		sendMu  sync.Mutex
		sendErr error
		wg      sync.WaitGroup
	)
	slots := make(chan struct{}, maxStreamInFlight)
	defer wg.Wait()
	reqs, recvErr := receiveAll(stream)
	for {
		var req *ordinalv1.NextIdStreamRequest
		select {
		case req = <-reqs:
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-s.draining:
			// Ending the stream lets the server stop without waiting for
			// clients that would keep it open for ever; their calls in
			// flight are still answered, and new ones go elsewhere.
			return nil
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

// receiveAll reads the stream's requests in its own goroutine, so that the
// handler can also watch for the server draining. The goroutine ends when
// the stream does, which happens once the handler returns.
func receiveAll[Req any](stream interface {
	Recv() (*Req, error)
	Context() context.Context
}) (<-chan *Req, <-chan error) {
	reqs := make(chan *Req)
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case reqs <- req:
			case <-stream.Context().Done():
				return
			}
		}
	}()
	return reqs, errc
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
