package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"tillpipe/internal/ingester"
	"tillpipe/internal/stream"
	"tillpipe/internal/testenv"
	"tillpipe/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func getenv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadConfig_FlagBeatsEnvBeatsDefault(t *testing.T) {
	env := map[string]string{
		"TILLPIPE_INGESTER_BACKEND_URL":       "http://vm:8428/api/v1/write",
		"TILLPIPE_INGESTER_CONCURRENCY":       "7",
		"TILLPIPE_INGESTER_BATCH_MAX_SAMPLES": "1234",
		"TILLPIPE_INGESTER_BACKEND_HEADERS":   "X-Scope-OrgID=retail, X-Other = a=b",
	}
	cfg, err := loadConfig([]string{"-concurrency", "3", "-backend-encoding", "zstd"}, getenv(env), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Concurrency != 3 || cfg.BatchMaxSamples != 1234 || cfg.BackendURL != "http://vm:8428/api/v1/write" ||
		cfg.BackendEncoding != "zstd" || cfg.Listen != ":9202" || cfg.StreamMaxAge != 72*time.Hour {
		t.Errorf("config = %+v", cfg)
	}
	h, _ := cfg.headers()
	if h["X-Scope-OrgID"] != "retail" || h["X-Other"] != "a=b" {
		t.Errorf("headers = %v", h)
	}
}

func TestLoadConfig_Invalid(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		env   map[string]string
		field string
	}{
		{"backend_url_not_http", []string{"-backend-url", "ftp://x"}, nil, "backend-url"},
		{"unknown_encoding", []string{"-backend-encoding", "gzip"}, nil, "backend-encoding"},
		{"header_without_value", []string{"-backend-headers", "X-Scope-OrgID"}, nil, "backend-headers"},
		{"zero_concurrency", []string{"-concurrency", "0"}, nil, "concurrency"},
		{"negative_batch", nil, map[string]string{"TILLPIPE_INGESTER_BATCH_MAX_SAMPLES": "-1"}, "batch-max-samples"},
		{"dedup_longer_than_max_age", []string{"-dedup-window", "2h", "-stream-max-age", "1h"}, nil, "dedup-window"},
		{"too_many_replicas", []string{"-stream-replicas", "9"}, nil, "stream-replicas"},
		{"zero_max_bytes", []string{"-stream-max-bytes", "0"}, nil, "stream-max-bytes"},
		{"ack_wait_too_short", []string{"-ack-wait", "10ms"}, nil, "ack-wait"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(tc.args, getenv(tc.env), &bytes.Buffer{})
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("loadConfig = %v, want ConfigError on %s", err, tc.field)
			}
		})
	}
}

func TestRun_HelpDocumentsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-h"}, getenv(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run -h = %v", err)
	}
	for _, f := range []string{"nats-url", "nats-creds", "backend-url", "backend-encoding", "backend-headers", "listen",
		"stream-replicas", "stream-max-age", "stream-max-bytes", "dedup-window", "concurrency", "batch-max-samples", "setup-only"} {
		if !strings.Contains(out.String(), "  -"+f) {
			t.Errorf("-h does not document -%s", f)
		}
	}
}

func TestRun_SetupOnly(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	env := map[string]string{"TILLPIPE_INGESTER_NATS_URL": n.URL(), "TILLPIPE_INGESTER_STREAM_MAX_AGE": "24h"}
	if err := run(context.Background(), []string{"-setup-only", "-dedup-window", "5m", "-log-level", "warn"}, getenv(env), &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	s, err := js.Stream(ctx, stream.Name)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.CachedInfo().Config; cfg.MaxAge != 24*time.Hour || cfg.Duplicates != 5*time.Minute {
		t.Errorf("stream config = %+v", cfg)
	}
	for _, c := range wire.Classes {
		if _, err := js.Consumer(ctx, stream.Name, ingester.ConsumerName(c)); err != nil {
			t.Errorf("consumer %s: %v", ingester.ConsumerName(c), err)
		}
	}
	if _, err := js.KeyValue(ctx, stream.ConfigBucket); err != nil {
		t.Errorf("config bucket: %v", err)
	}
}
