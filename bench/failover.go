package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordinal-dev/ordinal/client"
)

// FailoverConfig describes one failover trial: the leader's process is
// killed with SIGKILL and STRONG calls are sent to the surviving nodes
// until they succeed again.
type FailoverConfig struct {
	// KillPID is the process ID of the leader, killed with SIGKILL.
	KillPID int
	// Targets are the gRPC addresses of the surviving nodes.
	Targets []string
	// Key and Store name the key the STRONG calls take IDs of.
	Key, Store string
	// Interval is how often a call is sent after the kill, in turn to each
	// target; calls do not wait for each other. Default 10ms.
	Interval time.Duration
	// CallTimeout bounds each call. Default 1s.
	CallTimeout time.Duration
	// Timeout bounds the whole trial after the kill. Default 15s.
	Timeout time.Duration
	// Kill kills the process; nil means syscall.Kill(pid, SIGKILL). Tests
	// replace it.
	Kill func(pid int) error
	// ClientOptions are added to the options of the clients of the
	// targets, for example client.WithTLS and client.WithToken.
	ClientOptions []client.Option
}

// FailoverResult is what one trial measured, as times since the kill.
type FailoverResult struct {
	Config FailoverConfig
	// FirstOK is when the first STRONG call succeeded again; AllOK when a
	// call through every target had.
	FirstOK, AllOK time.Duration
	// Attempts and Errors count the calls sent after the kill and their
	// failures by code.
	Attempts int
	Errors   map[codes.Code]int
	// Before is the highest ID handed out before the kill; every ID after
	// it must be higher.
	Before int64
}

// Failover runs one trial. It first takes a STRONG ID through every target
// (retrying for up to Timeout while the cluster settles), then kills the
// leader and sends a STRONG call every Interval until one through every
// target has succeeded. It fails if that takes longer than Timeout or if
// an ID after the kill is not above every ID before it (STRONG calls sent
// after others returned must get higher IDs, whichever leader serves
// them) or is handed out twice.
func Failover(ctx context.Context, cfg FailoverConfig) (*FailoverResult, error) {
	if cfg.KillPID <= 0 {
		return nil, usagef("the leader's process ID is required")
	}
	if len(cfg.Targets) == 0 {
		return nil, usagef("no targets given: the surviving nodes' gRPC addresses")
	}
	if cfg.Key == "" {
		cfg.Key = "failover"
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Millisecond
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.Kill == nil {
		cfg.Kill = func(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
	}
	clients := make([]*client.Client, len(cfg.Targets))
	for i, addr := range cfg.Targets {
		c, err := client.New(addr, append(slices.Clip(cfg.ClientOptions), client.WithStore(cfg.Store), client.WithRetry(1, 0))...)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		clients[i] = c
	}
	res := &FailoverResult{Config: cfg, Errors: map[codes.Code]int{}}

	// Before the kill: every target serves STRONG calls.
	for i, c := range clients {
		id, err := untilOK(ctx, cfg.Timeout, func(ctx context.Context) (int64, error) {
			ctx, cancel := context.WithTimeout(ctx, cfg.CallTimeout)
			defer cancel()
			return c.NextID(ctx, cfg.Key, client.Strong)
		})
		if err != nil {
			return nil, fmt.Errorf("before the kill, STRONG calls via %s fail: %w", cfg.Targets[i], err)
		}
		res.Before = max(res.Before, id)
	}

	if err := cfg.Kill(cfg.KillPID); err != nil {
		return nil, fmt.Errorf("kill %d: %w", cfg.KillPID, err)
	}
	killed := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	var (
		mu      sync.Mutex
		firstOK = make([]time.Duration, len(clients)) // per target; 0: not yet
		ids     []int64
		wg      sync.WaitGroup
		allDone = make(chan struct{})
		closed  bool
	)
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
loop:
	for i := 0; ; i++ {
		t := i % len(clients)
		res.Attempts++
		wg.Go(func() {
			callCtx, cancel := context.WithTimeout(ctx, cfg.CallTimeout)
			id, err := clients[t].NextID(callCtx, cfg.Key, client.Strong)
			cancel()
			at := time.Since(killed)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if ctx.Err() == nil {
					res.Errors[status.Code(err)]++
				}
				return
			}
			ids = append(ids, id)
			if firstOK[t] == 0 || at < firstOK[t] {
				firstOK[t] = at
			}
			if !closed && !slices.Contains(firstOK, 0) {
				closed = true
				close(allDone)
			}
		})
		select {
		case <-tick.C:
		case <-allDone:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	cancel()
	wg.Wait()
	for i, at := range firstOK {
		if at == 0 {
			return res, fmt.Errorf("no STRONG call via %s succeeded within %v of the kill (%d attempts; errors %s)",
				cfg.Targets[i], cfg.Timeout, res.Attempts, codeCounts(res.Errors))
		}
	}
	res.FirstOK, res.AllOK = slices.Min(firstOK), slices.Max(firstOK)
	slices.Sort(ids)
	for i, id := range ids {
		if id <= res.Before {
			return res, fmt.Errorf("ORDER: STRONG id %d after the kill is not above %d, handed out before it", id, res.Before)
		}
		if i > 0 && id == ids[i-1] {
			return res, fmt.Errorf("DUPLICATE: STRONG id %d handed out twice after the kill", id)
		}
	}
	return res, nil
}

// untilOK retries call until it succeeds or timeout passes.
func untilOK(ctx context.Context, timeout time.Duration, call func(context.Context) (int64, error)) (int64, error) {
	deadline := time.Now().Add(timeout)
	for {
		id, err := call(ctx)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return id, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func codeCounts[N int | int64](m map[codes.Code]N) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", c, m[c]))
	}
	return strings.Join(parts, ",")
}

// Print writes the trial's result and its RESULT line.
func (r *FailoverResult) Print(w io.Writer) {
	fmt.Fprintf(w, "ordinal-bench failover: killed pid %d; STRONG calls via %s\n", r.Config.KillPID, strings.Join(r.Config.Targets, ","))
	fmt.Fprintf(w, "  first success  %v after the kill\n", r.FirstOK.Round(time.Millisecond))
	fmt.Fprintf(w, "  every target   %v after the kill\n", r.AllOK.Round(time.Millisecond))
	fmt.Fprintf(w, "  attempts       %d, errors %s\n", r.Attempts, codeCounts(r.Errors))
	fmt.Fprintf(w, "RESULT label=failover killed_pid=%d targets=%s first_ok_ms=%d all_ok_ms=%d attempts=%d errors=%s verified=ok\n",
		r.Config.KillPID, strings.Join(r.Config.Targets, ","), r.FirstOK.Milliseconds(), r.AllOK.Milliseconds(), r.Attempts, codeCounts(r.Errors))
}
