package ingester

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"tillpipe/internal/testenv"
)

// startPrometheus runs Debian's prometheus with the remote-write receiver
// and an out-of-order window, or skips the test when it is not installed.
func startPrometheus(t *testing.T, oooWindow time.Duration) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not on PATH (apt-get install prometheus); skipping the Prometheus backend test")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	conf := fmt.Sprintf("global:\n  scrape_interval: 1h\nstorage:\n  tsdb:\n    out_of_order_time_window: %s\n", oooWindow)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.enable-remote-write-receiver", "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus log (tail):\n%s", tailBytes(b, 3000))
		}
	})
	base := "http://" + addr
	waitFor(t, "prometheus ready", func() bool {
		resp, err := http.Get(base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return base
}

func freePort(t *testing.T) int {
	t.Helper()
	return testenv.FreePort(t)
}

// promExport reads the raw samples of selector over the last 3 hours
// through a range-vector instant query.
func promExport(t *testing.T, base, selector string) ([]testenv.Series, int) {
	t.Helper()
	q := url.Values{"query": {selector + "[3h]"}, "time": {strconv.FormatInt(time.Now().Unix(), 10)}}
	resp, err := http.Get(base + "/api/v1/query?" + q.Encode())
	if err != nil {
		return nil, 0
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, 0
	}
	var ss []testenv.Series
	n := 0
	for _, r := range out.Data.Result {
		s := testenv.Series{Metric: r.Metric}
		for _, v := range r.Values {
			ts, _ := v[0].(float64)
			str, _ := v[1].(string)
			f, _ := strconv.ParseFloat(str, 64)
			s.Timestamps = append(s.Timestamps, int64(math.Round(ts*1000)))
			s.Values = append(s.Values, f)
		}
		n += len(s.Timestamps)
		ss = append(ss, s)
	}
	return ss, n
}

// TestIngest_PrometheusBackfill writes to Prometheus' remote-write receiver:
// a live sample first, then a backlog of the hour before it, which Prometheus
// accepts only within its out_of_order_time_window.
func TestIngest_PrometheusBackfill(t *testing.T) {
	base := startPrometheus(t, 2*time.Hour)
	env := startJetStream(t)
	now := time.Now().Truncate(time.Second)
	live := fleet(1, 2, 1, now, "prom")
	hour := fleet(1, 2, 240, now.Add(-time.Hour), "prom")[:3*239] // 15 s scrapes from an hour ago up to the live one
	for i := range live {
		live[i].seq = 1_000_000 // distinct Nats-Msg-Ids from the backlog's
	}
	_, nLive := expected(live)
	_, nHour := expected(hour)
	r := startIngester(t, env.js, newClient(t, base+"/api/v1/write", "snappy"), Options{BatchMaxSamples: 5000})
	publishAll(t, env.js, live)
	waitFor(t, "live samples written", func() bool { return r.written() >= nLive })
	publishAll(t, env.js, hour)
	waitFor(t, "backfilled hour written", func() bool { return r.written() >= nLive+nHour },
		func() string {
			return fmt.Sprintf("%d of %d, %g dead-lettered", r.written(), nLive+nHour, value(r.in.m.deadLetter))
		})
	r.stop()
	if dl := value(r.in.m.deadLetter); dl != 0 {
		t.Errorf("%g batches dead-lettered: Prometheus refused samples", dl)
	}
	want, n := expected(append(live, hour...))
	var (
		got   []testenv.Series
		count int
	)
	waitFor(t, "samples queryable in Prometheus", func() bool {
		got, count = promExport(t, base, `{store="prom-store-000"}`)
		return count >= n
	}, func() string { return fmt.Sprintf("%d of %d samples", count, n) })
	compareExport(t, got, want)
}
