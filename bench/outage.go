package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	"tillpipe/bench/internal/fleet"
	"tillpipe/bench/internal/proc"
	"tillpipe/bench/internal/report"
	"tillpipe/internal/clock"
)

// outage runs the fleet online for -outage-lead simulated, cuts every
// store's uplink (and vmagent's link to the backend) for -outage-sim
// simulated at -accel, then restores them with the relays' uplink limited
// to -uplink-rate and the clock back at real time. Simulated time is laid
// out so that the restore happens at real "now": the outage sits in the
// recent past, where VictoriaMetrics accepts it. It measures the disk bytes
// per sample held while offline, when live data is visible centrally again,
// when each class's backlog has drained (and in which order) and when every
// sample has arrived.
func (h *Harness) outage(ctx context.Context) error {
	accel := h.opts.Accel
	simSpan := h.opts.OutageLead + h.opts.OutageSim
	realSpan := time.Duration(float64(simSpan) / accel)
	simStart := time.Now().Add(-simSpan + realSpan)
	if err := h.startFleet(ctx, simStart, accel); err != nil {
		return err
	}
	o := &report.Outage{SimulatedOutageSeconds: h.opts.OutageSim.Seconds(), UplinkRateBytesPerSec: h.opts.UplinkRate, DrainedSeconds: map[string]float64{}}
	h.rep.Outage = o
	h.note("outage scaled to this machine: %d stores x %d tills at %gx (a simulated %s in %s real); the relays' uplink limit after the restore is %d bytes/s each",
		h.opts.Stores, h.opts.Tills, accel, h.opts.OutageSim, time.Duration(float64(h.opts.OutageSim)/accel).Round(time.Second), h.opts.UplinkRate)

	if err := clock.Sleep(ctx, time.Duration(float64(h.opts.OutageLead)/accel)); err != nil {
		return err
	}
	t0 := time.Since(h.start).Seconds()
	ackedBefore, vmaBefore := h.fleet.AckedRelay.Load(), h.fleet.AckedVMAgent.Load()
	diskBefore, vmaDiskBefore := h.relayDisk(), h.vmagentDisk()
	for _, r := range h.stack.LiveRelays() {
		r.Uplink.Cut()
	}
	if h.stack.VMAgentLink != nil {
		h.stack.VMAgentLink.Cut()
	}
	cutAt := time.Now()
	h.event("uplinks cut")
	if err := clock.Sleep(ctx, time.Duration(float64(h.opts.OutageSim)/accel)); err != nil {
		return err
	}
	// Measure the store-side buffers just before the restore.
	o.RealOutageSeconds = time.Since(cutAt).Seconds()
	o.SamplesDuringOutage = float64(h.fleet.AckedRelay.Load() - ackedBefore)
	o.RelayDiskBytes = h.relayDisk() - diskBefore
	o.RelayDiskBytesPerSample = div(float64(o.RelayDiskBytes), o.SamplesDuringOutage)
	o.VMAgentDiskBytes = h.vmagentDisk() - vmaDiskBefore
	o.VMAgentDiskBytesPerSample = div(float64(o.VMAgentDiskBytes), float64(h.fleet.AckedVMAgent.Load()-vmaBefore))

	h.clock.SetAccel(1)
	simRestore := h.clock.Now()
	for _, r := range h.stack.LiveRelays() {
		r.Uplink.Restore()
	}
	if h.stack.VMAgentLink != nil {
		h.stack.VMAgentLink.Restore()
	}
	restored := time.Now()
	h.event("uplinks restored")

	h.waitDrain(ctx, o, restored, simRestore)
	// The measured window spans outage and drain, so the bytes that left
	// the stores (all of them after the restore) are counted.
	t1 := time.Since(h.start).Seconds()
	h.stopFleet()
	h.measure(t0, t1)
	if a := h.rep.Anchor; a != nil {
		a.RelayDiskBytesPerSample, a.VMAgentDiskBytesPerSample = o.RelayDiskBytesPerSample, o.VMAgentDiskBytesPerSample
		a.DiskBytesPerSampleRatio = div(a.RelayDiskBytesPerSample, a.VMAgentDiskBytesPerSample)
	}
	h.verify(ctx)
	if o.LiveVisibleSeconds < 0 {
		h.fail("live data not visible centrally within %s of the restore", h.opts.DrainTimeout)
	}
	return nil
}

func (h *Harness) relayDisk() int64 {
	var n int64
	for _, r := range h.stack.LiveRelays() {
		n += proc.DirSize(r.DataDir)
	}
	return n
}

func (h *Harness) vmagentDisk() int64 {
	if h.stack.VMAgent == nil {
		return 0
	}
	return proc.DirSize(h.stack.VMAgentData)
}

// waitDrain follows the recovery once a second until live data is visible,
// every class's backlog is empty and every sample acknowledged before the
// restore is in the backend (both paths), or -drain-timeout passes.
func (h *Harness) waitDrain(ctx context.Context, o *report.Outage, restored, simRestore time.Time) {
	o.LiveVisibleSeconds, o.AllArrivedSeconds, o.VMAgentAllArrivedSeconds = -1, -1, -1
	relays := h.stack.LiveRelays()
	wantRelay := h.ackedUpTo(fleet.TargetRelay, simRestore)
	wantVMA := h.ackedUpTo(fleet.TargetVMAgent, simRestore)
	window := time.Since(h.simStart) + time.Hour
	count := func(prefix string) int64 {
		res, err := h.stack.VMClient.QueryAt(ctx, fmt.Sprintf(`sum(count_over_time(%s[%ds]))`, fleet.Match(prefix), int64(window.Seconds())), simRestore)
		if err != nil || len(res) == 0 {
			return 0
		}
		return int64(res[0].Value)
	}
	classes := map[string]bool{}
	deadline := restored.Add(h.opts.DrainTimeout)
	for time.Now().Before(deadline) {
		if clock.Sleep(ctx, time.Second) != nil {
			return
		}
		el := time.Since(restored).Seconds()
		if o.LiveVisibleSeconds < 0 && len(relays) > 0 {
			newest := h.delay.NewestByStore(fleet.TargetRelay)
			all := true
			for _, r := range relays {
				if newest[r.Store] <= simRestore.UnixMilli() {
					all = false
				}
			}
			if all {
				o.LiveVisibleSeconds = el
				h.event("live data visible")
			}
		}
		if _, last, ok := h.mon.Last(); ok {
			for c, v := range last.Backlog {
				classes[c] = true
				// Drained: empty, or everything still queued arrived after
				// the restore (live data waiting for its batch to seal).
				old, hasOld := last.Oldest[c]
				if _, done := o.DrainedSeconds[c]; !done && (v == 0 || (hasOld && old < time.Since(restored).Seconds()-1)) {
					o.DrainedSeconds[c] = el
					o.ClassOrder = append(o.ClassOrder, c)
					h.event("%s backlog drained", c)
				}
			}
		}
		_ = h.stack.VMClient.Flush(ctx)
		if o.AllArrivedSeconds < 0 && len(relays) > 0 && count(h.relayPrefix()) >= wantRelay {
			o.AllArrivedSeconds = el
			h.event("relay path: everything arrived")
		}
		if o.VMAgentAllArrivedSeconds < 0 && h.stack.VMAgent != nil && count(h.vmagentPrefix()) >= wantVMA {
			o.VMAgentAllArrivedSeconds = el
			h.event("vmagent path: everything arrived")
		}
		drained := len(classes) > 0 && len(o.DrainedSeconds) == len(classes)
		relayDone := len(relays) == 0 || (o.LiveVisibleSeconds >= 0 && o.AllArrivedSeconds >= 0 && drained)
		vmaDone := h.stack.VMAgent == nil || o.VMAgentAllArrivedSeconds >= 0
		if relayDone && vmaDone {
			return
		}
	}
	for c := range classes {
		if _, ok := o.DrainedSeconds[c]; !ok {
			o.DrainedSeconds[c] = -1
		}
	}
	if len(classes) == 0 && len(relays) > 0 {
		h.note("the relays expose no %s: drain per class not measured", mRelayBacklog)
	}
	sort.SliceStable(o.ClassOrder, func(i, j int) bool { return o.DrainedSeconds[o.ClassOrder[i]] < o.DrainedSeconds[o.ClassOrder[j]] })
}

// ackedUpTo counts target's acknowledged samples with timestamps up to t.
func (h *Harness) ackedUpTo(target string, t time.Time) int64 {
	var n int64
	ms := t.UnixMilli()
	for _, ti := range h.fleet.TillInfos() {
		l := ti.Ledgers[target]
		if l == nil {
			continue
		}
		for _, r := range l.Records() {
			if r.Acked && r.TS <= ms {
				n += int64(h.fleet.SeriesPerTill())
			}
		}
	}
	return n
}
