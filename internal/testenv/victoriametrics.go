package testenv

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// VictoriaMetrics is a real single-node VictoriaMetrics process on a
// loopback port, with deduplication off (so a sample written twice shows up
// twice in an export). Stop and Start keep its data directory.
type VictoriaMetrics struct {
	tb   testing.TB
	bin  string
	dir  string
	port int
	log  *os.File

	mu  sync.Mutex
	cmd *exec.Cmd
}

// StartVictoriaMetrics starts VictoriaMetrics and waits until it is healthy.
func StartVictoriaMetrics(tb testing.TB) *VictoriaMetrics {
	tb.Helper()
	dir := tb.TempDir()
	logf, err := os.Create(filepath.Join(dir, "victoria-metrics.log"))
	if err != nil {
		tb.Fatal(err)
	}
	vm := &VictoriaMetrics{tb: tb, bin: Binary(tb, "victoria-metrics"), dir: dir, port: freePort(tb), log: logf}
	vm.Start()
	tb.Cleanup(func() {
		vm.Stop()
		logf.Close()
		if tb.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil && len(b) > 0 {
				tb.Logf("victoria-metrics log (tail):\n%s", tail(b, 4000))
			}
		}
	})
	return vm
}

// URL is the base URL, e.g. http://127.0.0.1:8428.
func (vm *VictoriaMetrics) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", vm.port) }

// WriteURL is the remote-write endpoint.
func (vm *VictoriaMetrics) WriteURL() string { return vm.URL() + "/api/v1/write" }

// Start (re)starts the process on the same port and data directory.
func (vm *VictoriaMetrics) Start() {
	vm.tb.Helper()
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.cmd != nil {
		return
	}
	cmd := exec.Command(vm.bin,
		"-storageDataPath="+filepath.Join(vm.dir, "data"),
		fmt.Sprintf("-httpListenAddr=127.0.0.1:%d", vm.port),
		"-retentionPeriod=100y",
		"-dedup.minScrapeInterval=0",
		"-search.latencyOffset=0s",
		"-search.disableCache",
		"-memory.allowedPercent=20",
		"-loggerLevel=WARN",
	)
	cmd.Stdout, cmd.Stderr = vm.log, vm.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		vm.tb.Fatalf("start victoria-metrics: %v", err)
	}
	vm.cmd = cmd
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(vm.URL() + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	vm.tb.Fatalf("victoria-metrics on port %d not healthy after 60s", vm.port)
}

// Stop ends the process gracefully (SIGINT, so it flushes), an outage of
// the backend; Start brings it back with the same data.
func (vm *VictoriaMetrics) Stop() {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.cmd == nil {
		return
	}
	_ = vm.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = vm.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = vm.cmd.Process.Kill()
		<-done
	}
	vm.cmd = nil
}

// Pid is the process id, 0 while stopped.
func (vm *VictoriaMetrics) Pid() int {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.cmd == nil {
		return 0
	}
	return vm.cmd.Process.Pid
}

// Series is one series from VictoriaMetrics' export API.
type Series struct {
	Metric     map[string]string `json:"metric"`
	Values     []float64         `json:"values"`
	Timestamps []int64           `json:"timestamps"`
}

// Key is the series' label set as a stable string.
func (s Series) Key() string { return LabelsKey(s.Metric) }

// LabelsKey renders labels sorted by name, Prometheus-style.
func LabelsKey(m map[string]string) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	b.WriteByte('}')
	return b.String()
}

// Flush makes recently written samples visible to queries and exports.
func (vm *VictoriaMetrics) Flush(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, vm.URL()+"/internal/force_flush", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("force flush: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("force flush: status %d", resp.StatusCode)
	}
	return nil
}

// Export flushes and returns every series matching the selector, with all of
// its raw samples (duplicates included, since deduplication is off). The
// export API may split one series over several lines; Export merges them.
func (vm *VictoriaMetrics) Export(ctx context.Context, match string) ([]Series, error) {
	if err := vm.Flush(ctx); err != nil {
		return nil, err
	}
	q := url.Values{"match[]": {match}, "start": {"0"}, "reduce_mem_usage": {"1"}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, vm.URL()+"/api/v1/export?"+q.Encode(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", match, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("export %s: status %d: %s", match, resp.StatusCode, b)
	}
	var out []Series
	byKey := map[string]int{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 256<<20)
	for sc.Scan() {
		var s Series
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			return nil, fmt.Errorf("export %s: decode line: %w", match, err)
		}
		if i, ok := byKey[s.Key()]; ok {
			out[i].Values = append(out[i].Values, s.Values...)
			out[i].Timestamps = append(out[i].Timestamps, s.Timestamps...)
			continue
		}
		byKey[s.Key()] = len(out)
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("export %s: %w", match, err)
	}
	return out, nil
}

// CountSamples returns the number of raw samples matching the selector.
func (vm *VictoriaMetrics) CountSamples(ctx context.Context, match string) (int, error) {
	ss, err := vm.Export(ctx, match)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range ss {
		n += len(s.Timestamps)
	}
	return n, nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
