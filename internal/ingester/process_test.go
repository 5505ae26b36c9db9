package ingester

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tillpipe/internal/remotewrite"
	"tillpipe/internal/stream"
	"tillpipe/internal/testenv"
	"tillpipe/internal/wire"
)

// proc is cmd/ingester running as a child process.
type proc struct {
	t       testing.TB
	cmd     *exec.Cmd
	listen  string
	logPath string
	done    chan struct{}
	err     error
}

func startProc(t testing.TB, natsURL, backendURL string, extra ...string) *proc {
	t.Helper()
	bin := testenv.Binary(t, "ingester")
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	logPath := filepath.Join(t.TempDir(), "ingester.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-nats-url", natsURL, "-backend-url", backendURL, "-backend-encoding", "zstd",
		"-listen", listen, "-ack-wait", testAckWait.String(), "-log-format", "text"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, listen: listen, logPath: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("ingester log (tail):\n%s", tailBytes(b, 3000))
		}
	})
	waitFor(t, "ingester /healthz", func() bool {
		select {
		case <-p.done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("ingester exited: %v\n%s", p.err, b)
		default:
		}
		resp, err := http.Get("http://" + listen + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// term sends SIGTERM and waits for the exit.
func (p *proc) term() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(2 * time.Minute):
		p.t.Fatal("ingester did not exit after SIGTERM")
		return nil
	}
}

// rssKiB reads VmRSS from /proc/<pid>/status.
func (p *proc) rssKiB() int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// metric sums the samples of /metrics whose line starts with prefix
// (a name, optionally with the start of its labels).
func (p *proc) metric(prefix string) float64 {
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.listen+"/metrics", nil)
	req.Header.Set("Accept-Encoding", "identity") // spare the child the gzip
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		if rest := line[len(prefix):]; !strings.Contains(prefix, "{") && rest != "" && rest[0] != ' ' && rest[0] != '{' {
			continue // a longer name sharing the prefix
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			v, _ := strconv.ParseFloat(line[i+1:], 64)
			sum += v
		}
	}
	return sum
}

// publishAll publishes bs as relays would.
func publishAll(t testing.TB, js jetstream.JetStream, bs []batch) {
	t.Helper()
	for i := range bs {
		publish(t, js, bs[i].store, bs[i].class, bs[i].seq, bs[i].frame(t))
	}
}

// distinct counts the distinct samples and the surplus copies in the export.
func distinct(t testing.TB, vm *testenv.VictoriaMetrics, match string) (unique, dups int) {
	t.Helper()
	ss, err := vm.Export(context.Background(), match)
	if err != nil {
		return 0, 0
	}
	seen := map[string]int{}
	for _, s := range ss {
		k := s.Key()
		for _, ts := range s.Timestamps {
			seen[k+"@"+strconv.FormatInt(ts, 10)]++
		}
	}
	for _, n := range seen {
		dups += n - 1
	}
	return len(seen), dups
}

// TestProcess_BackendOutage stops VictoriaMetrics under load: the ingester
// stops fetching (the backlog stays in the stream), its memory stays bounded
// while it waits, and everything arrives once the backend is back.
func TestProcess_BackendOutage(t *testing.T) {
	env := startJetStream(t)
	vm := testenv.StartVictoriaMetrics(t)
	bs := fleet(6, 5, 24, time.Now().Add(-3*time.Hour).Truncate(time.Second), "outage")
	want, n := expected(bs)
	p := startProc(t, env.nats.URL(), vm.WriteURL(), "-batch-max-samples", "5000", "-concurrency", "2")
	const maxFetch = DefaultMaxFetch
	quarter := len(bs) / 4
	publishAll(t, env.js, bs[:quarter])
	waitFor(t, "first quarter written", func() bool { return p.metric("tillpipe_ingester_samples_written_total") > 0 })

	vm.Stop()
	var maxRSS atomic.Int64
	stopSampling := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			maxRSS.Store(max(maxRSS.Load(), int64(p.rssKiB())))
			select {
			case <-stopSampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	publishAll(t, env.js, bs[quarter:])
	waitFor(t, "ingester notices the outage", func() bool {
		return p.metric("tillpipe_ingester_backend_up") == 0 && p.metric(`tillpipe_ingester_backend_requests_total{code="network"}`) >= 3
	})
	// Backpressure: while the backend is down the backlog stays in the stream.
	ctx := context.Background()
	pending := uint64(0)
	for _, c := range wire.Classes {
		cons, err := env.js.Consumer(ctx, stream.Name, ConsumerName(c))
		if err != nil {
			t.Fatal(err)
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if limit := 2 * maxFetch; ci.NumAckPending > limit {
			t.Errorf("%s: %d messages in the ingester's hands while the backend is down, want at most %d", c, ci.NumAckPending, limit)
		}
		pending += ci.NumPending
	}
	if pending == 0 {
		t.Errorf("no backlog left in the stream while the backend is down: the ingester kept fetching")
	}
	close(stopSampling)
	wg.Wait()
	const boundKiB = 200 << 10
	t.Logf("max RSS while the backend was down: %d KiB; backlog in the stream: %d batches", maxRSS.Load(), pending)
	if maxRSS.Load() > boundKiB {
		t.Errorf("ingester RSS reached %d KiB while waiting, bound %d KiB", maxRSS.Load(), boundKiB)
	}

	vm.Start()
	waitFor(t, "everything written after the restart", func() bool {
		return p.metric("tillpipe_ingester_samples_written_total") >= float64(n)
	}, func() string { return fmt.Sprintf("%g of %d", p.metric("tillpipe_ingester_samples_written_total"), n) })
	if err := p.term(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	compareExport(t, exportAll(t, vm, `{store=~"outage-.*"}`, n), want)
}

// holdingProxy forwards remote-write requests to a backend. Once armed, it
// holds each request, after forwarding it when forward is set, until the
// client goes away, and reports it on held.
type holdingProxy struct {
	srv           *httptest.Server
	armed         atomic.Int64 // requests to pass before holding
	passed        atomic.Int64 // requests passed and answered 2xx
	passedSamples atomic.Int64 // their samples
	held          chan int     // samples of each held request
	forward       bool
}

func startHoldingProxy(t *testing.T, backend string, passFirst int64, forward bool) *holdingProxy {
	t.Helper()
	u, _ := url.Parse(backend)
	rp := httputil.NewSingleHostReverseProxy(u)
	h := &holdingProxy{held: make(chan int, 1024), forward: forward}
	h.armed.Store(passFirst)
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		raw, err := remotewrite.Decompress(nil, body, r.Header.Get("Content-Encoding"), 64<<20)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		if h.armed.Add(-1) >= 0 {
			rec := httptest.NewRecorder()
			rp.ServeHTTP(rec, r)
			if rec.Code/100 == 2 {
				h.passedSamples.Add(int64(countSamples(t, raw)))
				h.passed.Add(1)
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
			return
		}
		if h.forward {
			rec := httptest.NewRecorder()
			rp.ServeHTTP(rec, r.Clone(context.WithoutCancel(r.Context())))
			if rec.Code/100 != 2 {
				t.Errorf("backend answered %d to a forwarded request", rec.Code)
			}
		}
		h.held <- countSamples(t, raw)
		<-r.Context().Done()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *holdingProxy) url() string { return h.srv.URL + "/api/v1/write" }

// TestProcess_KillMidBatch SIGKILLs the ingester while its backend requests
// are written but unanswered, then starts another: everything arrives, and
// only the samples of the requests in flight at the kill may be written twice.
func TestProcess_KillMidBatch(t *testing.T) {
	env := startJetStream(t)
	vm := testenv.StartVictoriaMetrics(t)
	bs := fleet(4, 4, 12, time.Now().Add(-90*time.Minute).Truncate(time.Second), "kill")
	_, n := expected(bs)
	publishAll(t, env.js, bs)
	proxy := startHoldingProxy(t, vm.URL(), 3, true)
	p := startProc(t, env.nats.URL(), proxy.url(), "-batch-max-samples", "3000")
	heldSamples := <-proxy.held
	// Kill once the answered requests are acked (samples_written_total is
	// counted after the acks), so that exactly the held ones are in flight.
	waitFor(t, "passed requests acked", func() bool {
		return proxy.passed.Load() == 3 && p.metric("tillpipe_ingester_samples_written_total") >= float64(proxy.passedSamples.Load())
	})
	p.kill()
	proxy.srv.Close() // waits for the handlers still forwarding
	for more := true; more; {
		select {
		case s := <-proxy.held:
			heldSamples += s
		default:
			more = false
		}
	}
	startProc(t, env.nats.URL(), vm.WriteURL(), "-batch-max-samples", "3000")
	var unique, dups int
	waitFor(t, "every sample in VictoriaMetrics", func() bool {
		unique, dups = distinct(t, vm, `{store=~"kill-.*"}`)
		return unique >= n
	}, func() string { return fmt.Sprintf("%d of %d samples", unique, n) })
	t.Logf("%d samples were in flight at the kill; %d samples written twice", heldSamples, dups)
	if unique != n {
		t.Errorf("%d distinct samples, want %d", unique, n)
	}
	if dups > heldSamples {
		t.Errorf("%d samples written twice, but only %d were in flight at the kill", dups, heldSamples)
	}
}

// TestProcess_SigtermHandsBack sends SIGTERM while every backend request
// hangs: the ingester exits after its shutdown timeout, having handed its
// batches back, and another replica writes them all exactly once.
func TestProcess_SigtermHandsBack(t *testing.T) {
	env := startJetStream(t)
	vm := testenv.StartVictoriaMetrics(t)
	bs := fleet(3, 3, 10, time.Now().Add(-40*time.Minute).Truncate(time.Second), "sigterm")
	want, n := expected(bs)
	publishAll(t, env.js, bs)
	proxy := startHoldingProxy(t, vm.URL(), 0, false)
	p := startProc(t, env.nats.URL(), proxy.url(), "-shutdown-timeout", "1s")
	<-proxy.held
	if err := p.term(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	q := startProc(t, env.nats.URL(), vm.WriteURL())
	waitFor(t, "everything written by the second replica", func() bool {
		return q.metric("tillpipe_ingester_samples_written_total") >= float64(n)
	})
	if err := q.term(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	compareExport(t, exportAll(t, vm, `{store=~"sigterm-.*"}`, n), want)
}
