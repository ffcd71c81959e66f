package server

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"
)

func TestWithMarginMovesTheDeadlineEarlier(t *testing.T) {
	tests := []struct {
		name   string
		left   time.Duration
		margin time.Duration
	}{
		{"a fifth of a short deadline", time.Second, 200 * time.Millisecond},
		{"capped for a long deadline", time.Hour, maxDeadlineMargin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent, cancel := context.WithTimeout(context.Background(), tt.left)
			defer cancel()
			pd, _ := parent.Deadline()
			ctx, stop := withMargin(parent)
			defer stop()
			d, ok := ctx.Deadline()
			if !ok {
				t.Fatal("the margin context has no deadline")
			}
			// time.Until moved on between the two reads, by far less than 10 ms.
			if got := pd.Sub(d); got < tt.margin-10*time.Millisecond || got > tt.margin {
				t.Fatalf("deadline moved by %v, want about %v", got, tt.margin)
			}
		})
	}
}

func TestWithMarginWithoutDeadlineIsTheParent(t *testing.T) {
	parent := context.Background()
	ctx, stop := withMargin(parent)
	defer stop()
	if ctx != parent {
		t.Fatal("a context without a deadline should be returned as is")
	}
}

func TestMarginContextExpiresAtItsDeadline(t *testing.T) {
	for _, askDone := range []bool{false, true} {
		parent, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		ctx, stop := withMargin(parent)
		if askDone {
			select {
			case <-ctx.Done():
			case <-parent.Done():
				t.Fatal("the parent expired before the margin context")
			}
		} else {
			d, _ := ctx.Deadline()
			for time.Now().Before(d) {
				time.Sleep(time.Until(d))
			}
		}
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("askDone=%v: Err() = %v after the deadline, want DeadlineExceeded", askDone, ctx.Err())
		}
		if parent.Err() != nil {
			t.Fatalf("askDone=%v: the parent expired too (%v): no margin was kept", askDone, parent.Err())
		}
		select {
		case <-ctx.Done():
		default:
			t.Fatalf("askDone=%v: Done is open after the deadline", askDone)
		}
		stop()
		cancel()
	}
}

func TestMarginContextCancel(t *testing.T) {
	t.Run("own cancel", func(t *testing.T) {
		parent, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		ctx, stop := withMargin(parent)
		stop()
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("Err() = %v after cancel, want Canceled", ctx.Err())
		}
		select {
		case <-ctx.Done():
		default:
			t.Fatal("Done asked for after cancel is open")
		}
		if parent.Err() != nil {
			t.Fatal("cancelling the margin context cancelled its parent")
		}
	})
	t.Run("parent cancel", func(t *testing.T) {
		parent, cancel := context.WithTimeout(context.Background(), time.Hour)
		ctx, stop := withMargin(parent)
		defer stop()
		done := ctx.Done()
		cancel()
		<-done
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("Err() = %v after the parent was cancelled, want Canceled", ctx.Err())
		}
	})
}

func TestContextsDerivedFromMarginContextStartNoGoroutine(t *testing.T) {
	parent, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	ctx, stop := withMargin(parent)
	defer stop()
	before := runtime.NumGoroutine()
	var stops []context.CancelFunc
	for range 100 {
		_, s := context.WithTimeout(ctx, time.Minute)
		stops = append(stops, s)
	}
	// The context package watches a parent it does not recognise with one
	// goroutine per derived context; 100 derived contexts would show.
	if after := runtime.NumGoroutine(); after-before > 10 {
		t.Fatalf("deriving 100 contexts started %d goroutines", after-before)
	}
	stop()
	for _, s := range stops {
		s()
	}
}
