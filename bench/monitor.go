package main

import (
	"context"
	"math"
	"sync"
	"time"

	"tillpipe/bench/internal/fleet"
	"tillpipe/bench/internal/proc"
	"tillpipe/bench/internal/promtext"
	"tillpipe/bench/internal/report"
)

// Metric names the harness reads from each process's /metrics.
const (
	mRelayReceived   = "tillpipe_relay_samples_received_total"
	mRelayUplinkSmp  = "tillpipe_relay_uplink_samples_total"
	mRelayUplinkByt  = "tillpipe_relay_uplink_bytes_total"
	mRelayBacklog    = "tillpipe_relay_backlog_bytes"
	mRelayOldest     = "tillpipe_relay_backlog_oldest_seconds"
	mIngesterWritten = "tillpipe_ingester_samples_written_total"
	mVMInserted      = "vm_rows_inserted_total"
	mVMAgentIn       = "vmagent_rows_inserted_total"
	mVMAgentOut      = "vmagent_remotewrite_rows_pushed_after_relabel_total"
	mVMAgentBytes    = "vmagent_remotewrite_bytes_sent_total"
)

// Monitor samples every process and endpoint once a second from outside:
// /proc for CPU and memory, /metrics for samples through each stage, the
// stream's state, the WAN links' byte counts and the store-side disks. It
// keeps the timeline for the report and the latest point for the status
// line. Run once; the accessors are safe for concurrent use.
type Monitor struct {
	stack *Stack
	fleet *fleet.Fleet
	start time.Time

	mu       sync.Mutex
	timeline []report.Point
	counters map[string]*counter // reset-proof cumulative counters
	cpu      map[string]float64  // role -> CPU seconds (latest)
	peakRSS  map[string]int64    // role -> highest single-process peak
	peakDown map[string]int64    // role -> highest RSS since MarkPeak
	backlog  map[string]float64  // store -> bytes
}

// counter accumulates a counter that may reset (a restarted process).
type counter struct {
	base, last float64
	seen       bool
}

func (c *counter) observe(v float64) float64 {
	if math.IsNaN(v) {
		return c.base + c.last
	}
	if c.seen && v < c.last {
		c.base += c.last
	}
	c.last, c.seen = v, true
	return c.base + c.last
}

// NewMonitor returns a monitor of stack and f (f may be nil).
func NewMonitor(stack *Stack, f *fleet.Fleet, start time.Time) *Monitor {
	return &Monitor{stack: stack, fleet: f, start: start, counters: map[string]*counter{},
		cpu: map[string]float64{}, peakRSS: map[string]int64{}, peakDown: map[string]int64{}, backlog: map[string]float64{}}
}

// Run samples every interval until ctx is done.
func (m *Monitor) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	m.Sample(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.Sample(ctx)
		}
	}
}

func (m *Monitor) acc(key string, v float64) float64 {
	c := m.counters[key]
	if c == nil {
		c = &counter{}
		m.counters[key] = c
	}
	return c.observe(v)
}

// Sample takes one point now.
func (m *Monitor) Sample(ctx context.Context) report.Point {
	type scrape struct {
		key string
		m   promtext.Metrics
		ok  bool
	}
	var (
		wg      sync.WaitGroup
		smu     sync.Mutex
		scrapes []scrape
	)
	get := func(key, url string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mt, err := promtext.Scrape(ctx, url)
			smu.Lock()
			scrapes = append(scrapes, scrape{key, mt, err == nil})
			smu.Unlock()
		}()
	}
	for _, r := range m.stack.LiveRelays() {
		get("relay:"+r.Store, r.MetricsURL())
	}
	for _, in := range m.stack.LiveIngesters() {
		get("ingester:"+in.Proc.Name(), in.MetricsURL())
	}
	if m.stack.VM != nil {
		get("vm", m.stack.VMClient.Base()+"/metrics")
	}
	if m.stack.VMAgent != nil {
		get("vmagent", m.stack.VMAgentBase()+"/metrics")
	}
	streamBytes, streamMsgs, streamOK := m.stack.StreamState(ctx)
	usage := map[string][]proc.Usage{}
	for role, ps := range m.stack.Processes() {
		for _, p := range ps {
			usage[role] = append(usage[role], p.Sample())
		}
	}
	self := proc.Self()
	diskRelay := 0.0
	for _, r := range m.stack.LiveRelays() {
		diskRelay += float64(proc.DirSize(r.DataDir))
	}
	diskVMAgent := -1.0
	if m.stack.VMAgent != nil {
		diskVMAgent = float64(proc.DirSize(m.stack.VMAgentData))
	}
	wg.Wait()

	m.mu.Lock()
	defer m.mu.Unlock()
	p := report.Point{T: time.Since(m.start).Seconds(), Counters: map[string]float64{}, Backlog: map[string]float64{}, Disk: map[string]float64{}, RSS: map[string]float64{}}
	sums := map[string]float64{}
	have := map[string]bool{}
	add := func(name, key string, v float64) {
		if math.IsNaN(v) {
			return
		}
		sums[name] += m.acc(key, v)
		have[name] = true
	}
	for _, s := range scrapes {
		if !s.ok {
			// Keep the accumulated values of a process that is down.
			for _, name := range []string{"relay_in", "relay_uplink", "relay_uplink_bytes", "ingester_out"} {
				if c := m.counters[name+"|"+s.key]; c != nil {
					sums[name] += c.base + c.last
					have[name] = true
				}
			}
			continue
		}
		switch {
		case len(s.key) > 6 && s.key[:6] == "relay:":
			add("relay_in", "relay_in|"+s.key, s.m.Sum(mRelayReceived))
			add("relay_uplink", "relay_uplink|"+s.key, s.m.Sum(mRelayUplinkSmp))
			add("relay_uplink_bytes", "relay_uplink_bytes|"+s.key, s.m.Sum(mRelayUplinkByt))
			store := s.key[6:]
			m.backlog[store] = 0
			for class, v := range s.m.By(mRelayBacklog, "class") {
				p.Backlog[class] += v
				m.backlog[store] += v
			}
			for class, v := range s.m.By(mRelayOldest, "class") {
				if p.Oldest == nil {
					p.Oldest = map[string]float64{}
				}
				p.Oldest[class] = max(p.Oldest[class], v)
			}
		case len(s.key) > 9 && s.key[:9] == "ingester:":
			add("ingester_out", "ingester_out|"+s.key, s.m.Sum(mIngesterWritten))
		case s.key == "vm":
			add("vm_in", "vm_in", s.m.Sum(mVMInserted, "type", "promremotewrite"))
		case s.key == "vmagent":
			add("vmagent_in", "vmagent_in", s.m.Sum(mVMAgentIn, "type", "promremotewrite"))
			add("vmagent_out", "vmagent_out", s.m.Sum(mVMAgentOut))
			add("vmagent_bytes", "vmagent_bytes", s.m.Sum(mVMAgentBytes))
		}
	}
	for name, v := range sums {
		if have[name] {
			p.Counters[name] = v
		}
	}
	if m.fleet != nil {
		p.Counters["fleet_acked"] = float64(m.fleet.AckedRelay.Load())
		p.Counters["fleet_acked_vmagent"] = float64(m.fleet.AckedVMAgent.Load())
		p.Counters["fleet_generated"] = float64(m.fleet.Generated.Load())
	}
	if streamOK {
		p.Counters["stream_bytes"] = streamBytes
		p.Counters["stream_msgs"] = streamMsgs
	}
	var wire float64
	for _, r := range m.stack.LiveRelays() {
		wire += float64(r.Uplink.BytesUp())
	}
	p.Counters["wan_wire_bytes"] = wire
	if l := m.stack.IngesterLink; l != nil {
		p.Counters["ingester_backend_bytes"] = float64(l.BytesUp())
	}
	if l := m.stack.VMAgentLink; l != nil {
		p.Counters["vmagent_backend_bytes"] = float64(l.BytesUp())
	}
	for role, us := range usage {
		cpu, rss := 0.0, 0.0
		for _, u := range us {
			cpu += u.CPUSeconds
			rss += float64(u.RSSBytes)
			m.peakRSS[role] = max(m.peakRSS[role], u.PeakRSS)
			m.peakDown[role] = max(m.peakDown[role], u.RSSBytes)
		}
		m.cpu[role] = cpu
		p.Counters["cpu:"+role] = cpu
		p.RSS[role] = rss
	}
	p.Counters["cpu:harness"] = self.CPUSeconds
	p.Counters["cpu:machine"] = proc.MachineBusySeconds()
	m.peakRSS["harness"] = max(m.peakRSS["harness"], self.PeakRSS)
	p.RSS["harness"] = float64(self.RSSBytes)
	p.Disk["relay"] = diskRelay
	if diskVMAgent >= 0 {
		p.Disk["vmagent"] = diskVMAgent
	}
	m.timeline = append(m.timeline, p)
	return p
}

// Timeline is every point so far.
func (m *Monitor) Timeline() []report.Point {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]report.Point(nil), m.timeline...)
}

// Last is the latest point and the one before it (for rates).
func (m *Monitor) Last() (prev, last report.Point, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.timeline)
	if n < 2 {
		return report.Point{}, report.Point{}, false
	}
	return m.timeline[n-2], m.timeline[n-1], true
}

// PeakRSS is the highest peak RSS of any single process of role.
func (m *Monitor) PeakRSS(role string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peakRSS[role]
}

// MarkPeak starts a new RSS-peak interval (before a backend outage, say)
// and returns the current RSS per role.
func (m *Monitor) MarkPeak() map[string]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int64{}
	if n := len(m.timeline); n > 0 {
		for role, v := range m.timeline[n-1].RSS {
			out[role] = int64(v)
		}
	}
	clear(m.peakDown)
	return out
}

// PeakSinceMark is the highest summed RSS sample per role since MarkPeak.
func (m *Monitor) PeakSinceMark(role string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peakDown[role]
}

// BacklogByStore is each store's relay backlog bytes at the latest sample.
func (m *Monitor) BacklogByStore() map[string]float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]float64, len(m.backlog))
	for k, v := range m.backlog {
		out[k] = v
	}
	return out
}
