package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/client_golang/prometheus"

	"tillpipe/internal/collector/cgroup"
	"tillpipe/internal/collector/docker"
	"tillpipe/internal/collector/node"
)

// StaleNaN is the Prometheus staleness marker: a series that ended gets one
// sample with this value (remote-write spec, "Stale Markers").
var StaleNaN = math.Float64frombits(0x7ff0000000000002)

// IsStaleNaN reports whether v is the staleness marker.
func IsStaleNaN(v float64) bool { return math.Float64bits(v) == 0x7ff0000000000002 }

// ErrInvalidOption is wrapped by every error about a bad [Options] field.
var ErrInvalidOption = errors.New("invalid option")

// Options configures a [Collector]. The zero value of each field means its
// default; Device is required.
type Options struct {
	// Device is the value of the device label on every series.
	Device string
	// CgroupRoot is where the cgroup filesystem is mounted; default
	// /sys/fs/cgroup.
	CgroupRoot string
	// ProcRoot is where procfs is mounted; default /proc.
	ProcRoot string
	// DockerSocket is the Docker (or Podman) Engine API socket; default
	// /var/run/docker.sock.
	DockerSocket string
	// NoDocker disables the runtime source: containers are then named by
	// their cgroup path.
	NoDocker bool
	// DockerTimeout bounds one Engine API request; default 5s.
	DockerTimeout time.Duration
	// Statfs replaces syscall.Statfs for the filesystem metrics (tests).
	Statfs func(path string, buf *syscall.Statfs_t) error
	// Logger receives source errors, at most once a minute per source,
	// and the engine event stream's failures, at most once a minute; nil
	// discards.
	Logger *slog.Logger
	// Registerer receives the collector's own metrics; nil registers
	// nowhere.
	Registerer prometheus.Registerer
}

// seriesKey identifies a series across cycles without building its labels.
type seriesKey struct {
	d                *desc
	container, image string
	a, b             string
}

// series is one interned label set and its sample of the current cycle.
// Its key is in Collector.series and Collector.keys.
type series struct {
	pb    []byte // the label set, marshaled once (see marshal.go)
	value float64
	gen   uint64 // the cycle that last sampled it
	dead  bool   // forgotten after its stale marker: slots must not reuse it
}

// Collector samples every source into remote-write time series. Label sets
// are interned across cycles, and a series that is not sampled again gets a
// stale marker in the next cycle. It is unsafe for concurrent use.
type Collector struct {
	device string
	log    *slog.Logger

	cg      *cgroup.Reader
	cgErr   error // from cgroup.New; reported every cycle
	tracker *docker.Tracker
	dc      *docker.Client
	events  *docker.Events // followed by Agent.Run; nil without Docker
	node    *node.Reader

	gen    uint64
	ts     int64
	series map[seriesKey]*series
	// slots remembers the series of each emit ordinal of the last cycle,
	// and keys their keys: a cycle emits the same series in the same
	// order as the one before, so emit checks the slot's key instead of
	// hashing it (see emit).
	slots []*series
	keys  []seriesKey // empty in the first cycle (see begin), then as long as slots
	n     int         // emit ordinal in this cycle
	cycle []*series   // sampled this cycle, then the stale ones; see fast
	// While fast, a cycle emits the series of the last one in its order:
	// emit compares each key with keys, writes the samples in vals, by
	// ordinal, and neither touches the series nor appends to cycle until
	// a key differs (materialize). A steady cycle so reads and writes two
	// dense arrays instead of visiting a thousand series objects spread
	// over the heap, which are cold after 15 s (see doc.go, eleventh
	// pass).
	fast  bool
	vals  []float64
	clean bool   // the last cycle sampled slots' series, each once, and none went stale
	seq   uint64 // changes with each cycle that may not list the last one's series in its order
	out   []prompb.TimeSeries
	body  body // the last WriteRequest

	cgs     []*cgroup.Container
	cgAll   bool // the next Discover lists every subtree (see collectContainers)
	ctrs    []*docker.Container
	byID    map[string]*docker.Container
	cgStats cgroup.Stats
	nStats  node.Stats

	errCount   map[string]float64
	errMetric  *prometheus.CounterVec
	errLogged  map[string]time.Time
	cycleTime  prometheus.Gauge
	seriesGage prometheus.Gauge
}

// New returns a collector for opts. A missing cgroup hierarchy is not an
// error here: it is reported as a scrape error of source "cgroup" every
// cycle, so the device metrics still flow.
func New(opts Options) (*Collector, error) {
	if opts.Device == "" {
		return nil, fmt.Errorf("device is empty: %w", ErrInvalidOption)
	}
	c := &Collector{
		device:    opts.Device,
		log:       opts.Logger,
		series:    make(map[seriesKey]*series),
		byID:      make(map[string]*docker.Container),
		errCount:  map[string]float64{sourceCgroup: 0, sourceDocker: 0, sourceNode: 0},
		errLogged: make(map[string]time.Time),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "collector")
	c.cg, c.cgErr = cgroup.New(cgroup.Options{Root: opts.CgroupRoot})
	if !opts.NoDocker {
		c.dc = docker.NewClient(docker.Options{Socket: opts.DockerSocket, Timeout: opts.DockerTimeout})
		c.tracker = docker.NewTracker(c.dc)
		c.events = docker.NewEvents(docker.EventsOptions{Socket: opts.DockerSocket, Timeout: opts.DockerTimeout, Logger: opts.Logger})
		c.tracker.Follow(c.events)
	}
	c.node = node.NewReader(node.Options{ProcRoot: opts.ProcRoot, Statfs: opts.Statfs})

	c.errMetric = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "scrape_errors_total", Help: "Errors reading each source.",
	}, []string{"source"})
	c.cycleTime = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "last_cycle_duration_seconds", Help: "Wall time of the last sampling cycle.",
	})
	c.seriesGage = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "series", Help: "Series sampled in the last cycle, stale markers included.",
	})
	for s := range c.errCount {
		c.errMetric.WithLabelValues(s)
	}
	if opts.Registerer != nil {
		ms := []prometheus.Collector{c.errMetric, c.cycleTime, c.seriesGage}
		if ev := c.events; ev != nil {
			ms = append(ms, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "docker_events_connected", Help: "1 while the engine's event stream is open; at 0 the containers are listed every cycle.",
			}, func() float64 {
				if ev.Connected() {
					return 1
				}
				return 0
			}), prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "docker_events_total", Help: "Container events read from the engine's event stream.",
			}, func() float64 { n, _ := ev.Counts(); return float64(n) }))
		}
		for _, m := range ms {
			if err := opts.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("register collector metrics: %w", err)
			}
		}
	}
	return c, nil
}

// Close releases the cgroup and /proc files and the Engine API connection.
func (c *Collector) Close() {
	if c.cg != nil {
		c.cg.Close()
	}
	if c.dc != nil {
		c.dc.Close()
	}
	c.node.Close()
}

// CgroupMode is the cgroup version found, 0 when none.
func (c *Collector) CgroupMode() cgroup.Mode {
	if c.cg == nil {
		return 0
	}
	return c.cg.Mode()
}

// Collect samples every source at now and returns the series, each with one
// sample stamped now, followed by stale markers for the series of the
// previous cycle that are gone. The result is valid until the next call.
func (c *Collector) Collect(ctx context.Context, now time.Time) []prompb.TimeSeries {
	c.collect(ctx, now)
	c.out = c.out[:0]
	cycle := c.sampled()
	samples := make([]prompb.Sample, len(cycle))
	for i, s := range cycle {
		ls, err := decodeLabelsPB(s.pb)
		if err != nil {
			panic(fmt.Sprintf("collector: interned label set does not decode: %v", err)) // a bug in appendLabelsPB
		}
		samples[i] = prompb.Sample{Value: s.value, Timestamp: c.ts}
		c.out = append(c.out, prompb.TimeSeries{Labels: ls, Samples: samples[i : i+1 : i+1]})
	}
	return c.out
}

// WriteRequest samples every source at now, as [Collector.Collect] does,
// and returns the cycle as a remote-write WriteRequest, marshaled without
// building the TimeSeries and compressed with snappy (block format, as
// remote-write sends it), and the number of series. The request is valid
// until the next call: when a cycle has the series of the last one, in the
// same order, it is the last request with the samples rewritten in place
// (see body).
func (c *Collector) WriteRequest(ctx context.Context, now time.Time) ([]byte, int) {
	c.collect(ctx, now)
	if c.fast {
		if req, ok := c.body.writeValues(c.seq, c.vals[:c.n], c.ts); ok {
			return req, c.n
		}
	}
	cycle := c.sampled()
	return c.body.marshalSnappy(cycle, c.seq, c.ts), len(cycle)
}

// collect samples every source into c.cycle.
func (c *Collector) collect(ctx context.Context, now time.Time) {
	start := time.Now()
	c.begin(now)
	c.collectContainers(ctx)
	c.collectNode()
	for _, s := range []string{sourceCgroup, sourceDocker, sourceNode} {
		c.emit(mScrapeErrors, "", "", s, "", c.errCount[s])
	}
	c.end()
	c.cycleTime.Set(time.Since(start).Seconds())
	c.seriesGage.Set(float64(c.sampledLen()))
}

// begin starts a cycle at now: emit samples into it.
func (c *Collector) begin(now time.Time) {
	c.gen++
	c.ts = now.UnixMilli()
	c.cycle = c.cycle[:0]
	c.n = 0
	if c.keys == nil && len(c.slots) > 0 {
		// The first cycle grew slots by appending and left garbage that
		// the paced GC freed after it (gcPacer); keys, 72 bytes a slot,
		// are made here at the size it found, so as not to add to the
		// peak of a first cycle. This cycle finds its series by hashing
		// and fills them in.
		c.keys = make([]seriesKey, 0, len(c.slots)+len(c.slots)/8)
	}
	c.fast = c.clean && len(c.keys) == len(c.slots)
	if c.fast && len(c.vals) < len(c.slots) {
		c.vals = make([]float64, cap(c.keys))
	}
}

// end appends the stale markers to the cycle and forgets their series.
func (c *Collector) end() {
	if c.fast && c.n == len(c.slots) {
		return // the last cycle's series in its order: none goes stale
	}
	c.materialize()
	// Every series sampled this cycle is in c.cycle once; any other series
	// in c.series was not sampled and goes stale.
	c.clean = len(c.cycle) == c.n
	if len(c.cycle) != len(c.series) {
		for k, s := range c.series {
			if s.gen != c.gen {
				s.value, s.dead = StaleNaN, true
				c.cycle = append(c.cycle, s)
				delete(c.series, k)
				c.clean = false
			}
		}
	}
	clear(c.slots[c.n:])
	c.slots = c.slots[:c.n]
	if c.keys != nil {
		c.keys = c.keys[:c.n]
	}
	c.seq++
}

// materialize ends the fast path: the series emitted so far get their
// samples from vals and are listed in cycle, as if emitted without it.
func (c *Collector) materialize() {
	if !c.fast {
		return
	}
	c.fast = false
	for i, s := range c.slots[:c.n] {
		s.gen, s.value = c.gen, c.vals[i]
		c.cycle = append(c.cycle, s)
	}
}

// sampled returns the series of the cycle, stale markers last.
func (c *Collector) sampled() []*series {
	c.materialize()
	return c.cycle
}

// sampledLen is len(c.sampled()) without ending the fast path.
func (c *Collector) sampledLen() int {
	if c.fast {
		return c.n
	}
	return len(c.cycle)
}

// sourceError counts err against source and logs it at most once a minute.
func (c *Collector) sourceError(source string, err error) {
	c.errCount[source]++
	c.errMetric.WithLabelValues(source).Inc()
	now := time.Now()
	if last, ok := c.errLogged[source]; ok && now.Sub(last) < time.Minute {
		return
	}
	c.errLogged[source] = now
	c.log.Warn("read source", "source", source, "err", err)
}

func (c *Collector) collectContainers(ctx context.Context) {
	c.ctrs = c.ctrs[:0]
	if c.tracker != nil {
		var err error
		c.ctrs, err = c.tracker.Containers(ctx, c.ctrs)
		if err != nil {
			c.sourceError(sourceDocker, err)
		}
		if c.tracker.Listed() { // else the containers of the last cycle, indexed then
			clear(c.byID)
			for _, d := range c.ctrs {
				c.byID[d.ID] = d
			}
		}
	}
	if c.cg == nil {
		c.sourceError(sourceCgroup, c.cgErr)
	} else {
		// The engine's subtrees are listed only when the engine's
		// containers may have changed: when the tracker listed them (after
		// an event, and every ReconcileCycles cycles), and while one that
		// runs has no cgroup found yet, or after a failed listing.
		scope := cgroup.All
		if c.tracker != nil && !c.tracker.Listed() && !c.cgAll {
			scope = cgroup.NotEngine
		}
		var err error
		c.cgs, err = c.cg.Discover(c.cgs[:0], scope)
		if err != nil {
			c.sourceError(sourceCgroup, err)
		}
		found := 0 // running or paused engine containers with a cgroup
		for _, cg := range c.cgs {
			name, image := cg.Path, ""
			if d := c.byID[cg.ID]; d != nil {
				name, image = d.Name, d.Image
				if d.State == "running" || d.State == "paused" {
					found++
				}
			}
			if err := c.cg.Read(cg, &c.cgStats); err != nil {
				c.sourceError(sourceCgroup, err)
			}
			c.emitCgroup(name, image, &c.cgStats)
		}
		running := 0
		for _, d := range c.ctrs {
			if d.State == "running" || d.State == "paused" {
				running++
			}
		}
		c.cgAll = err != nil || found < running
	}
	for _, d := range c.ctrs {
		c.emitRuntime(d)
	}
}

func (c *Collector) emitCgroup(name, image string, st *cgroup.Stats) {
	h := st.Has
	f := func(bit cgroup.Field, d *desc, v float64) {
		if h&bit != 0 {
			c.emit(d, name, image, "", "", v)
		}
	}
	f(cgroup.FieldCPUUsage, mCPUUsage, st.CPUUsage)
	f(cgroup.FieldCPUUser, mCPUUser, st.CPUUser)
	f(cgroup.FieldCPUSystem, mCPUSystem, st.CPUSystem)
	f(cgroup.FieldThrottledPeriods, mThrottledPeriods, float64(st.ThrottledPeriods))
	f(cgroup.FieldThrottledSeconds, mThrottledSeconds, st.ThrottledSeconds)
	f(cgroup.FieldMemUsage, mMemUsage, float64(st.MemUsage))
	f(cgroup.FieldWorkingSet, mWorkingSet, float64(st.WorkingSet))
	f(cgroup.FieldRSS, mRSS, float64(st.RSS))
	f(cgroup.FieldCache, mCache, float64(st.Cache))
	f(cgroup.FieldMemLimit, mMemLimit, float64(st.MemLimit))
	f(cgroup.FieldOOMKills, mOOMEvents, float64(st.OOMKills))
	f(cgroup.FieldThreads, mThreads, float64(st.Threads))
	f(cgroup.FieldIO, mFSReads, float64(st.ReadBytes))
	f(cgroup.FieldIO, mFSWrites, float64(st.WriteBytes))
	for i, p := range st.Pressure {
		if p.HasSome {
			c.emit(mPressure[i][0], name, image, "", "", p.Some)
		}
		if p.HasFull {
			c.emit(mPressure[i][1], name, image, "", "", p.Full)
		}
	}
}

func (c *Collector) emitRuntime(d *docker.Container) {
	for _, s := range docker.States {
		c.emit(mState, d.Name, d.Image, s, "", b2f(d.State == s))
	}
	c.emit(mRestarts, d.Name, d.Image, "", "", float64(d.RestartCount))
	if !d.StartedAt.IsZero() {
		c.emit(mStartTime, d.Name, d.Image, "", "", float64(d.StartedAt.UnixNano())/1e9)
	}
	c.emit(mOOMKilled, d.Name, d.Image, "", "", b2f(d.OOMKilled))
	if d.Health != "" {
		for _, s := range docker.HealthStatuses {
			c.emit(mHealth, d.Name, d.Image, s, "", b2f(d.Health == s))
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *Collector) collectNode() {
	st := &c.nStats
	if err := c.node.Read(st); err != nil {
		c.sourceError(sourceNode, err)
	}
	for _, cpu := range st.CPUs {
		for i, m := range node.CPUModes {
			c.emit(mNodeCPU, "", "", cpu.ID, m, cpu.Modes[i])
		}
	}
	for i, has := range st.MemHas {
		if has {
			c.emit(mNodeMem[i], "", "", "", "", st.Mem[i])
		}
	}
	if st.HasLoad {
		for i, d := range mNodeLoad {
			c.emit(d, "", "", "", "", st.Load[i])
		}
	}
	if st.BootTime > 0 {
		c.emit(mNodeBootTime, "", "", "", "", st.BootTime)
	}
	for _, fs := range st.Filesystems {
		c.emit(mNodeFSSize, "", "", fs.FSType, fs.MountPoint, fs.Size)
		c.emit(mNodeFSFree, "", "", fs.FSType, fs.MountPoint, fs.Free)
		c.emit(mNodeFSAvail, "", "", fs.FSType, fs.MountPoint, fs.Avail)
	}
	for _, n := range st.Net {
		c.emit(mNodeNetRx, "", "", n.Name, "", float64(n.RxBytes))
		c.emit(mNodeNetTx, "", "", n.Name, "", float64(n.TxBytes))
	}
}

func init() {
	for _, name := range node.MemInfo {
		mNodeMem = append(mNodeMem, &desc{name: "node_memory_" + name + "_bytes", help: "Memory information field " + name + "_bytes."})
	}
}

// emit samples the series (d, container, image, a, b) with v. A series
// emitted twice in a cycle keeps its first value.
func (c *Collector) emit(d *desc, container, image, a, b string, v float64) {
	k := seriesKey{d: d, container: container, image: image, a: a, b: b}
	// The strings of k are mostly the same pointers as last cycle's, so
	// comparing it with the slot's key is cheaper than hashing it.
	if c.fast {
		if c.n < len(c.keys) && c.keys[c.n] == k {
			c.vals[c.n] = v // a series of the last cycle, which had each once
			c.n++
			return
		}
		c.materialize()
	}
	var s *series
	if c.n < len(c.keys) {
		if s = c.slots[c.n]; s != nil && (s.dead || c.keys[c.n] != k) {
			s = nil
		}
	}
	if c.n == len(c.slots) {
		c.slots = append(c.slots, nil)
	}
	if s == nil {
		if s = c.series[k]; s == nil {
			s = &series{pb: appendLabelsPB(nil, c.labels(k))}
			c.series[k] = s
		}
		c.slots[c.n] = s
		if c.n < len(c.keys) {
			c.keys[c.n] = k
		} else if c.keys != nil {
			c.keys = append(c.keys, k)
		}
	}
	c.n++
	if s.gen == c.gen {
		return
	}
	s.gen, s.value = c.gen, v
	c.cycle = append(c.cycle, s)
}

// labels builds k's label set, sorted by name as remote-write requires.
func (c *Collector) labels(k seriesKey) []prompb.Label {
	ls := make([]prompb.Label, 0, 6)
	ls = append(ls, prompb.Label{Name: "__name__", Value: k.d.name}, prompb.Label{Name: "device", Value: c.device})
	if k.container != "" {
		ls = append(ls, prompb.Label{Name: "container", Value: k.container})
	}
	if k.image != "" {
		ls = append(ls, prompb.Label{Name: "image", Value: k.image})
	}
	if k.d.label != "" {
		ls = append(ls, prompb.Label{Name: k.d.label, Value: k.a})
	}
	if k.d.label2 != "" {
		ls = append(ls, prompb.Label{Name: k.d.label2, Value: k.b})
	}
	slices.SortFunc(ls, func(x, y prompb.Label) int { return strings.Compare(x.Name, y.Name) })
	return ls
}
