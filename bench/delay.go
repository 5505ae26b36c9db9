package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"tillpipe/bench/internal/fleet"
	"tillpipe/bench/internal/report"
	"tillpipe/bench/internal/vmapi"
)

// probes are the series whose newest timestamp per till the delay tracker
// polls: one device series and one payment-service series (the relay's
// critical class, when its rules put payment there).
var probes = []struct{ name, selector string }{
	{"node_load1", `node_load1`},
	{"payment-gateway cpu", `container_cpu_usage_seconds_total{container="payment-gateway"}`},
}

// DelayTracker measures end-to-end delay from outside: once a second it asks
// VictoriaMetrics for the newest timestamp of each probe series per till
// (tlast_over_time); every acknowledged request newly covered counts one
// delay, from its first send to that poll. The resolution is the poll
// interval plus VictoriaMetrics' own ~1 s search visibility, both included.
type DelayTracker struct {
	vm    *vmapi.Client
	fleet *fleet.Fleet
	paths map[string]string // target -> store prefix in the backend

	mu     sync.Mutex
	seen   map[string]int64     // path|probe|store|device -> newest ts seen
	delays map[string][]float64 // path|probe -> seconds
	// newest timestamp visible per path and store (for "live data visible")
	newest map[string]map[string]int64
}

// NewDelayTracker tracks f's tills under the given target->prefix paths.
func NewDelayTracker(vm *vmapi.Client, f *fleet.Fleet, paths map[string]string) *DelayTracker {
	return &DelayTracker{vm: vm, fleet: f, paths: paths, seen: map[string]int64{}, delays: map[string][]float64{}, newest: map[string]map[string]int64{}}
}

// Run polls every interval until ctx is done. window must cover the
// simulated time span of the run.
func (d *DelayTracker) Run(ctx context.Context, interval time.Duration, window func() time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.poll(ctx, window())
		}
	}
}

func (d *DelayTracker) poll(ctx context.Context, window time.Duration) {
	infos := d.fleet.TillInfos()
	for target, prefix := range d.paths {
		for _, pr := range probes {
			q := fmt.Sprintf(`tlast_over_time(%s[%ds])`, withStore(pr.selector, prefix), int64(window.Seconds())+60)
			res, err := d.vm.Query(ctx, q)
			now := time.Now()
			if err != nil {
				continue
			}
			d.mu.Lock()
			for _, s := range res {
				store, dev := s.Metric["store"], s.Metric["device"]
				ts := int64(math.Round(s.Value * 1000))
				key := target + "|" + pr.name + "|" + store + "|" + dev
				prev, ok := d.seen[key]
				if ok && ts <= prev {
					continue
				}
				d.seen[key] = ts
				if d.newest[target] == nil {
					d.newest[target] = map[string]int64{}
				}
				if pr.name == probes[0].name {
					d.newest[target][store] = max(d.newest[target][store], ts)
				}
				if !ok {
					prev = 0
				}
				for _, ti := range infos {
					st := ti.StoreID
					if target == fleet.TargetVMAgent {
						st = ti.StoreLabel
					}
					if st != store || ti.Device != dev {
						continue
					}
					for _, r := range ti.Ledgers[target].AckedBetween(prev, ts) {
						d.delays[target+"|"+pr.name] = append(d.delays[target+"|"+pr.name], now.Sub(r.Sent).Seconds())
					}
				}
			}
			d.mu.Unlock()
		}
	}
}

// NewestByStore is the newest probe timestamp visible per store on path.
func (d *DelayTracker) NewestByStore(target string) map[string]int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]int64{}
	for k, v := range d.newest[target] {
		out[k] = v
	}
	return out
}

// Reset forgets the delays recorded so far (after warm-up).
func (d *DelayTracker) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.delays)
}

// Results is p50/p99/max per path and probe.
func (d *DelayTracker) Results() []report.Delay {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []report.Delay
	for target := range d.paths {
		for _, pr := range probes {
			v := slices.Clone(d.delays[target+"|"+pr.name])
			if len(v) == 0 {
				continue
			}
			slices.Sort(v)
			out = append(out, report.Delay{Probe: pr.selector, Path: target, Count: len(v),
				P50: quantile(v, 0.5), P99: quantile(v, 0.99), Max: v[len(v)-1]})
		}
	}
	slices.SortFunc(out, func(a, b report.Delay) int {
		if a.Path != b.Path {
			return cmpStr(a.Path, b.Path)
		}
		return cmpStr(a.Probe, b.Probe)
	})
	return out
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// withStore adds store=~"prefix.*" to a selector.
func withStore(sel, prefix string) string {
	m := fmt.Sprintf(`store=~"%s.*"`, prefix)
	if n := len(sel); n > 0 && sel[n-1] == '}' {
		return sel[:n-1] + "," + m + "}"
	}
	return sel + "{" + m + "}"
}
