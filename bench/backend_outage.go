package main

import (
	"context"
	"time"

	"tillpipe/bench/internal/fleet"
	"tillpipe/bench/internal/proc"
	"tillpipe/bench/internal/report"
	"tillpipe/internal/clock"
)

// backendOutage stops VictoriaMetrics for -backend-down under load and
// brings it back: nothing may be lost, and the ingester's (and vmagent's)
// memory must stay bounded while the backend is away.
func (h *Harness) backendOutage(ctx context.Context) error {
	span := max(h.opts.Duration, h.opts.Warmup+h.opts.BackendDown+5*time.Second)
	if err := h.startFleet(ctx, pastStart(span, h.opts.Accel), h.opts.Accel); err != nil {
		return err
	}
	bo := &report.BackendOutage{DownSeconds: h.opts.BackendDown.Seconds()}
	h.rep.BackendOutage = bo
	if err := clock.Sleep(ctx, h.opts.Warmup); err != nil {
		return err
	}
	t0 := time.Since(h.start).Seconds()
	before := h.mon.MarkPeak()
	bo.IngesterRSSBefore, bo.VMAgentRSSBefore = before["ingester"], before["vmagent"]
	streamBefore, _, _ := h.stack.StreamState(ctx)
	h.event("backend down")
	if err := h.stack.StopVM(ctx); err != nil {
		return err
	}
	if err := clock.Sleep(ctx, h.opts.BackendDown); err != nil {
		return err
	}
	bo.IngesterPeakRSSDown, bo.VMAgentPeakRSSDown = h.mon.PeakSinceMark("ingester"), h.mon.PeakSinceMark("vmagent")
	streamAfter, _, _ := h.stack.StreamState(ctx)
	bo.StreamBytesBacklog = streamAfter - streamBefore
	if h.stack.VMAgent != nil {
		bo.VMAgentDiskBytes = proc.DirSize(h.stack.VMAgentData)
	}
	if err := h.stack.StartVM(ctx); err != nil {
		return err
	}
	restored := time.Now()
	h.event("backend restored")
	// Let the fleet run on for a while after the restore, then stop it.
	if err := clock.Sleep(ctx, span-h.opts.Warmup-h.opts.BackendDown); err != nil {
		return err
	}
	t1 := time.Since(h.start).Seconds()
	h.stopFleet()
	if len(h.stack.LiveRelays()) > 0 {
		if _, err := h.fleet.WaitArrived(ctx, h.stack.VMClient, fleet.TargetRelay, h.relayPrefix(), h.opts.DrainTimeout); err == nil {
			bo.RecoveredSeconds = time.Since(restored).Seconds()
		} else {
			bo.RecoveredSeconds = -1
		}
	}
	h.measure(t0, t1)
	h.verify(ctx)
	return nil
}
