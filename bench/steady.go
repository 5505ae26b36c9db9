package main

import (
	"context"
	"time"

	"tillpipe/internal/clock"
)

// steady is the throughput run: the fleet at a constant offered load for
// -duration, measured after -warmup, then every acknowledged sample checked
// in the backend.
func (h *Harness) steady(ctx context.Context) error {
	if err := h.startFleet(ctx, pastStart(h.opts.Duration, h.opts.Accel), h.opts.Accel); err != nil {
		return err
	}
	if err := clock.Sleep(ctx, h.opts.Warmup); err != nil {
		return err
	}
	t0 := time.Since(h.start).Seconds()
	h.delay.Reset()
	h.event("measuring")
	if err := clock.Sleep(ctx, h.opts.Duration-h.opts.Warmup); err != nil {
		return err
	}
	t1 := time.Since(h.start).Seconds()
	h.stopFleet()
	h.measure(t0, t1)
	h.verify(ctx)
	return nil
}
