package cluster

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/fsm"
)

// fromStatus turns a gRPC error from another node back into the sentinel
// errors of the ID path, so callers can tell a retryable failure from a
// final one whichever node it happened on. Other errors pass through with
// their status intact.
func fromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return fmt.Errorf("%w: %s", alloc.ErrUnavailable, st.Message())
	case codes.OutOfRange:
		return fmt.Errorf("%w: %s", fsm.ErrOverflow, st.Message())
	}
	return err
}
