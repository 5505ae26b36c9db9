package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"tillpipe/internal/collector/docker/dockertest"
	"tillpipe/internal/stream"
	"tillpipe/internal/testenv"
	"tillpipe/internal/wire"
)

// TestEndToEndThroughRealRelay runs the collector against the real store
// relay (a child process) publishing to a real JetStream: every series the
// collector samples from the fixture tree arrives on the stream, decoded
// from wire batches, with store stamped and nothing else changed.
func TestEndToEndThroughRealRelay(t *testing.T) {
	const store = "s0107"
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := stream.Ensure(ctx, js, stream.Config{}); err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	testenv.StartProcess(t, "storerelay", "-store", store, "-data-dir", t.TempDir(),
		"-listen", fmt.Sprintf("127.0.0.1:%d", port), "-nats-url", n.URL(), "-log-level", "warn",
		"-normal-batch-age", "1s", "-bulk-batch-age", "1s") // do not wait a minute for bulk
	testenv.WaitHealthy(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", port))

	engine := dockertest.Start(t, filepath.Join(fixtures, "docker"))
	common := []string{"-device", "till-e2e", "-cgroup-root", fixtures + "/cgroup/v2-docker",
		"-proc-root", fixtures + "/proc", "-docker-socket", engine.Socket, "-log-level", "warn"}

	// What the collector samples, as its -once debugging output prints it.
	var once bytes.Buffer
	if err := run(ctx, append([]string{"-once"}, common...), envOf(nil), &once); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(&once)
	if err != nil {
		t.Fatalf("parse -once output: %v", err)
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			ls := map[string]string{"__name__": name}
			for _, lp := range m.GetLabel() {
				ls[lp.GetName()] = lp.GetValue()
			}
			ls["store"] = store
			want[testenv.LabelsKey(ls)] = true
		}
	}
	if len(want) < 100 {
		t.Fatalf("-once printed only %d series", len(want))
	}

	colCtx, stopCollector := context.WithCancel(ctx)
	colDone := make(chan error, 1)
	go func() {
		colDone <- run(colCtx, append([]string{"-interval", "1s", "-relay-url", fmt.Sprintf("http://127.0.0.1:%d/api/v1/write", port)}, common...), envOf(nil), os.Stdout)
	}()
	defer func() {
		stopCollector()
		if err := <-colDone; err != nil {
			t.Errorf("collector run: %v", err)
		}
	}()

	cons, err := js.OrderedConsumer(ctx, stream.Name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	dec := wire.NewDecoder(wire.DecoderOptions{})
	for len(missing(want, got)) > 0 {
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			t.Fatalf("read stream: %v; %d of %d series still missing, e.g. %v", err, len(missing(want, got)), len(want), first(missing(want, got)))
		}
		b, err := dec.Decode(msg.Data())
		if err != nil {
			t.Fatalf("decode batch from %s: %v", msg.Subject(), err)
		}
		if b.Header.Store != store || !strings.HasPrefix(msg.Subject(), "telemetry."+store+".") {
			t.Fatalf("batch from store %q on %s", b.Header.Store, msg.Subject())
		}
		for _, ts := range b.Request.Timeseries {
			ls := map[string]string{}
			for _, l := range ts.Labels {
				ls[l.Name] = l.Value
			}
			key := testenv.LabelsKey(ls)
			if !want[key] {
				t.Fatalf("stream carries a series the collector does not sample: %s", key)
			}
			got[key] = true
		}
	}
}

func missing(want, got map[string]bool) []string {
	var out []string
	for k := range want {
		if !got[k] {
			out = append(out, k)
		}
	}
	return out
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
