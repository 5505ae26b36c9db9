package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
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
//	    -bench 'BenchmarkBinaryCycle/containers=30/defaults' -benchtime 20x ./cmd/collector/
//
// TILLPIPE_BENCH_COLLECTOR names a prebuilt binary to measure instead (an
// older build, for a before/after comparison; run only
// 'BenchmarkBinaryCycle/containers=30/defaults' when it lacks -max-procs
// or -gc-budget).
func BenchmarkBinaryCycle(b *testing.B) {
	bin := os.Getenv("TILLPIPE_BENCH_COLLECTOR")
	if bin == "" {
		bin = buildCollector(b)
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
	})
}

func benchBinary(b *testing.B, bin string, extra []string) {
	const warmup = 3
	f := collectortest.Tree(b, collectortest.MemDir(b), fixtures, 30)
	engine := dockertest.Start(b, f.DockerDir)
	relay := newRelayStandIn()
	srv := httptest.NewServer(relay)
	defer srv.Close()

	interval := "1s"
	if v := os.Getenv("TILLPIPE_BENCH_INTERVAL"); v != "" {
		if _, err := time.ParseDuration(v); err != nil {
			b.Fatalf("TILLPIPE_BENCH_INTERVAL: %v", err)
		}
		interval = v
	}
	args := []string{"-relay-url", srv.URL + "/api/v1/write", "-device", "till-042", "-interval", interval,
		"-cgroup-root", f.CgroupRoot, "-proc-root", f.ProcRoot, "-docker-socket", engine.Socket,
		"-listen", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b)), "-log-level", "warn"}
	cmd := exec.Command(bin, append(args, extra...)...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=", "GOGC=") // the flags decide
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
		if b.Failed() {
			b.Logf("collector log:\n%s", logs.String())
		}
	}()
	pid := cmd.Process.Pid

	wait := func() {
		select {
		case <-relay.got:
		case err := <-exited:
			stopped = true
			b.Fatalf("collector exited: %v", err)
		}
	}
	for range warmup {
		wait()
	}
	cpu0, sw0 := taskCPU(b, pid)
	ticks0 := statCPU(b, pid)
	perCycle := make([]time.Duration, 0, b.N)
	last := cpu0
	for b.Loop() {
		wait()
		c, _ := taskCPU(b, pid)
		perCycle = append(perCycle, c-last)
		last = c
	}
	cpu, sw := taskCPU(b, pid)
	cpu, sw = cpu-cpu0, sw-sw0
	ticks := statCPU(b, pid) - ticks0
	status := procStatus(b, pid)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	err := <-exited
	stopped = true
	if err != nil {
		b.Fatalf("collector: %v", err)
	}
	if n := relay.bad.Load(); n > 0 {
		b.Fatalf("relay could not decode %d requests", n)
	}
	if n := relay.scrapeErrors.Load(); n > 0 {
		b.Fatalf("till_collector_scrape_errors_total rose to %d", n)
	}
	if s := logs.String(); s != "" {
		b.Fatalf("collector logged at warn or above:\n%s", s)
	}
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
	b.ReportMetric(float64(relay.series.Load()), "series/cycle")
}

// relayStandIn decodes remote-write requests as the relay does and signals
// got for each.
type relayStandIn struct {
	got                                 chan struct{}
	requests, bad, series, scrapeErrors atomic.Int64

	mu               sync.Mutex // guards the buffers
	compressed, body []byte
	unmarshaler      prompb.WriteRequestUnmarshaler
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
	for _, ts := range wr.Timeseries {
		if ts.Labels[0].Value == "till_collector_scrape_errors_total" {
			for _, s := range ts.Samples {
				r.scrapeErrors.Add(int64(s.Value))
			}
		}
	}
	r.requests.Add(1)
	w.WriteHeader(http.StatusNoContent)
	r.got <- struct{}{}
}

// buildCollector builds cmd/collector as the Makefile does.
func buildCollector(b *testing.B) string {
	b.Helper()
	out := filepath.Join(b.TempDir(), "collector")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "tillpipe/cmd/collector")
	cmd.Dir = testenv.ModuleRoot(b)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, msg)
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
