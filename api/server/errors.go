package server

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/alloc"
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/fsm"
	"github.com/ordinal-dev/ordinal/snowflake"
)

// toStatus turns an error from the ID path into a gRPC status with a code a
// client can act on and a message a person can act on.
func toStatus(err error, key fsm.Key) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var keyLimit *cluster.KeyLimitError
	switch {
	case errors.As(err, &keyLimit):
		// The quota's own message: it names the key, the limit and
		// what to do, without the layers that wrapped it.
		return status.Error(codes.ResourceExhausted, keyLimit.Error())
	case errors.Is(err, cluster.ErrKeyLimit):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, snowflake.ErrBlockTooLarge), errors.Is(err, snowflake.ErrFloorAhead):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, fsm.ErrSnowflakeStore):
		// A node that has not yet applied the store's declaration asked
		// for a counter range in it; it serves Snowflake IDs once it has.
		return status.Errorf(codes.Unavailable, "ordinal cannot serve this call now, retry: %v", err)
	case errors.Is(err, fsm.ErrNoWorker):
		// Every worker ID the cluster's layouts allow is held.
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, fsm.ErrSnowflakeConflict), errors.Is(err, snowflake.ErrConflict), errors.Is(err, snowflake.ErrNoStrong):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, snowflake.ErrTimeExhausted):
		// A Snowflake store's layout ran out of time steps; its message
		// says when.
		return status.Errorf(codes.OutOfRange, "key %q in store %q: %v", key.Name, key.Store, err)
	case errors.Is(err, fsm.ErrOverflow):
		return status.Errorf(codes.OutOfRange,
			"key %q in store %q has too few ids left below 2^63-1; nothing was handed out", key.Name, key.Store)
	case errors.Is(err, alloc.ErrNotLeader), errors.Is(err, alloc.ErrUnavailable):
		return status.Errorf(codes.Unavailable, "ordinal cannot serve this call now, retry: %v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "deadline passed before the call completed: %v", err)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "call cancelled")
	}
	return status.Errorf(codes.Internal, "internal error: %v", err)
}

func invalid(format string, args ...any) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf(format, args...))
}
