package collector

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"go.uber.org/goleak"

	"tillpipe/internal/collector/collectortest"
	"tillpipe/internal/collector/docker/dockertest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixedStatfs answers every statfs with the same 4 GB filesystem.
func fixedStatfs(_ string, buf *syscall.Statfs_t) error {
	*buf = syscall.Statfs_t{Bsize: 4096, Blocks: 1 << 20, Bfree: 400000, Bavail: 350000}
	return nil
}

var fixtureTime = time.Date(2026, 11, 21, 9, 15, 7, 0, time.UTC)

func newFixtureCollector(t testing.TB, cgroupRoot, dockerDir string) *Collector {
	t.Helper()
	opts := Options{Device: "till-042", CgroupRoot: cgroupRoot, ProcRoot: "testdata/proc", Statfs: fixedStatfs, NoDocker: dockerDir == ""}
	if dockerDir != "" {
		opts.DockerSocket = dockertest.Start(t, dockerDir).Socket
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name, cgroup, docker string
	}{
		{"v2_docker", "v2-docker", "testdata/docker"},
		{"v2_containerd_without_runtime", "v2-containerd", ""},
		{"v1_hybrid", "v1", "testdata/docker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newFixtureCollector(t, filepath.Join("testdata/cgroup", tc.cgroup), tc.docker)
			tss := c.Collect(context.Background(), fixtureTime)
			for src, n := range c.errCount {
				if n != 0 {
					t.Errorf("source %s: %v scrape errors", src, n)
				}
			}
			checkWellFormed(t, tss, fixtureTime.UnixMilli())
			var buf bytes.Buffer
			if err := WriteText(&buf, tss); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata/golden", tc.name+".txt")
			if *update {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got := buf.String(); got != string(want) {
				t.Errorf("output differs from %s (run with -update and review the diff):\n%s", golden, lineDiff(string(want), got))
			}
		})
	}
}

// checkWellFormed checks what remote-write requires of every series: one
// sample at ts, labels sorted by name, no duplicate label sets.
func checkWellFormed(t *testing.T, tss []prompb.TimeSeries, ts int64) {
	t.Helper()
	seen := map[string]bool{}
	for _, s := range tss {
		key := seriesID(s.Labels)
		if seen[key] {
			t.Errorf("duplicate series %s", key)
		}
		seen[key] = true
		if !slices.IsSortedFunc(s.Labels, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) }) {
			t.Errorf("labels of %s not sorted", key)
		}
		if len(s.Samples) != 1 || s.Samples[0].Timestamp != ts {
			t.Errorf("series %s: samples %v, want one at %d", key, s.Samples, ts)
		}
	}
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for _, l := range w {
		if !slices.Contains(g, l) {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range g {
		if !slices.Contains(w, l) {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}

// copyDir copies a fixture tree into a temporary directory the test may
// change.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

const posAPI = "4b22933b1c1a52f075b0c399bd28844890252342a237a15e32d6ead871724ebe"

func TestCollect_ContainerGoneGetsStaleMarkers(t *testing.T) {
	cg := copyDir(t, "testdata/cgroup/v2-docker")
	dd := copyDir(t, "testdata/docker")
	c := newFixtureCollector(t, cg, dd)
	ctx := context.Background()

	first := seriesValues(c.Collect(ctx, fixtureTime))
	var posSeries []string
	for k := range first {
		if strings.Contains(k, `container="pos-api"`) {
			posSeries = append(posSeries, k)
		}
	}
	if len(posSeries) < 20 {
		t.Fatalf("pos-api has %d series in the first cycle, want cgroup and runtime series", len(posSeries))
	}

	// pos-api is removed: its cgroup goes away and the engine forgets it.
	if err := os.RemoveAll(filepath.Join(cg, "system.slice", "docker-"+posAPI+".scope")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dd, "containers", posAPI+".json")); err != nil {
		t.Fatal(err)
	}
	list, err := os.ReadFile(filepath.Join(dd, "containers.json"))
	if err != nil {
		t.Fatal(err)
	}
	list = removeListEntry(t, list, posAPI)
	if err := os.WriteFile(filepath.Join(dd, "containers.json"), list, 0o644); err != nil {
		t.Fatal(err)
	}

	second := c.Collect(ctx, fixtureTime.Add(15*time.Second))
	checkWellFormed(t, second, fixtureTime.Add(15*time.Second).UnixMilli())
	got := seriesValues(second)
	for _, k := range posSeries {
		v, ok := got[k]
		if !ok || !IsStaleNaN(v) {
			t.Errorf("%s: got %v (present %v), want the stale marker", k, v, ok)
		}
	}
	for k, v := range got {
		if IsStaleNaN(v) && !strings.Contains(k, `container="pos-api"`) {
			t.Errorf("%s: unexpected stale marker", k)
		}
	}
	if len(got) != len(first) {
		t.Errorf("second cycle has %d series, want %d (the same plus stale markers)", len(got), len(first))
	}

	third := seriesValues(c.Collect(ctx, fixtureTime.Add(30*time.Second)))
	for k := range third {
		if strings.Contains(k, `container="pos-api"`) {
			t.Errorf("%s still sent after its stale marker", k)
		}
	}
}

func removeListEntry(t testing.TB, list []byte, id string) []byte {
	t.Helper()
	var entries []map[string]any
	if err := json.Unmarshal(list, &entries); err != nil {
		t.Fatal(err)
	}
	entries = slices.DeleteFunc(entries, func(e map[string]any) bool { return e["Id"] == id })
	out, err := json.Marshal(entries)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// seriesID renders labels as name{label="value",...}.
func seriesID(ls []prompb.Label) string {
	var name string
	var parts []string
	for _, l := range ls {
		if l.Name == "__name__" {
			name = l.Value
			continue
		}
		parts = append(parts, l.Name+"="+strconv.Quote(l.Value))
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

func seriesValues(tss []prompb.TimeSeries) map[string]float64 {
	m := make(map[string]float64, len(tss))
	for _, s := range tss {
		m[seriesID(s.Labels)] = s.Samples[0].Value
	}
	return m
}

func TestCollect_SourceErrorsAreCounted(t *testing.T) {
	for _, tc := range []struct {
		name       string
		setup      func(t *testing.T) Options
		wantSource string
	}{
		{"docker_socket_missing", func(t *testing.T) Options {
			return Options{CgroupRoot: "testdata/cgroup/v2-docker", DockerSocket: filepath.Join(t.TempDir(), "none.sock")}
		}, sourceDocker},
		{"no_cgroup_hierarchy", func(t *testing.T) Options {
			return Options{CgroupRoot: t.TempDir(), NoDocker: true}
		}, sourceCgroup},
		{"memory_stat_garbage", func(t *testing.T) Options {
			cg := copyDir(t, "testdata/cgroup/v2-docker")
			p := filepath.Join(cg, "system.slice", "docker-"+posAPI+".scope", "memory.stat")
			if err := os.WriteFile(p, []byte("anon twelve\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			return Options{CgroupRoot: cg, NoDocker: true}
		}, sourceCgroup},
		{"proc_missing", func(t *testing.T) Options {
			return Options{CgroupRoot: "testdata/cgroup/v2-docker", NoDocker: true, ProcRoot: t.TempDir()}
		}, sourceNode},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.setup(t)
			opts.Device, opts.Statfs = "till-042", fixedStatfs
			if opts.ProcRoot == "" {
				opts.ProcRoot = "testdata/proc"
			}
			c, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for cycle := 1; cycle <= 2; cycle++ {
				got := seriesValues(c.Collect(context.Background(), fixtureTime))
				for _, src := range []string{sourceCgroup, sourceDocker, sourceNode} {
					want := 0.0
					if src == tc.wantSource {
						want = float64(cycle)
					}
					k := `till_collector_scrape_errors_total{device="till-042",source="` + src + `"}`
					if v, ok := got[k]; !ok || v != want {
						t.Errorf("cycle %d: %s = %v (present %v), want %v", cycle, k, v, ok, want)
					}
				}
			}
		})
	}
}

func TestSchedule_AlignedWithStableOffset(t *testing.T) {
	const iv = 15 * time.Second
	off := Offset("till-042", iv)
	if off != Offset("till-042", iv) || off < 0 || off >= iv {
		t.Fatalf("offset %s not stable or outside [0, %s)", off, iv)
	}
	if Offset("till-043", iv) == off && Offset("till-044", iv) == off {
		t.Errorf("three devices share offset %s", off)
	}
	now := time.Date(2026, 11, 21, 9, 15, 7, 123e6, time.UTC)
	next := Next(now, iv, off)
	if !next.After(now) || next.Sub(now) > iv {
		t.Errorf("next %s not within one interval after %s", next, now)
	}
	if got := time.Duration(next.UnixNano()) % iv; got != off {
		t.Errorf("next %s is %s into its interval, want %s", next, got, off)
	}
	if Next(next, iv, off) != next.Add(iv) {
		t.Errorf("tick at a boundary does not advance one interval")
	}
}

func TestWriteText_EscapesAndSpecialValues(t *testing.T) {
	tss := []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "__name__", Value: "b"}, {Name: "container", Value: "a\"b\\c\nd"}}, Samples: []prompb.Sample{{Value: math.Inf(1)}}},
		{Labels: []prompb.Label{{Name: "__name__", Value: "a"}}, Samples: []prompb.Sample{{Value: 1.5}}},
	}
	var buf bytes.Buffer
	if err := WriteText(&buf, tss); err != nil {
		t.Fatal(err)
	}
	want := "a 1.5\nb{container=\"a\\\"b\\\\c\\nd\"} +Inf\n"
	if buf.String() != want {
		t.Errorf("got %q, want %q", buf.String(), want)
	}
}

// TestCollect_EngineSubtreesListedAfterEvents follows the engine's events
// as Agent.Run does: quiet cycles take the engine's cgroups from the last
// listing of their subtrees, a container event makes the next cycle list
// them again, and so does a running container whose cgroup was not found.
func TestCollect_EngineSubtreesListedAfterEvents(t *testing.T) {
	f := collectortest.Tree(t, t.TempDir(), "testdata", 2)
	engine := dockertest.Start(t, f.DockerDir)
	events, err := os.ReadFile("testdata/docker/events.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.DockerDir, "events.jsonl"), events, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Device: "till-042", CgroupRoot: f.CgroupRoot, ProcRoot: f.ProcRoot, Statfs: fixedStatfs, DockerSocket: engine.Socket})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.events.Run(ctx) }()
	defer func() { cancel(); <-done }()
	collectortest.WaitFor(t, "the event stream to connect", c.events.Connected)

	now := fixtureTime
	cycle := func() map[string]float64 {
		t.Helper()
		now = now.Add(15 * time.Second)
		got := seriesValues(c.Collect(ctx, now))
		for src, n := range c.errCount {
			if n != 0 {
				t.Fatalf("source %s: %v errors", src, n)
			}
		}
		return got
	}
	usage := func(container string) string {
		return `container_memory_usage_bytes{container="` + container + `",device="till-042",image="registry.example.com/pos/api:4.2.1"}`
	}
	cycle() // lists
	lists := engine.Lists()

	// A cgroup appears without an event: quiet cycles do not list the
	// engine's subtrees, so it is not seen.
	id := fmt.Sprintf("%064x", 100)
	scope := filepath.Join(f.CgroupRoot, "system.slice", "docker-"+id+".scope")
	if err := os.CopyFS(scope, os.DirFS(filepath.Join(f.CgroupRoot, "system.slice", "docker-"+fmt.Sprintf("%064x", 1)+".scope"))); err != nil {
		t.Fatal(err)
	}
	byPath := `container_memory_usage_bytes{container="/system.slice/docker-` + id + `.scope",device="till-042"}`
	for range 3 {
		if got := cycle(); len(got) == 0 || got[usage("svc-00")] == 0 {
			t.Fatal("svc-00 not sampled in a quiet cycle")
		} else if _, ok := got[byPath]; ok {
			t.Fatal("a quiet cycle listed the engine's cgroup subtree")
		}
	}
	if n := engine.Lists() - lists; n != 0 {
		t.Fatalf("%d lists in quiet cycles, want 0", n)
	}

	// The engine now runs it and sends start: the next cycle lists the
	// containers and the subtrees, and names the cgroup.
	addContainer(t, f.DockerDir, id, "svc-new")
	_, changes := c.events.Counts()
	engine.Emit(t, "start")
	collectortest.WaitFor(t, "the event to be read", func() bool { _, n := c.events.Counts(); return n > changes })
	if got := cycle(); got[usage("svc-new")] == 0 {
		t.Error("svc-new not sampled in the cycle after its start event")
	}

	// A running container whose cgroup is not there yet: the cycles list
	// the subtrees until it is found.
	late := fmt.Sprintf("%064x", 101)
	addContainer(t, f.DockerDir, late, "svc-late")
	_, changes = c.events.Counts()
	engine.Emit(t, "start")
	collectortest.WaitFor(t, "the event to be read", func() bool { _, n := c.events.Counts(); return n > changes })
	if got := cycle(); got[usage("svc-late")] != 0 {
		t.Fatal("svc-late sampled without a cgroup")
	}
	lists = engine.Lists()
	if err := os.CopyFS(filepath.Join(f.CgroupRoot, "system.slice", "docker-"+late+".scope"), os.DirFS(scope)); err != nil {
		t.Fatal(err)
	}
	if got := cycle(); got[usage("svc-late")] == 0 {
		t.Error("svc-late not sampled once its cgroup appeared")
	}
	if n := engine.Lists() - lists; n != 0 {
		t.Errorf("%d lists without an event, want 0 (only the cgroup subtrees are listed)", n)
	}
}

// addContainer adds a running copy of the fixture's first container to the
// engine's answers in dir.
func addContainer(t *testing.T, dir, id, name string) {
	t.Helper()
	var list []map[string]any
	collectortest.ReadJSON(t, filepath.Join(dir, "containers.json"), &list)
	var insp map[string]any
	collectortest.ReadJSON(t, filepath.Join(dir, "containers", fmt.Sprintf("%064x", 1)+".json"), &insp)
	e := maps.Clone(list[0])
	e["Id"], e["Names"] = id, []string{"/" + name}
	collectortest.WriteJSON(t, filepath.Join(dir, "containers.json"), append(list, e))
	insp["Id"], insp["Name"] = id, "/"+name
	collectortest.WriteJSON(t, filepath.Join(dir, "containers", id+".json"), insp)
}
