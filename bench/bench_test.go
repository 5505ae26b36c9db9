package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"tillpipe/bench/internal/report"
	"tillpipe/internal/testenv"
)

// binDir gathers every binary the harness runs into one directory (built by
// testenv from the versions go.mod pins, or taken from $TILLPIPE_BIN_DIR).
func binDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"nats-server", "victoria-metrics", "vmagent", "storerelay", "ingester", "collector"} {
		p := testenv.Binary(t, name)
		if _, err := os.Stat(p); err != nil {
			t.Skipf("binary %s missing: %v", name, err)
		}
		if err := os.Symlink(p, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestScenarioSmoke runs every scenario with a tiny accelerated fleet
// against the real binaries and fails if any acknowledged sample is lost
// or doubled (on the relay path and on vmagent's).
func TestScenarioSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole pipeline")
	}
	bins := binDir(t)
	// Short batch ages so bulk data does not wait a minute to be sealed.
	relayArgs := "-bulk-batch-age 2s -normal-batch-age 1s -critical-batch-age 500ms -log-level warn"
	cases := []struct {
		name string
		args []string
	}{
		{"steady_loses_or_doubles_nothing", []string{"-scenario", "steady", "-stores", "2", "-tills", "1", "-duration", "12s", "-accel", "20"}},
		{"outage_buffers_and_drains_everything", []string{"-scenario", "outage", "-stores", "2", "-tills", "1", "-accel", "360",
			"-outage-sim", "1h", "-outage-lead", "2m", "-uplink-rate", "1048576", "-drain-timeout", "3m"}},
		{"crash_of_relays_and_ingester_loses_nothing", []string{"-scenario", "crash", "-stores", "2", "-tills", "1", "-duration", "20s", "-accel", "20", "-kill-every", "4s"}},
		{"backend_outage_loses_nothing", []string{"-scenario", "backend-outage", "-stores", "2", "-tills", "1", "-duration", "20s", "-accel", "20", "-backend-down", "6s", "-warmup", "4s"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := t.TempDir()
			args := append([]string{"-bin-dir", bins, "-build=false", "-out", out, "-work", t.TempDir(),
				"-drain-timeout", "3m", "-relay-args", relayArgs, "-log-level", "warn"}, c.args...)
			opts, err := ParseOptions(args, os.Stderr)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			defer cancel()
			var stdout, stderr bytes.Buffer
			runErr := Run(ctx, opts, &stdout, &stderr)
			rep, err := report.Read(out, opts.Scenario)
			if err != nil {
				t.Fatalf("no report (run error %v): %v\n%s", runErr, err, stderr.String())
			}
			if len(rep.Completeness) == 0 {
				t.Fatalf("no completeness check ran; failures: %v", rep.Failures)
			}
			for _, cp := range rep.Completeness {
				if cp.Expected == 0 {
					t.Errorf("%s: no acknowledged sample", cp.Target)
				}
				if cp.Lost != 0 || cp.Doubled != 0 || cp.Unexpected != 0 {
					t.Errorf("%s", cp.String())
				}
			}
			if runErr != nil || !rep.Pass {
				t.Errorf("run error %v, failures %v\nharness log:\n%s", runErr, rep.Failures, tail(stderr.String(), 4000))
			}
			for _, p := range rep.Plots {
				if _, err := os.Stat(filepath.Join(out, p)); err != nil {
					t.Errorf("plot %s: %v", p, err)
				}
			}
		})
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
