package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const fixtures = "../../internal/collector/testdata"

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadConfig_FlagOverEnvOverDefault(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   map[string]string
		args  []string
		check func(Config) bool
	}{
		{"defaults_when_unset", nil, []string{"-relay-url", "http://r/api/v1/write"}, func(c Config) bool {
			return c.Interval == 15*time.Second && c.CgroupRoot == "/sys/fs/cgroup" && c.ProcRoot == "/proc" &&
				c.DockerSocket == "/var/run/docker.sock" && c.BufferMaxBytes == 8<<20 && c.Listen == "" && !c.Once &&
				c.MaxProcs == 1 && c.GCPercent == 50
		}},
		{"env_over_default", map[string]string{"TILLPIPE_COLLECTOR_RELAY_URL": "http://env/api/v1/write", "TILLPIPE_COLLECTOR_INTERVAL": "30s", "TILLPIPE_COLLECTOR_DEVICE": "till-7"}, nil, func(c Config) bool {
			return c.RelayURL == "http://env/api/v1/write" && c.Interval == 30*time.Second && c.Device == "till-7"
		}},
		{"flag_over_env", map[string]string{"TILLPIPE_COLLECTOR_RELAY_URL": "http://env/api/v1/write", "TILLPIPE_COLLECTOR_INTERVAL": "30s"}, []string{"-interval", "5s", "-relay-url", "http://flag/api/v1/write"}, func(c Config) bool {
			return c.RelayURL == "http://flag/api/v1/write" && c.Interval == 5*time.Second
		}},
		{"docker_socket_none_disables", map[string]string{"TILLPIPE_COLLECTOR_DOCKER_SOCKET": "none"}, []string{"-once"}, func(c Config) bool {
			return c.DockerSocket == ""
		}},
		{"docker_socket_empty_flag_disables", nil, []string{"-once", "-docker-socket="}, func(c Config) bool {
			return c.DockerSocket == ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadConfig(tc.args, envOf(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(cfg) {
				t.Errorf("config %+v", cfg)
			}
		})
	}
}

func TestLoadConfig_Invalid(t *testing.T) {
	for _, tc := range []struct {
		name, field string
		env         map[string]string
		args        []string
	}{
		{"relay_url_missing", "relay-url", nil, nil},
		{"relay_url_not_http", "relay-url", nil, []string{"-relay-url", "store-server:9201"}},
		{"interval_below_1s", "interval", nil, []string{"-once", "-interval", "10ms"}},
		{"cert_without_key", "cert-file", nil, []string{"-once", "-cert-file", "c.pem"}},
		{"buffer_too_small", "buffer-max-bytes", map[string]string{"TILLPIPE_COLLECTOR_BUFFER_MAX_BYTES": "100"}, []string{"-once"}},
		{"max_procs_negative", "max-procs", nil, []string{"-once", "-max-procs", "-1"}},
		{"gc_percent_negative", "gc-percent", map[string]string{"TILLPIPE_COLLECTOR_GC_PERCENT": "-5"}, []string{"-once"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(tc.args, envOf(tc.env))
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Errorf("got %v, want a ConfigError on %s", err, tc.field)
			}
		})
	}
	if _, err := loadConfig(nil, envOf(map[string]string{"TILLPIPE_COLLECTOR_INTERVAL": "soon"})); err == nil {
		t.Error("bad_duration_in_env: no error")
	}
}

func TestRun_OncePrintsSortedText(t *testing.T) {
	args := []string{"-once", "-device", "till-042", "-cgroup-root", fixtures + "/cgroup/v2-docker",
		"-proc-root", fixtures + "/proc", "-docker-socket", "none", "-log-level", "error"}
	var out bytes.Buffer
	if err := run(t.Context(), args, envOf(nil), &out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{
		"# TYPE container_cpu_usage_seconds_total counter\n",
		`container_memory_working_set_bytes{container="/system.slice/docker-4b22933b1c1a52f075b0c399bd28844890252342a237a15e32d6ead871724ebe.scope",device="till-042"} 2.10059264e+08` + "\n",
		`till_collector_scrape_errors_total{device="till-042",source="cgroup"} 0` + "\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		if !strings.HasPrefix(l, "#") {
			names = append(names, l[:strings.IndexAny(l, "{ ")])
		}
	}
	for i := 1; i < len(names); i++ {
		if names[i] < names[i-1] {
			t.Fatalf("not sorted: %s after %s", names[i], names[i-1])
		}
	}
}

// TestRun_SamplesAndSendsToRelay runs the collector against a relay that
// decodes real snappy + protobuf, with its own /metrics and /healthz on.
func TestRun_SamplesAndSendsToRelay(t *testing.T) {
	got := make(chan *prompb.WriteRequest, 10)
	relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		compressed, _ := io.ReadAll(r.Body)
		body, err := snappy.Decode(nil, compressed)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var u prompb.WriteRequestUnmarshaler
		wr, err := u.UnmarshalProtobuf(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// Copy out of the unmarshaler's reused storage.
		cp := &prompb.WriteRequest{}
		for _, ts := range wr.Timeseries {
			cp.Timeseries = append(cp.Timeseries, prompb.TimeSeries{Labels: append([]prompb.Label(nil), ts.Labels...), Samples: append([]prompb.Sample(nil), ts.Samples...)})
		}
		select {
		case got <- cp:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer relay.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	env := envOf(map[string]string{"TILLPIPE_COLLECTOR_RELAY_URL": relay.URL + "/api/v1/write", "TILLPIPE_COLLECTOR_LOG_LEVEL": "error"})
	go func() {
		done <- run(ctx, []string{"-device", "till-042", "-interval", "1s", "-cgroup-root", fixtures + "/cgroup/v1",
			"-proc-root", fixtures + "/proc", "-docker-socket", "none", "-listen", listen}, env, io.Discard)
	}()
	wr := <-got
	var devices, cpu int
	for _, ts := range wr.Timeseries {
		for _, l := range ts.Labels {
			if l.Name == "device" && l.Value == "till-042" {
				devices++
			}
			if l.Name == "__name__" && l.Value == "container_cpu_usage_seconds_total" {
				cpu++
			}
		}
	}
	if devices != len(wr.Timeseries) || cpu != 2 {
		t.Errorf("%d series, %d with device till-042, %d container_cpu_usage_seconds_total (want 2)", len(wr.Timeseries), devices, cpu)
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := http.Get("http://" + listen + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || (path == "/metrics" && !strings.Contains(string(b), "tillpipe_collector_sent_requests_total")) {
			t.Errorf("GET %s: %d %.200s", path, resp.StatusCode, b)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestConfig_TuneRuntime(t *testing.T) {
	procs, gc := runtime.GOMAXPROCS(0), debug.SetGCPercent(100)
	debug.SetGCPercent(gc)
	limit := debug.SetMemoryLimit(-1)
	for _, tc := range []struct {
		name              string
		env               map[string]string
		cfg               Config
		wantProcs, wantGC int
		wantLimit         int64
		wantBudget        int64
	}{
		{"budget_turns_gogc_off", nil, Config{MaxProcs: 1, GCBudget: 1 << 19, GCPercent: 50}, 1, -1, gcMemoryLimit, 1 << 19},
		{"budget_keeps_gomemlimit", map[string]string{"GOMEMLIMIT": "1GiB"}, Config{GCBudget: 1 << 19}, procs, -1, limit, 1 << 19},
		{"gc_percent_without_budget", nil, Config{MaxProcs: 1, GCPercent: 50}, 1, 50, limit, 0},
		{"go_variables_win", map[string]string{"GOMAXPROCS": "3", "GOGC": "200"}, Config{MaxProcs: 1, GCBudget: 1 << 19, GCPercent: 50}, procs, gc, limit, 0},
		{"zero_keeps_go_defaults", nil, Config{}, procs, gc, limit, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			budget, restore := tc.cfg.tuneRuntime(envOf(tc.env))
			gotProcs := runtime.GOMAXPROCS(0)
			gotGC := debug.SetGCPercent(-1)
			debug.SetGCPercent(gotGC)
			gotLimit := debug.SetMemoryLimit(-1)
			restore()
			if gotProcs != tc.wantProcs || gotGC != tc.wantGC || gotLimit != tc.wantLimit || budget != tc.wantBudget {
				t.Errorf("GOMAXPROCS %d, GOGC %d, memory limit %d, budget %d; want %d, %d, %d, %d",
					gotProcs, gotGC, gotLimit, budget, tc.wantProcs, tc.wantGC, tc.wantLimit, tc.wantBudget)
			}
			if p, g, l := runtime.GOMAXPROCS(0), debug.SetGCPercent(gc), debug.SetMemoryLimit(-1); p != procs || g != gc || l != limit {
				t.Errorf("not restored: GOMAXPROCS %d, GOGC %d, memory limit %d; want %d, %d, %d", p, g, l, procs, gc, limit)
			}
		})
	}
}
