package main

import (
	"math"
	"sort"

	"tillpipe/bench/internal/report"
)

// stageDefs are the pipeline's stages in order: the counter each is read
// from (see Monitor) and the metric behind it.
var stageDefs = []struct{ key, name, source string }{
	{"fleet_acked", "tills -> relays (acknowledged)", "harness ledger"},
	{"relay_in", "relays received", mRelayReceived},
	{"relay_uplink", "relays published to JetStream", mRelayUplinkSmp},
	{"ingester_out", "ingesters wrote to the backend", mIngesterWritten},
	{"fleet_acked_vmagent", "tills -> vmagent (acknowledged)", "harness ledger"},
	{"vmagent_in", "vmagent received", mVMAgentIn + `{type="promremotewrite"}`},
	{"vmagent_out", "vmagent pushed to the backend", mVMAgentOut},
	{"vm_in", "VictoriaMetrics inserted (both paths)", mVMInserted + `{type="promremotewrite"}`},
}

// roleSamples is the stage whose samples each role's CPU is divided by.
var roleSamples = map[string]string{
	"relay": "relay_in", "nats": "relay_uplink", "ingester": "ingester_out",
	"backend": "vm_in", "vmagent": "vmagent_in", "harness": "fleet_generated",
}

// window returns the first point at or after t0 and the last at or before t1.
func window(tl []report.Point, t0, t1 float64) (a, b report.Point, ok bool) {
	ia, ib := -1, -1
	for i, p := range tl {
		if ia < 0 && p.T >= t0 {
			ia = i
		}
		if p.T <= t1 {
			ib = i
		}
	}
	if ia < 0 || ib <= ia {
		return a, b, false
	}
	return tl[ia], tl[ib], true
}

func delta(a, b report.Point, key string) float64 {
	va, okA := a.Counters[key]
	vb, okB := b.Counters[key]
	if !okB {
		return math.NaN()
	}
	if !okA {
		va = 0
	}
	return vb - va
}

// measure fills the report's stages, processes, WAN and anchor from the
// monitor's timeline between t0 and t1 (seconds since the start).
func (h *Harness) measure(t0, t1 float64) {
	tl := h.mon.Timeline()
	a, b, ok := window(tl, t0, t1)
	if !ok {
		h.fail("measured window %.0f-%.0f s has too few monitor points", t0, t1)
		return
	}
	secs := b.T - a.T
	h.rep.Window = [2]float64{a.T, b.T}
	h.rep.Stages = nil
	for _, s := range stageDefs {
		d := delta(a, b, s.key)
		if math.IsNaN(d) {
			continue
		}
		h.rep.Stages = append(h.rep.Stages, report.Stage{Name: s.name, Source: s.source, Samples: d, SamplesPerSec: div(d, secs)})
	}
	h.rep.Processes = nil
	procs := h.stack.Processes()
	roles := make([]string, 0, len(procs)+1)
	for r := range procs {
		roles = append(roles, r)
	}
	roles = append(roles, "harness")
	sort.Strings(roles)
	for _, role := range roles {
		cpu := finite(delta(a, b, "cpu:"+role))
		samples := 0.0
		if k, ok := roleSamples[role]; ok {
			samples = finite(delta(a, b, k))
		}
		if role == "relay" && samples == 0 {
			samples = finite(delta(a, b, "fleet_acked"))
		}
		n := len(procs[role])
		if role == "harness" {
			n = 1
		}
		h.rep.Processes = append(h.rep.Processes, report.Process{
			Name: roleName(role), Role: role, Count: n, CPUSeconds: cpu, PeakRSS: h.mon.PeakRSS(role), Samples: samples,
			CPUSecondsPerMillion: div(cpu, samples/1e6), SamplesPerCoreSecond: div(samples, cpu),
		})
	}
	busy := finite(delta(a, b, "cpu:machine"))
	ours := 0.0
	for _, p := range h.rep.Processes {
		ours += p.CPUSeconds
	}
	h.rep.Machine.BusyCores = div(busy, secs)
	h.rep.Machine.OtherCores = max(div(busy-ours, secs), 0)
	if h.rep.Machine.OtherCores > 0.2 {
		h.note("other work on this machine used %.2f cores during the measured window (of %.2f busy): the figures were measured under that competition", h.rep.Machine.OtherCores, h.rep.Machine.BusyCores)
	}
	uplink := finite(delta(a, b, "relay_uplink"))
	if uplink == 0 {
		uplink = finite(delta(a, b, "ingester_out"))
	}
	w := report.WAN{
		StreamBytes: finite(delta(a, b, "stream_bytes")), StreamMessages: finite(delta(a, b, "stream_msgs")),
		UplinkSamples: uplink, WireBytes: finite(delta(a, b, "wan_wire_bytes")),
		BackendBytes: finite(delta(a, b, "ingester_backend_bytes")),
	}
	w.BytesPerSample = div(w.StreamBytes, w.UplinkSamples)
	w.WireBytesPerSample = div(w.WireBytes, w.UplinkSamples)
	w.BackendBytesPerSample = div(w.BackendBytes, finite(delta(a, b, "ingester_out")))
	h.rep.WAN = w
	if h.stack.VMAgent != nil {
		var relay, vma report.Process
		for _, p := range h.rep.Processes {
			switch p.Role {
			case "relay":
				relay = p
			case "vmagent":
				vma = p
			}
		}
		an := &report.Anchor{
			VMAgentSamplesPerCoreSecond:  vma.SamplesPerCoreSecond,
			RelaySamplesPerCoreSecond:    relay.SamplesPerCoreSecond,
			VMAgentPeakRSS:               vma.PeakRSS,
			OurBytesPerSample:            w.WireBytesPerSample,
			VMAgentBytesPerSample:        div(finite(delta(a, b, "vmagent_backend_bytes")), finite(delta(a, b, "vmagent_out"))),
			VMAgentBackendBytesPerSample: div(finite(delta(a, b, "vmagent_bytes")), finite(delta(a, b, "vmagent_out"))),
		}
		if relay.Count > 0 {
			an.RelayPeakRSS = relay.PeakRSS
		}
		an.RelayPerCoreRatio = div(an.RelaySamplesPerCoreSecond, an.VMAgentSamplesPerCoreSecond)
		an.BytesPerSampleRatio = div(an.OurBytesPerSample, an.VMAgentBytesPerSample)
		h.rep.Anchor = an
	}
	h.rep.Fleet.Generated = h.fleet.Generated.Load()
	h.rep.Fleet.Retries = h.fleet.Retries.Load()
	_, worst := h.fleet.Behind()
	h.rep.Fleet.MaxBehindSeconds = worst.Seconds()
	if worst.Seconds() > 30 {
		h.note("the fleet fell up to %.0f s behind its schedule: the offered load was more than this machine holds", worst.Seconds())
	}
}

func roleName(role string) string {
	switch role {
	case "relay":
		return "storerelay"
	case "nats":
		return "nats-server"
	case "backend":
		return "victoria-metrics"
	case "harness":
		return "bench (fleet simulator, proxies, monitor)"
	}
	return role
}
