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
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
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
