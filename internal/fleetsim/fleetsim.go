// Package fleetsim simulates the metrics of one till: about 30 containers
// with cAdvisor-style series and about 40 node_exporter-style device series,
// 400 series in all, with values that behave like the real ones (counters
// that grow at plausible rates and reset when a container restarts, gauges
// that wander, constants). It is deterministic given its seed, so tests,
// benchmarks and the load harness see the same data run after run.
package fleetsim

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

// DefaultRestartProbability is the chance, per container and per sample,
// that [Till.AppendSeries] simulates a container restart.
const DefaultRestartProbability = 1e-4

// ContainerNames are the services every simulated till runs, one container each.
var ContainerNames = [...]string{
	"payment-gateway", "pos-ui", "auth-agent", "scanner-driver", "printer-spooler",
	"cash-drawer", "card-terminal", "receipt-service", "loyalty-client", "price-lookup",
	"inventory-sync", "promo-engine", "tax-calculator", "basket-service", "customer-display",
	"scale-driver", "log-shipper", "metrics-collector", "update-agent", "config-agent",
	"vpn-client", "time-sync", "license-agent", "kiosk-browser", "voucher-service",
	"gift-card", "age-verification", "checkout-vision", "video-analytics", "health-checker",
}

// ImageRegistry prefixes every container image: registry.retail.example/pos/<name>:1.42.3.
const ImageRegistry = "registry.retail.example/pos/"

const imageTag = ":1.42.3"

type kind uint8

const (
	counter  kind = iota // grows at rate per second ± jitter; reset by a restart if resets is set
	gauge                // random walk within [lo, hi]
	constant             // value never changes (limits, state, start time until a restart)
)

type series struct {
	labels    []prompb.Label
	kind      kind
	value     float64
	rate      float64 // counter: increase per second
	lo, hi    float64 // gauge: bounds
	step      float64 // gauge: standard deviation of one step
	integer   bool    // round the value (bytes, threads)
	container int     // index into Till.containers, -1 for device series
	resets    bool    // counter: back to zero when its container restarts
	startTime bool    // constant: set to the restart time when its container restarts
	restarts  bool    // till_container_restarts_total: +1 per restart of its container
}

// Till is one simulated device. It is not safe for concurrent use.
type Till struct {
	// RestartProbability is the chance, per container and per call of
	// AppendSeries, of a simulated restart. NewTill sets
	// [DefaultRestartProbability]; set 0 to disable restarts.
	RestartProbability float64

	rng        *rand.Rand
	series     []series
	containers int
	lastMillis int64
	started    bool
	restarted  []bool // per container, scratch for one AppendSeries call
}

// NewTill returns the simulated till device of store, its state derived from seed.
func NewTill(store, device string, seed int64) *Till {
	t := &Till{
		RestartProbability: DefaultRestartProbability,
		rng:                rand.New(rand.NewPCG(uint64(seed), 0x7e11_91be_5eed_0001)),
		containers:         len(ContainerNames),
	}
	t.restarted = make([]bool, t.containers)
	for i, name := range ContainerNames {
		t.addContainer(store, device, i, name)
	}
	t.addDevice(store, device)
	return t
}

// SeriesCount returns how many series each call of AppendSeries appends.
func (t *Till) SeriesCount() int { return len(t.series) }

// AppendSeries appends one TimeSeries per series of t, each with one sample at
// tsMillis, to dst and returns it; then the values advance by the time since
// the previous call. Series come in the same order on every call, so callers
// can merge calls into multi-sample series by index.
//
// The Labels of the appended series are shared with t and later calls and
// must not be modified. Each Samples slice is the caller's (its capacity is 1,
// so appending to it copies).
func (t *Till) AppendSeries(dst []prompb.TimeSeries, tsMillis int64) []prompb.TimeSeries {
	dt := 0.0
	if t.started && tsMillis > t.lastMillis {
		dt = float64(tsMillis-t.lastMillis) / 1000
	}
	t.started, t.lastMillis = true, tsMillis
	if dt > 0 {
		for c := range t.restarted {
			t.restarted[c] = t.rng.Float64() < t.RestartProbability
		}
	}
	samples := make([]prompb.Sample, len(t.series))
	for i := range t.series {
		s := &t.series[i]
		if dt > 0 {
			t.advance(s, dt, tsMillis)
		}
		samples[i] = prompb.Sample{Value: s.value, Timestamp: tsMillis}
		dst = append(dst, prompb.TimeSeries{Labels: s.labels, Samples: samples[i : i+1 : i+1]})
	}
	clear(t.restarted)
	return dst
}

func (t *Till) advance(s *series, dt float64, tsMillis int64) {
	restarted := s.container >= 0 && t.restarted[s.container]
	switch s.kind {
	case counter:
		switch {
		case s.restarts:
			if restarted {
				s.value++
			}
		case restarted && s.resets:
			// Fresh process: what it did since it started, a few seconds at most.
			s.value = s.rate * t.rng.Float64() * min(dt, 5)
		default:
			s.value += s.rate * dt * (0.8 + 0.4*t.rng.Float64())
		}
	case gauge:
		s.value += s.step * t.rng.NormFloat64() * math.Sqrt(dt/15)
		s.value = min(max(s.value, s.lo), s.hi)
	case constant:
		if restarted && s.startTime {
			s.value = float64(tsMillis / 1000)
		}
	}
	if s.integer {
		s.value = math.Round(s.value)
	}
}

// between returns a uniform value in [lo, hi).
func (t *Till) between(lo, hi float64) float64 { return lo + (hi-lo)*t.rng.Float64() }

// labels builds a sorted label set from name/value pairs.
func labels(name string, kv ...string) []prompb.Label {
	ls := make([]prompb.Label, 0, 1+len(kv)/2)
	ls = append(ls, prompb.Label{Name: "__name__", Value: name})
	for i := 0; i+1 < len(kv); i += 2 {
		ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	slices.SortFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	return ls
}

const (
	mib = 1 << 20
	gib = 1 << 30
)

func (t *Till) addContainer(store, device string, c int, name string) {
	base := []string{"store", store, "device", device, "container", name, "image", ImageRegistry + name + imageTag}
	with := func(kv ...string) []string { return append(slices.Clip(base), kv...) }
	limit := float64([]int{128, 256, 512, 1024}[t.rng.IntN(4)] * mib)
	cpu := t.between(0.005, 0.25) // cores
	ws := limit * t.between(0.2, 0.7)
	uptime := t.between(3600, 14*86400) // seconds since the container started
	add := func(s series, name string, kv ...string) {
		s.labels = labels(name, with(kv...)...)
		s.container = c
		t.series = append(t.series, s)
	}
	add(series{kind: counter, rate: cpu, value: cpu * uptime, resets: true}, "container_cpu_usage_seconds_total")
	add(series{kind: counter, rate: cpu * 0.02, value: cpu * 0.02 * uptime, resets: true}, "container_cpu_cfs_throttled_seconds_total")
	add(series{kind: gauge, value: ws, lo: limit * 0.05, hi: limit * 0.95, step: limit * 0.005, integer: true}, "container_memory_working_set_bytes")
	add(series{kind: gauge, value: ws * 0.8, lo: limit * 0.04, hi: limit * 0.9, step: limit * 0.004, integer: true}, "container_memory_rss")
	add(series{kind: constant, value: limit}, "container_spec_memory_limit_bytes")
	add(series{kind: gauge, value: math.Round(t.between(4, 60)), lo: 2, hi: 120, step: 1, integer: true}, "container_threads")
	readRate := math.Round(t.between(0, 64*1024))
	add(series{kind: counter, rate: readRate, value: readRate * uptime, integer: true, resets: true}, "container_fs_reads_bytes_total")
	writeRate := math.Round(t.between(0, 256*1024))
	add(series{kind: counter, rate: writeRate, value: writeRate * uptime, integer: true, resets: true}, "container_fs_writes_bytes_total")
	add(series{kind: counter, rate: 0}, "container_oom_events_total")
	add(series{kind: constant, value: 1}, "till_container_state", "state", "running")
	add(series{kind: counter, value: float64(t.rng.IntN(3)), restarts: true}, "till_container_restarts_total")
	add(series{kind: constant, startTime: true, value: math.Round(1.7e9 - uptime)}, "container_start_time_seconds")
}

func (t *Till) addDevice(store, device string) {
	base := []string{"store", store, "device", device}
	uptime := t.between(86400, 30*86400)
	add := func(s series, name string, kv ...string) {
		s.labels = labels(name, append(slices.Clip(base), kv...)...)
		s.container = -1
		t.series = append(t.series, s)
	}
	// Four CPUs, each splitting one second per second among six modes.
	modes := []string{"idle", "user", "system", "iowait", "irq", "softirq"}
	for cpu := range 4 {
		busy := t.between(0.1, 0.45)
		shares := []float64{1 - busy, busy * 0.6, busy * 0.3, busy * 0.06, busy * 0.02, busy * 0.02}
		for m, mode := range modes {
			add(series{kind: counter, rate: shares[m], value: shares[m] * uptime}, "node_cpu_seconds_total", "cpu", strconv.Itoa(cpu), "mode", mode)
		}
	}
	total := float64(8 * gib)
	avail := total * t.between(0.3, 0.6)
	add(series{kind: constant, value: total}, "node_memory_MemTotal_bytes")
	add(series{kind: gauge, value: avail, lo: total * 0.05, hi: total * 0.9, step: total * 0.002, integer: true}, "node_memory_MemAvailable_bytes")
	add(series{kind: gauge, value: avail * 0.3, lo: total * 0.01, hi: total * 0.5, step: total * 0.001, integer: true}, "node_memory_MemFree_bytes")
	add(series{kind: gauge, value: avail * 0.5, lo: total * 0.02, hi: total * 0.6, step: total * 0.001, integer: true}, "node_memory_Cached_bytes")
	add(series{kind: gauge, value: t.between(0.2, 1.5), lo: 0, hi: 8, step: 0.15}, "node_load1")
	add(series{kind: gauge, value: t.between(0.2, 1.5), lo: 0, hi: 8, step: 0.07}, "node_load5")
	add(series{kind: gauge, value: t.between(0.2, 1.5), lo: 0, hi: 8, step: 0.03}, "node_load15")
	fsSize := float64(128 * gib)
	add(series{kind: constant, value: fsSize}, "node_filesystem_size_bytes", "mountpoint", "/", "fstype", "ext4")
	add(series{kind: gauge, value: fsSize * t.between(0.3, 0.8), lo: 0, hi: fsSize, step: 256 * 1024, integer: true}, "node_filesystem_avail_bytes", "mountpoint", "/", "fstype", "ext4")
	for _, dir := range []string{"receive", "transmit"} {
		rate := math.Round(t.between(2e3, 80e3))
		add(series{kind: counter, rate: rate, value: rate * uptime, integer: true}, "node_network_"+dir+"_bytes_total", "interface", "eth0")
	}
	// node_exporter labels disks "device", which here names the till, so the
	// disk series carry the disk as "disk" instead.
	for _, dir := range []string{"read", "written"} {
		rate := math.Round(t.between(4e3, 400e3))
		add(series{kind: counter, rate: rate, value: rate * uptime, integer: true}, "node_disk_"+dir+"_bytes_total", "disk", "sda")
	}
	ctx := math.Round(t.between(2e3, 20e3))
	add(series{kind: counter, rate: ctx, value: ctx * uptime, integer: true}, "node_context_switches_total")
	add(series{kind: gauge, value: 2, lo: 1, hi: 12, step: 1, integer: true}, "node_procs_running")
	add(series{kind: constant, value: math.Round(1.7e9 - uptime)}, "node_boot_time_seconds")
}
