package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"tillpipe/bench/internal/report"
	"tillpipe/internal/clock"
)

// crash runs the fleet under load while SIGKILLing a random relay or
// ingester every ~-kill-every and restarting it after a short pause; then
// every acknowledged sample must be in the backend exactly once (or twice
// only where a request's connection broke mid-flight, as remote-write allows).
func (h *Harness) crash(ctx context.Context) error {
	if err := h.startFleet(ctx, pastStart(h.opts.Duration, h.opts.Accel), h.opts.Accel); err != nil {
		return err
	}
	h.rep.Crash = &report.Crash{}
	rng := rand.New(rand.NewPCG(uint64(h.opts.Seed), 0xc4a5))
	relays, ingesters := h.stack.LiveRelays(), h.stack.LiveIngesters()
	if len(relays)+len(ingesters) == 0 {
		return fmt.Errorf("no relay or ingester to kill")
	}
	end := time.Now().Add(h.opts.Duration)
	t0 := time.Since(h.start).Seconds()
	for time.Now().Before(end) {
		wait := time.Duration(float64(h.opts.KillEvery) * (0.5 + rng.Float64()))
		if err := clock.Sleep(ctx, min(wait, time.Until(end))); err != nil {
			return err
		}
		if time.Now().After(end) {
			break
		}
		pause := time.Duration(200+rng.IntN(1800)) * time.Millisecond
		i := rng.IntN(len(relays) + len(ingesters))
		var name string
		var restart func() error
		if i < len(relays) {
			r := relays[i]
			name = r.Proc.Name()
			if err := r.Proc.Kill(); err != nil {
				return err
			}
			restart = func() error { return h.stack.RestartRelay(ctx, r) }
		} else {
			in := ingesters[i-len(relays)]
			name = in.Proc.Name()
			if err := in.Proc.Kill(); err != nil {
				return err
			}
			restart = func() error { return h.stack.RestartIngester(ctx, in) }
		}
		h.event("SIGKILL %s", name)
		h.rep.Crash.Kills = append(h.rep.Crash.Kills, report.Event{T: time.Since(h.start).Seconds(), Name: fmt.Sprintf("SIGKILL %s, restarted after %s", name, pause)})
		if err := clock.Sleep(ctx, pause); err != nil {
			return err
		}
		if err := restart(); err != nil {
			return fmt.Errorf("restart %s: %w", name, err)
		}
	}
	t1 := time.Since(h.start).Seconds()
	h.stopFleet()
	h.measure(t0, t1)
	h.verify(ctx)
	return nil
}
