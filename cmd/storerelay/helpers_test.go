package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tillpipe/internal/remotewrite"
	"tillpipe/internal/stream"
	"tillpipe/internal/testenv"
	"tillpipe/internal/wire"
)

// central is a NATS server with the telemetry stream, as the ingester sets it up.
type central struct {
	nats *testenv.NATS
	nc   *nats.Conn
	js   jetstream.JetStream
}

func startCentral(t *testing.T) *central { return startCentralB(t) }

func startCentralB(t testing.TB) *central {
	t.Helper()
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	c := &central{nats: n}
	c.connect(t)
	return c
}

func (c *central) connect(t testing.TB) {
	t.Helper()
	nc, err := nats.Connect(c.nats.URL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := stream.Ensure(ctx, js, stream.Config{}); err != nil {
		t.Fatal(err)
	}
	c.nc, c.js = nc, js
}

// sampleKey identifies a sample: its labels (sorted) and timestamp.
func sampleKey(ls []prompb.Label, ts int64) string {
	parts := make([]string, 0, len(ls))
	for _, l := range ls {
		parts = append(parts, l.Name+"="+l.Value)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",") + "@" + strconv.FormatInt(ts, 10)
}

// landed is what the stream holds, decoded.
type landed struct {
	samples map[string]int // sampleKey -> times seen
	batches []wire.Header  // in stream order
	stored  []time.Time    // when the stream stored each batch
	bytes   int            // message payload bytes
}

// readStream decodes every message on the telemetry stream.
func (c *central) readStream(t testing.TB) landed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := c.js.Stream(ctx, stream.Name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := landed{samples: map[string]int{}}
	dec := wire.NewDecoder(wire.DecoderOptions{})
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := dec.Decode(m.Data)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		if store, class, _ := stream.ParseSubject(m.Subject); store != b.Header.Store || class != b.Header.Class.String() {
			t.Fatalf("message %d on %s holds a %s/%s batch", seq, m.Subject, b.Header.Store, b.Header.Class)
		}
		l.batches = append(l.batches, b.Header)
		l.stored = append(l.stored, m.Time)
		l.bytes += len(m.Data)
		for _, ts := range b.Request.Timeseries {
			for _, smp := range ts.Samples {
				l.samples[sampleKey(ts.Labels, smp.Timestamp)]++
			}
		}
	}
	return l
}

// waitSamples polls the stream until it holds at least n samples or ctx ends.
func (c *central) waitSamples(t *testing.T, ctx context.Context, n int) landed {
	return c.waitSamplesB(t, ctx, n)
}

func (c *central) waitSamplesB(t testing.TB, ctx context.Context, n int) landed {
	t.Helper()
	for {
		l := c.readStream(t)
		if len(l.samples) >= n {
			return l
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the stream holds %d distinct samples, want %d", len(l.samples), n)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// relay is a storerelay started in-process with run.
type relay struct {
	url, metrics string
	cancel       context.CancelFunc
	done         chan error
}

// baseArgs are the flags every test relay gets: short batch ages so that
// tests do not wait a minute for bulk.
func baseArgs(dataDir, natsURL string, port int) []string {
	return []string{"-store", "s1", "-data-dir", dataDir, "-nats-url", natsURL, "-listen", fmt.Sprintf("127.0.0.1:%d", port),
		"-normal-batch-age", "500ms", "-bulk-batch-age", "1s", "-critical-batch-age", "200ms", "-log-level", "warn", "-shutdown-timeout", "5s"}
}

func startRelay(t *testing.T, args ...string) *relay {
	t.Helper()
	port := portOf(args)
	ctx, cancel := context.WithCancel(context.Background())
	r := &relay{url: fmt.Sprintf("http://127.0.0.1:%d/api/v1/write", port), metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", port), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx, args, func(string) string { return "" }, io.Discard) }()
	t.Cleanup(func() { r.stop(t) })
	waitHealthy(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", port), r.done)
	return r
}

func (r *relay) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	if err := <-r.done; err != nil {
		t.Errorf("relay: %v", err)
	}
}

func portOf(args []string) int {
	for i, a := range args {
		if a == "-listen" {
			_, ps, _ := strings.Cut(args[i+1], ":")
			p, _ := strconv.Atoi(ps)
			return p
		}
	}
	return 0
}

// waitHealthy polls url until it answers 200, or the relay exits.
func waitHealthy(t testing.TB, url string, exited <-chan error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("relay exited while starting: %v", err)
		case <-ctx.Done():
			t.Fatalf("relay not healthy at %s", url)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// metric returns the sum of the samples of name whose labels include want.
func metric(t testing.TB, url, name string, want map[string]string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for k, v := range want {
			ok = ok && strings.Contains(line, k+`="`+v+`"`)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// child is a storerelay run as a child process.
type child struct {
	cmd  *exec.Cmd
	done chan error
}

func startChild(t *testing.T, bin string, args []string, stderr io.Writer) *child {
	return startChildB(t, bin, args, stderr)
}

func startChildB(t testing.TB, bin string, args []string, stderr io.Writer) *child {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() { c.kill() })
	waitHealthy(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", portOf(args)), c.done)
	return c
}

var killMu sync.Mutex

func (c *child) kill() {
	killMu.Lock()
	defer killMu.Unlock()
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
	c.done <- nil
}

// term stops the child with SIGTERM and returns its CPU time and peak RSS.
func (c *child) term(t *testing.T) (cpu time.Duration, maxRSS int64) { return c.termB(t) }

func (c *child) termB(t testing.TB) (cpu time.Duration, maxRSS int64) {
	t.Helper()
	// Read the high-water mark before exiting: rusage's Maxrss of a child
	// started by vfork also counts the parent's memory before the exec.
	maxRSS = vmHWM(t, c.cmd.Process.Pid)
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-c.done; err != nil {
		t.Errorf("relay exited: %v", err)
	}
	c.done <- nil
	ps := c.cmd.ProcessState
	return ps.UserTime() + ps.SystemTime(), maxRSS
}

// vmHWM is the peak resident set size of process pid, in bytes.
func vmHWM(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/pid/status")
	return 0
}

func dirBytes(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

var flagErrHelp = flag.ErrHelp

func itoa(i int) string { return strconv.Itoa(i) }

func asStatus(err error, se **remotewrite.StatusError) bool { return errors.As(err, se) }

type clientT = remotewrite.Client

func newClientT(t testing.TB, url string) *remotewrite.Client {
	t.Helper()
	c, err := remotewrite.NewClient(remotewrite.ClientOptions{URL: url, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitOutboxSealed polls the relay until n samples are sealed.
func waitOutboxSealed(t testing.TB, port, n int) {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for metric(t, url, "tillpipe_relay_sealed_samples_total", nil) < float64(n) {
		select {
		case <-ctx.Done():
			t.Fatalf("%d samples not sealed", n)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
