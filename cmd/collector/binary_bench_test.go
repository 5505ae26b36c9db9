package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"

	"tillpipe/internal/collector/collectortest"
	"tillpipe/internal/collector/docker/dockertest"
	"tillpipe/internal/testenv"
)

// BenchmarkBinaryCycle runs the collector binary, built as the Makefile
// builds it (static, stripped), against 30 containers (the tree of
// BenchmarkCycle in package collector, on tmpfs like cgroupfs), the
// fixture /proc, a fake engine and a relay stand-in that decodes every
// request (snappy, protobuf) and answers 204. Each iteration waits for
// one request at -interval 1s (the minimum) unless TILLPIPE_BENCH_INTERVAL
// says otherwise, so b.N is the number of
// cycles measured:
//
//	go test -run '^$' -bench BenchmarkBinaryCycle -benchtime 120x ./cmd/collector/
//
// cpu-ms/cycle is the process's CPU time per cycle from the sum of
// /proc/<pid>/task/*/schedstat (nanosecond resolution) over the measured
// cycles; tick-cpu-ms/cycle is the same from /proc/<pid>/stat utime+stime
// (10 ms ticks, a cross-check); p50-cpu-ms/cycle is the median cycle,
// each from one request's arrival to the next's, which a busy neighbour's
// moments move less than the mean. rss-MiB is the peak resident memory
// (VmHWM), rss-end-MiB the resident memory at the end (VmRSS), anon-MiB
// its anonymous part (RssAnon). switches/cycle counts the times the
// process's threads were switched onto a CPU (the third schedstat field),
// steadier than the CPU time on a shared VM. The first cycles (label
// interning, container inspects) are not measured. With -v it logs each
// cycle's CPU in order: the one that lists the engine's containers (one in
// 20) and the few after the warm-up stand out.
//
// TILLPIPE_BENCH_INTERVAL sets -interval (default 1s). At the production
// 15s, 20 cycles take five minutes:
//
//	TILLPIPE_BENCH_INTERVAL=15s go test -run '^$' -timeout 30m \
//	    -bench 'BenchmarkBinaryCycle/containers=30/^defaults$' -benchtime 20x ./cmd/collector/
//
// The floor sub-benchmark measures bench/collectorfloor instead: the
// system calls of a steady cycle of this collector, made alone (see
// benchFloor). The collector's cpu-ms/cycle less the floor's is what the
// Go runtime and the collector's own code add, on whatever machine runs it.
//
// TILLPIPE_BENCH_CGROUP_ROOT, TILLPIPE_BENCH_PROC_ROOT and
// TILLPIPE_BENCH_DOCKER_SOCKET (set and empty: no engine) point the
// collector, and so the floor, at this machine's own cgroups, /proc and
// engine instead of the fixture: on a till, or a till image, they measure
// what the fixture's tmpfs files only stand in for. Real cgroupfs files
// cost more to read than tmpfs ones (memory.stat is formatted at each
// read). The relay is the stand-in either way, and containers=30 in the
// name then means whatever the machine runs (series/cycle tells):
//
//	TILLPIPE_BENCH_INTERVAL=15s TILLPIPE_BENCH_CGROUP_ROOT=/sys/fs/cgroup \
//	TILLPIPE_BENCH_PROC_ROOT=/proc TILLPIPE_BENCH_DOCKER_SOCKET=/var/run/docker.sock \
//	    go test -run '^$' -timeout 30m -v -benchtime 24x \
//	    -bench 'BenchmarkBinaryCycle/containers=30/^(defaults|floor)$' ./cmd/collector/
//
// TILLPIPE_BENCH_COLLECTOR names a prebuilt binary to measure instead (an
// older build, for a before/after comparison; run only
// 'BenchmarkBinaryCycle/containers=30/^defaults$' when it lacks -max-procs
// or -gc-budget).
func BenchmarkBinaryCycle(b *testing.B) {
	bin := os.Getenv("TILLPIPE_BENCH_COLLECTOR")
	if bin == "" {
		bin = build(b, "tillpipe/cmd/collector")
	}
	b.Run("containers=30", func(b *testing.B) {
		for _, bc := range []struct {
			name string
			args []string
		}{
			{"defaults", nil}, // -max-procs 1 -gc-budget 512 KiB
			{"max-procs=0", []string{"-max-procs", "0"}},
			{"gc-budget=0", []string{"-gc-budget", "0"}}, // the runtime paces, GOGC 50
			{"go_defaults", []string{"-max-procs", "0", "-gc-budget", "0", "-gc-percent", "0"}},
		} {
			b.Run(bc.name, func(b *testing.B) { benchBinary(b, bin, bc.args) })
		}
		b.Run("floor", func(b *testing.B) { benchFloor(b, bin) })
	})
}

func benchBinary(b *testing.B, bin string, extra []string) {
	s := newBenchSetup(b)
	p := startProc(b, bin, append(s.collectorArgs(b), extra...), nil)
	s.measure(b, p)
	if n := s.relay.bad.Load(); n > 0 {
		b.Fatalf("relay could not decode %d requests", n)
	}
	if n := s.relay.scrapeErrors.Load(); n > 0 {
		b.Fatalf("till_collector_scrape_errors_total rose to %d", n)
	}
	if out := p.logs.String(); out != "" {
		b.Fatalf("collector logged at warn or above:\n%s", out)
	}
	b.ReportMetric(float64(s.relay.series.Load()), "series/cycle")
}

// benchSetup is what a measured process works against: the fixture tree of
// 30 containers on tmpfs (or the roots the environment names), the fake
// engine and the relay stand-in.
type benchSetup struct {
	fixture  collectortest.Fixture
	engine   *dockertest.Server
	relay    *relayStandIn
	url      string // the relay stand-in's remote-write URL
	interval string

	// What the collector samples: the fixture's roots and the fake
	// engine's socket unless the environment names others.
	cgroupRoot, procRoot, dockerSocket string
}

func newBenchSetup(b *testing.B) *benchSetup {
	s := &benchSetup{fixture: collectortest.Tree(b, collectortest.MemDir(b), fixtures, 30), relay: newRelayStandIn(), interval: "1s"}
	s.engine = dockertest.Start(b, s.fixture.DockerDir)
	srv := httptest.NewServer(s.relay)
	b.Cleanup(srv.Close)
	s.url = srv.URL + "/api/v1/write"
	if v := os.Getenv("TILLPIPE_BENCH_INTERVAL"); v != "" {
		if _, err := time.ParseDuration(v); err != nil {
			b.Fatalf("TILLPIPE_BENCH_INTERVAL: %v", err)
		}
		s.interval = v
	}
	s.cgroupRoot, s.procRoot, s.dockerSocket = s.fixture.CgroupRoot, s.fixture.ProcRoot, s.engine.Socket
	for env, dst := range map[string]*string{
		"TILLPIPE_BENCH_CGROUP_ROOT":   &s.cgroupRoot,
		"TILLPIPE_BENCH_PROC_ROOT":     &s.procRoot,
		"TILLPIPE_BENCH_DOCKER_SOCKET": &s.dockerSocket,
	} {
		if v, ok := os.LookupEnv(env); ok {
			*dst = v
		}
	}
	return s
}

// benchDevice names the till in the benchmark; its cycles fall at
// collector.Offset of it within the interval.
const benchDevice = "till-042"

func (s *benchSetup) collectorArgs(b *testing.B) []string {
	return []string{"-relay-url", s.url, "-device", benchDevice, "-interval", s.interval,
		"-cgroup-root", s.cgroupRoot, "-proc-root", s.procRoot, "-docker-socket", s.dockerSocket,
		"-listen", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b)), "-log-level", "warn"}
}

// proc is a process the benchmark runs and measures.
type proc struct {
	cmd     *exec.Cmd
	logs    bytes.Buffer
	exited  chan error
	stopped bool
}

// startProc starts bin with args (and env added to the benchmark's own,
// with GOMAXPROCS and GOGC unset: the flags decide). It is killed when the
// benchmark ends unless stopped first, and its output is logged if the
// benchmark failed.
func startProc(b *testing.B, bin string, args, env []string) *proc {
	p := &proc{cmd: exec.Command(bin, args...), exited: make(chan error, 1)}
	p.cmd.Env = append(append(os.Environ(), "GOMAXPROCS=", "GOGC="), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.logs, &p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	b.Cleanup(func() {
		if !p.stopped {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if b.Failed() {
			b.Logf("%s log:\n%s", filepath.Base(bin), p.logs.String())
		}
	})
	return p
}

// stop ends p with SIGTERM, as init would, and fails unless it exits 0.
func (p *proc) stop(b *testing.B) {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	err := <-p.exited
	p.stopped = true
	if err != nil {
		b.Fatalf("%s: %v", p.cmd.Path, err)
	}
}

// wait returns when the relay stand-in has answered one more request, and
// fails the benchmark if p exits meanwhile.
func (s *benchSetup) wait(b *testing.B, p *proc) {
	select {
	case <-s.relay.got:
	case err := <-p.exited:
		p.stopped = true
		b.Fatalf("%s exited: %v", p.cmd.Path, err)
	}
}

// measure lets p run warm-up cycles, then measures b.N cycles (one relay
// request each), stops p and reports what it cost.
func (s *benchSetup) measure(b *testing.B, p *proc) {
	const warmup = 3
	for range warmup {
		s.wait(b, p)
	}
	pid := p.cmd.Process.Pid
	cpu0, sw0 := taskCPU(b, pid)
	ticks0 := statCPU(b, pid)
	perCycle := make([]time.Duration, 0, b.N)
	last := cpu0
	for b.Loop() {
		s.wait(b, p)
		c, _ := taskCPU(b, pid)
		perCycle = append(perCycle, c-last)
		last = c
	}
	cpu, sw := taskCPU(b, pid)
	cpu, sw = cpu-cpu0, sw-sw0
	ticks := statCPU(b, pid) - ticks0
	status := procStatus(b, pid)
	p.stop(b)

	n := float64(b.N)
	b.ReportMetric(float64(cpu.Microseconds())/1e3/n, "cpu-ms/cycle")
	b.Logf("cpu per cycle, in order (-test.v prints it): %v", perCycle) // which cycles make the mean
	slices.Sort(perCycle)
	b.ReportMetric(float64(perCycle[len(perCycle)/2].Microseconds())/1e3, "p50-cpu-ms/cycle")
	b.ReportMetric(float64(ticks.Microseconds())/1e3/n, "tick-cpu-ms/cycle")
	b.ReportMetric(float64(sw)/n, "switches/cycle")
	b.ReportMetric(float64(status["VmHWM"])/1024, "rss-MiB")
	b.ReportMetric(float64(status["VmRSS"])/1024, "rss-end-MiB")
	b.ReportMetric(float64(status["RssAnon"])/1024, "anon-MiB")
}

// relayStandIn decodes remote-write requests as the relay does and signals
// got for each.
type relayStandIn struct {
	got                                 chan struct{}
	requests, bad, series, scrapeErrors atomic.Int64

	mu               sync.Mutex // guards the buffers and the last request
	compressed, body []byte
	unmarshaler      prompb.WriteRequestUnmarshaler
	lastRequest      []byte      // the last request decoded, as it came
	lastHeader       http.Header // its headers
	mountPoints      []string    // its node_filesystem_size_bytes mount points
}

// last returns a copy of the last request decoded, its headers and the
// mount points of its filesystem series.
func (r *relayStandIn) last() ([]byte, http.Header, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lastRequest), r.lastHeader.Clone(), slices.Clone(r.mountPoints)
}

func newRelayStandIn() *relayStandIn { return &relayStandIn{got: make(chan struct{}, 1000)} }

func (r *relayStandIn) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	buf := bytes.NewBuffer(r.compressed[:0])
	_, err = buf.ReadFrom(req.Body)
	r.compressed = buf.Bytes()
	if err == nil {
		r.body, err = snappy.Decode(r.body[:cap(r.body)], r.compressed)
	}
	var wr *prompb.WriteRequest
	if err == nil {
		wr, err = r.unmarshaler.UnmarshalProtobuf(r.body)
	}
	if err != nil {
		r.bad.Add(1)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.series.Store(int64(len(wr.Timeseries)))
	r.lastRequest, r.lastHeader = append(r.lastRequest[:0], r.compressed...), req.Header.Clone()
	r.mountPoints = r.mountPoints[:0]
	for _, ts := range wr.Timeseries {
		switch ts.Labels[0].Value {
		case "till_collector_scrape_errors_total":
			for _, s := range ts.Samples {
				r.scrapeErrors.Add(int64(s.Value))
			}
		case "node_filesystem_size_bytes":
			for _, l := range ts.Labels {
				if l.Name == "mountpoint" {
					r.mountPoints = append(r.mountPoints, l.Value)
				}
			}
		}
	}
	r.requests.Add(1)
	w.WriteHeader(http.StatusNoContent)
	r.got <- struct{}{}
}

// build builds the command pkg as the Makefile builds cmd/collector
// (static, stripped) and returns the binary's path.
func build(b *testing.B, pkg string) string {
	b.Helper()
	out := filepath.Join(b.TempDir(), path.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = testenv.ModuleRoot(b)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build %s: %v\n%s", pkg, err, msg)
	}
	return out
}

// taskCPU sums the on-CPU time of pid's threads and the times they were
// switched onto a CPU (each a wake-up: a context switch) from their
// schedstat.
func taskCPU(b *testing.B, pid int) (time.Duration, int64) {
	b.Helper()
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	var switches int64
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat"))
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(data))
		if len(f) < 3 {
			b.Fatalf("schedstat of %s/%s: %q", dir, e.Name(), data)
		}
		ns, err1 := strconv.ParseInt(f[0], 10, 64)
		n, err2 := strconv.ParseInt(f[2], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			b.Fatalf("schedstat of %s/%s: %v", dir, e.Name(), err)
		}
		total += time.Duration(ns)
		switches += n
	}
	return total, switches
}

// statCPU is pid's utime+stime from /proc/<pid>/stat, assuming
// USER_HZ=100.
func statCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 of the whole line.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("parse /proc/%d/stat: %q", pid, data)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// procStatus returns the kB fields of /proc/<pid>/status.
func procStatus(b *testing.B, pid int) map[string]int64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	m := map[string]int64{}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.HasSuffix(v, " kB") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, " kB")), 10, 64)
		if err == nil {
			m[k] = n
		}
	}
	return m
}
