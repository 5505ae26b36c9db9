package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"tillpipe/internal/clock"
	"tillpipe/internal/collector/rawsys"
)

// AgentOptions configures an [Agent]. The zero value of each field means its
// default.
type AgentOptions struct {
	// Interval between samples; default 15s.
	Interval time.Duration
	// Device is hashed into the per-device phase (see [Offset]).
	Device string
	// Logger nil discards.
	Logger *slog.Logger
	// GCBudget, when positive, makes the agent pace the garbage collector:
	// after a cycle that brought the bytes allocated since the last
	// collection to GCBudget, it collects and returns the freed memory to
	// the OS. The caller turns the runtime's own pacing off (GOGC=off,
	// debug.SetGCPercent(-1)), best with a memory limit as a backstop.
	GCBudget int64
	// RuntimeTimers makes Run wait for cycles on runtime timers instead of
	// a timerfd (rawsys.Timer): a fake clock (testing/synctest) drives
	// only those.
	RuntimeTimers bool
}

// Agent samples a [Collector] every interval, aligned to the wall clock plus
// the device's offset, and hands each cycle's WriteRequest, snappy-compressed,
// to enqueue. Run must be called once; Healthy is safe for concurrent use.
type Agent struct {
	col      *Collector
	enqueue  func(compressed []byte, samples int)
	interval time.Duration
	offset   time.Duration
	log      *slog.Logger

	gc            *gcPacer     // nil: the runtime paces the GC
	runtimeTimers bool         // see AgentOptions.RuntimeTimers
	last          atomic.Int64 // unix nanoseconds of the last finished cycle
}

// NewAgent returns an agent sampling col and handing requests to enqueue
// (sender.Sender.Enqueue), which must copy the request (it is reused).
func NewAgent(col *Collector, enqueue func(compressed []byte, samples int), opts AgentOptions) (*Agent, error) {
	if col == nil || enqueue == nil {
		return nil, fmt.Errorf("collector or enqueue is nil: %w", ErrInvalidOption)
	}
	if opts.Interval < 0 {
		return nil, fmt.Errorf("interval %s is negative: %w", opts.Interval, ErrInvalidOption)
	}
	a := &Agent{col: col, enqueue: enqueue, interval: opts.Interval, log: opts.Logger}
	if a.interval == 0 {
		a.interval = 15 * time.Second
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.offset = Offset(opts.Device, a.interval)
	a.gc = newGCPacer(opts.GCBudget)
	a.runtimeTimers = opts.RuntimeTimers
	return a, nil
}

// Run samples until ctx is done, then returns nil. While it runs it also
// follows the engine's container events (docker.Events, on a goroutine it
// stops before returning), so that cycles list the containers only after a
// change; a collector sampled without Run lists every cycle.
func (a *Agent) Run(ctx context.Context) error {
	if ev := a.col.events; ev != nil {
		evCtx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = ev.Run(evCtx) })
		defer wg.Wait()
		defer cancel()
	}
	a.last.Store(time.Now().UnixNano())
	a.log.Info("sampling", "interval", a.interval, "offset", a.offset, "cgroup_mode", int(a.col.CgroupMode()))
	wait := sleepUntil
	if !a.runtimeTimers {
		if tm, err := rawsys.NewTimer(); err == nil {
			defer tm.Close()
			wait = tm.Wait
		} else {
			a.log.Info("waiting on runtime timers", "err", err)
		}
	}
	for {
		err := wait(ctx, Next(time.Now(), a.interval, a.offset))
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, rawsys.ErrClockStepped):
			continue // aim again from the new time
		case err != nil:
			a.log.Warn("timerfd failed, waiting on runtime timers", "err", err)
			wait = sleepUntil
			continue
		}
		a.Cycle(ctx, time.Now())
	}
}

// Cycle samples once at now and enqueues the request.
func (a *Agent) Cycle(ctx context.Context, now time.Time) {
	req, n := a.col.WriteRequest(ctx, now)
	a.enqueue(req, n)
	a.gc.afterCycle()
	a.last.Store(time.Now().UnixNano())
}

// Healthy returns an error when no cycle finished within three intervals
// of the last one (or of Run's start): the loop is stuck.
func (a *Agent) Healthy() error {
	last := a.last.Load()
	if last == 0 {
		return nil
	}
	if age := time.Since(time.Unix(0, last)); age > 3*a.interval {
		return fmt.Errorf("last sample %s ago (interval %s)", age.Round(time.Second), a.interval)
	}
	return nil
}

// sleepUntil waits for at on a runtime timer: the fallback when no timerfd
// can be had (see rawsys.Timer for why one is preferred).
func sleepUntil(ctx context.Context, at time.Time) error {
	return clock.Sleep(ctx, time.Until(at))
}
