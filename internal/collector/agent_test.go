package collector

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"testing/synctest"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/client_golang/prometheus"

	"tillpipe/internal/collector/collectortest"
	"tillpipe/internal/collector/docker/dockertest"
)

// TestAgent_CyclesOnAlignedTicks runs the loop on synctest's fake clock:
// every cycle lands on a multiple of the interval plus the device offset,
// and each request decodes to the same series set.
func TestAgent_CyclesOnAlignedTicks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newFixtureCollector(t, "testdata/cgroup/v2-docker", "")
		var at []time.Time
		var sizes []int
		a, err := NewAgent(c, func(req []byte, n int) {
			at = append(at, time.Now())
			var u prompb.WriteRequestUnmarshaler
			wr, err := u.UnmarshalProtobuf(decodeSnappy(t, req))
			if err != nil || len(wr.Timeseries) != n {
				t.Errorf("request: %v, %d series, want %d", err, len(wr.Timeseries), n)
			}
			sizes = append(sizes, n)
		}, AgentOptions{Device: "till-042", RuntimeTimers: true})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- a.Run(ctx) }()
		time.Sleep(time.Minute) // fake time
		synctest.Wait()
		if err := a.Healthy(); err != nil {
			t.Errorf("healthy: %v", err)
		}
		cancel()
		<-done
		if len(at) != 4 {
			t.Fatalf("%d cycles in a minute, want 4", len(at))
		}
		off := Offset("till-042", 15*time.Second)
		for i, ts := range at {
			if got := time.Duration(ts.UnixNano()) % (15 * time.Second); got != off {
				t.Errorf("cycle %d at %s: %s into the interval, want %s", i, ts, got, off)
			}
			if sizes[i] != sizes[0] {
				t.Errorf("cycle %d: %d series, first had %d", i, sizes[i], sizes[0])
			}
		}
	})
}

// TestAgent_FollowsDockerEvents runs the loop against the fake engine at a
// short interval: with the event stream up, quiet cycles do not list; a
// destroy event makes one list, whose answer the next request carries; and
// Run stops the stream when it returns.
func TestAgent_FollowsDockerEvents(t *testing.T) {
	dd := copyDir(t, "testdata/docker")
	engine := dockertest.Start(t, dd)
	reg := prometheus.NewRegistry()
	c, err := New(Options{Device: "till-042", CgroupRoot: "testdata/cgroup/v2-docker", ProcRoot: "testdata/proc",
		Statfs: fixedStatfs, DockerSocket: engine.Socket, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if v := gather(t, reg, "docker_events_connected"); v != 0 {
		t.Fatalf("docker_events_connected %v before Run, want 0", v)
	}
	const running = `till_container_state{container="pos-api",device="till-042",image="registry.example.com/pos/api:4.2.1",state="running"}`
	values := make(chan float64, 1000) // running's value in each request; NaN when absent
	a, err := NewAgent(c, func(req []byte, _ int) {
		var u prompb.WriteRequestUnmarshaler
		wr, err := u.UnmarshalProtobuf(decodeSnappy(t, req))
		if err != nil {
			t.Errorf("request: %v", err)
			return
		}
		v := math.NaN()
		for _, ts := range wr.Timeseries {
			if seriesID(ts.Labels) == running {
				v = ts.Samples[0].Value
			}
		}
		values <- v
	}, AgentOptions{Device: "till-042", Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	defer func() {
		if ctx.Err() == nil {
			stop()
		}
	}()
	next := func() float64 {
		t.Helper()
		select {
		case v := <-values:
			return v
		case <-time.After(10 * time.Second):
			t.Fatal("no cycle in 10 s")
			return 0
		}
	}
	collectortest.WaitFor(t, "the event stream to connect", c.events.Connected)
	if v := gather(t, reg, "docker_events_connected"); v != 1 {
		t.Fatalf("docker_events_connected %v with the stream open, want 1", v)
	}
	for len(values) > 0 { // cycles before the connection
		<-values
	}
	for range 3 { // one of them lists: the first to start after the connection
		next()
	}
	lists := engine.Lists()
	for range 10 {
		if v := next(); v != 1 {
			t.Fatalf("pos-api running = %v, want 1", v)
		}
	}
	if n := engine.Lists() - lists; n != 0 {
		t.Fatalf("%d lists in 10 cycles without events, want 0", n)
	}

	// pos-api is removed: the engine forgets it and sends destroy.
	list, err := os.ReadFile(filepath.Join(dd, "containers.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dd, "containers.json"), removeListEntry(t, list, posAPI), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dd, "containers", posAPI+".json")); err != nil {
		t.Fatal(err)
	}
	_, changes := c.events.Counts()
	if n := engine.Emit(t, "destroy"); n != 1 {
		t.Fatalf("destroy sent to %d streams, want 1", n)
	}
	collectortest.WaitFor(t, "the event to be read", func() bool { _, c := c.events.Counts(); return c > changes })
	if v := gather(t, reg, "docker_events_total"); v != 1 {
		t.Fatalf("docker_events_total %v after one event, want 1", v)
	}
	v := next()
	for i := 0; v == 1 && i < 100; i++ { // cycles before the event, still queued
		v = next()
	}
	if !IsStaleNaN(v) {
		t.Fatalf("pos-api running = %v after destroy, want the stale marker", v)
	}
	for range 2 {
		if v := next(); !math.IsNaN(v) || IsStaleNaN(v) {
			t.Fatalf("pos-api running = %v two cycles after destroy, want no sample", v)
		}
	}
	if n := engine.Lists() - lists; n != 1 {
		t.Errorf("%d lists for one event, want 1", n)
	}

	stop()
	collectortest.WaitFor(t, "the engine to see the stream end", func() bool { return engine.EventStreams() == 0 })
}

// gather returns the value of the gauge or counter name in reg.
func gather(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestAgent_GCBudget runs cycles with the runtime's pacing off, as the
// collector binary does: the agent collects once the bytes allocated since
// the last collection reach its budget, and not before.
func TestAgent_GCBudget(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	gcs := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	c := newFixtureCollector(t, "testdata/cgroup/v2-docker", "")
	ctx := context.Background()
	// The runtime counts small allocations when a span is refilled, large
	// ones at once: the cycle's enqueue allocates 1 MiB to be counted.
	var sink []byte
	for _, tc := range []struct {
		name    string
		budget  int64
		collect bool
	}{
		{"under_budget", 2 << 20, false},
		{"budget_spent", 512 << 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAgent(c, func([]byte, int) { sink = make([]byte, 1<<20) }, AgentOptions{Device: "till-042", GCBudget: tc.budget})
			if err != nil {
				t.Fatal(err)
			}
			before := gcs()
			a.Cycle(ctx, fixtureTime)
			if got := gcs() - before; (got > 0) != tc.collect {
				t.Errorf("%d collections in a cycle allocating 1 MiB with budget %d, want any: %v", got, tc.budget, tc.collect)
			}
			runtime.KeepAlive(sink)
		})
	}
}
