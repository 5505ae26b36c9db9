package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"
	"go.uber.org/goleak"

	"tillpipe/internal/fleetsim"
	"tillpipe/internal/remotewrite"
	"tillpipe/internal/testenv"
	"tillpipe/internal/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats-server and nats.go leave goroutines that end shortly after shutdown.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start.func1"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("internal/poll.runtime_pollWait"),
	)
}

// fleet is a store's simulated tills.
type fleet struct {
	tills []*fleetsim.Till
}

func newFleet(store string, n int) *fleet {
	f := &fleet{}
	for i := range n {
		f.tills = append(f.tills, fleetsim.NewTill(store, fmt.Sprintf("till-%02d", i), int64(i+1)))
	}
	return f
}

// scrape returns till i's request body (marshaled WriteRequest) at ts and
// the keys of its samples as they must land: with store=s1.
func (f *fleet) scrape(i int, ts int64) ([]byte, []string) {
	wr := prompb.WriteRequest{Timeseries: f.tills[i].AppendSeries(nil, ts)}
	keys := make([]string, 0, len(wr.Timeseries))
	for _, s := range wr.Timeseries {
		ls := make([]prompb.Label, len(s.Labels))
		copy(ls, s.Labels)
		for j := range ls {
			if ls[j].Name == "store" {
				ls[j].Value = "s1"
			}
		}
		keys = append(keys, sampleKey(ls, ts))
	}
	return wr.MarshalProtobuf(nil), keys
}

func client(t *testing.T, url, enc string) *remotewrite.Client {
	t.Helper()
	c, err := remotewrite.NewClient(remotewrite.ClientOptions{URL: url, Encoding: enc, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRemoteWriteInBatchesOut: what lands on the stream decodes to exactly
// the samples sent, with store stamped (tills claim store "elsewhere"), in
// every class; a bad request in the middle changes nothing.
func TestRemoteWriteInBatchesOut(t *testing.T) {
	c := startCentral(t)
	r := startRelay(t, baseArgs(t.TempDir(), c.nats.URL(), testenv.FreePort(t))...)
	f := newFleet("elsewhere", 5)
	want := map[string]bool{}
	base := time.Now().Add(-time.Hour).UnixMilli()
	for scrape := range 3 {
		for i := range f.tills {
			body, keys := f.scrape(i, base+int64(scrape)*15000)
			enc := []string{"snappy", "zstd"}[i%2]
			if err := client(t, r.url, enc).Send(context.Background(), body); err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				want[k] = true
			}
		}
		resp, err := http.Post(r.url, "application/x-protobuf", strings.NewReader("garbage"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("garbage body: %d, want 400", resp.StatusCode)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := c.waitSamples(t, ctx, len(want))
	for k, n := range l.samples {
		if !want[k] {
			t.Errorf("unexpected sample on the stream: %s", k)
		} else if n != 1 {
			t.Errorf("sample %s on the stream %d times", k, n)
		}
	}
	classes := map[wire.Class]int{}
	for _, h := range l.batches {
		classes[h.Class]++
	}
	if len(classes) != 3 {
		t.Errorf("batches per class %v, want all three", classes)
	}
	if got := metric(t, r.metrics, "tillpipe_relay_samples_received_total", nil); got != float64(len(want)) {
		t.Errorf("samples_received_total = %v, want %d", got, len(want))
	}
	if got := metric(t, r.metrics, "tillpipe_relay_requests_rejected_total", map[string]string{"reason": "bad_encoding"}); got != 3 {
		t.Errorf("requests_rejected_total{reason=bad_encoding} = %v, want 3", got)
	}
	t.Logf("%d samples in %d batches, %.2f bytes/sample on the wire", len(want), len(l.batches), float64(l.bytes)/float64(len(want)))
}

// TestOutage: NATS down under load, then back: every sample arrives once,
// and batches sealed after the outage go out before the backlog has drained
// (the uplink is rate-limited so the backlog takes a while).
func TestOutage(t *testing.T) {
	c := startCentral(t)
	args := append(baseArgs(t.TempDir(), c.nats.URL(), testenv.FreePort(t)), "-uplink-rate", "40000")
	r := startRelay(t, args...)
	f := newFleet("s1", 20)
	want := map[string]bool{}
	send := func(ts int64) {
		for i := range f.tills {
			body, keys := f.scrape(i, ts)
			if err := client(t, r.url, "snappy").Send(context.Background(), body); err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				want[k] = true
			}
		}
	}
	base := time.Now().Add(-time.Hour).UnixMilli()
	send(base)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c.waitSamples(t, ctx, len(want))

	c.nats.Stop()
	backlogUntil := base
	for s := 1; s <= 6; s++ {
		backlogUntil = base + int64(s)*15000
		send(backlogUntil)
	}
	// Wait until the outage backlog is sealed (it is, within the batch ages).
	for metric(t, r.metrics, "tillpipe_relay_sealed_samples_total", nil) < float64(len(want)) {
		select {
		case <-ctx.Done():
			t.Fatal("backlog not sealed")
		case <-time.After(100 * time.Millisecond):
		}
	}
	c.nats.Start()
	back := time.Now()
	liveTS := base + 3600_000
	send(liveTS)

	l := c.waitSamples(t, ctx, len(want))
	// Once the link is back the first batch goes out within about a second
	// (reconnect every 200-500 ms, then a jitter of up to 500 ms): no
	// backoff grown through the outage. The bound is ten times that, so a
	// busy machine cannot fail it, but a backoff of half a minute would.
	var first time.Time
	for _, at := range l.stored {
		if at.After(back) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	t.Logf("first batch stored %v after NATS was back", first.Sub(back).Round(time.Millisecond))
	if first.Sub(back) > 10*time.Second {
		t.Errorf("first batch stored %v after NATS was back, want about a second", first.Sub(back))
	}
	for k := range want {
		if l.samples[k] != 1 {
			t.Errorf("sample %s on the stream %d times", k, l.samples[k])
		}
	}
	if len(l.samples) != len(want) {
		t.Errorf("%d distinct samples on the stream, want %d", len(l.samples), len(want))
	}
	// Live first: the first live critical batch is on the stream before the
	// last backlog batch.
	firstLive, lastBacklog := -1, -1
	for i, h := range l.batches {
		if h.MinTime >= liveTS && h.Class == wire.ClassCritical && firstLive < 0 {
			firstLive = i
		}
		if h.MaxTime <= backlogUntil && h.MaxTime > base {
			lastBacklog = i
		}
	}
	t.Logf("stream order after the outage: first live critical batch at message %d, last backlog batch at %d of %d", firstLive, lastBacklog, len(l.batches))
	if firstLive < 0 || lastBacklog < 0 || firstLive > lastBacklog {
		t.Errorf("live data did not overtake the backlog: first live at %d, last backlog at %d", firstLive, lastBacklog)
	}
}

// TestCrash: the relay as a child process, SIGKILLed repeatedly while tills
// write; every sample whose write got a 2xx reaches the stream exactly once
// (writes that failed are not retried here, so nothing may double either).
func TestCrash(t *testing.T) {
	c := startCentral(t)
	bin := testenv.Binary(t, "storerelay")
	dir := t.TempDir()
	args := baseArgs(dir, c.nats.URL(), testenv.FreePort(t))
	f := newFleet("s1", 8)
	var mu sync.Mutex
	acked := map[string]bool{}
	sent := map[string]bool{}
	var logs bytes.Buffer
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Now().Add(-2 * time.Hour).UnixMilli()
	var scrape atomic.Int64
	for round := range 6 {
		ch := startChild(t, bin, args, &logs)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				cl := client(t, fmt.Sprintf("http://127.0.0.1:%d/api/v1/write", portOf(args)), "snappy")
				for {
					select {
					case <-stop:
						return
					default:
					}
					s := scrape.Add(1)
					body, keys := f.scrapeLocked(&mu, w+4*int(s%2), base+s*1000)
					err := cl.Send(context.Background(), body)
					mu.Lock()
					for _, k := range keys {
						sent[k] = true
						if err == nil {
							acked[k] = true
						}
					}
					mu.Unlock()
					if err != nil {
						return // the relay is gone
					}
				}
			})
		}
		time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond) // load for a random while, then kill
		ch.kill()
		close(stop)
		wg.Wait()
		t.Logf("round %d: %d samples acknowledged so far", round, len(acked))
	}
	ch := startChild(t, bin, args, &logs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := c.waitSamples(t, ctx, len(acked))
	for k := range acked {
		if l.samples[k] == 0 {
			t.Errorf("acknowledged sample lost: %s", k)
		}
	}
	for k, n := range l.samples {
		if !sent[k] {
			t.Errorf("sample never sent: %s", k)
		}
		if n > 1 {
			t.Errorf("sample %s on the stream %d times", k, n)
		}
	}
	ch.term(t)
	if t.Failed() {
		t.Logf("relay logs:\n%s", logs.String())
	}
	t.Logf("%d acknowledged, %d sent, %d on the stream in %d batches", len(acked), len(sent), len(l.samples), len(l.batches))
}

// scrapeLocked is scrape for concurrent writers; each till is only used by
// one writer at a time, but fleetsim is not safe for concurrent use.
func (f *fleet) scrapeLocked(mu *sync.Mutex, i int, ts int64) ([]byte, []string) {
	mu.Lock()
	defer mu.Unlock()
	return f.scrape(i%len(f.tills), ts)
}

// TestCap: with central unreachable, a backlog over -buffer-max-bytes drops
// bulk before normal before critical, and once central is back, what is
// missing per class is exactly what samples_dropped_total counted.
func TestCap(t *testing.T) {
	c := startCentral(t)
	c.nats.Stop()
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	os.WriteFile(rules, []byte("critical __name__=\"crit\"\nbulk __name__=\"bulk\"\n"), 0o644)
	args := append(baseArgs(filepath.Join(dir, "data"), c.nats.URL(), testenv.FreePort(t)),
		"-rules", rules, "-buffer-max-bytes", "1500000", "-max-body-bytes", "65536", "-max-series-per-device", "0",
		"-critical-batch-bytes", "65536", "-normal-batch-bytes", "65536", "-bulk-batch-bytes", "65536")
	r := startRelay(t, args...)
	rng := rand.New(rand.NewPCG(3, 4))
	sent := map[string]map[string]bool{"critical": {}, "normal": {}, "bulk": {}}
	names := map[string]string{"critical": "crit", "normal": "norm", "bulk": "bulk"}
	cl := client(t, r.url, "snappy")
	ts := time.Now().Add(-time.Hour).UnixMilli()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Incompressible label values, so a few MB of batches take few samples.
	// Bulk, then normal, then critical, each sealed before the next starts:
	// when normal starts to drop, bulk must be gone entirely.
	sealed := 0
	for _, class := range []string{"bulk", "normal", "critical"} {
		reqs := 200
		if class == "critical" {
			reqs = 50 // less critical data: it must all survive
		}
		for range reqs {
			var wr prompb.WriteRequest
			for range 100 {
				v := fmt.Sprintf("%016x%016x%016x%016x%016x%016x%016x%016x", rng.Uint64(), rng.Uint64(), rng.Uint64(), rng.Uint64(), rng.Uint64(), rng.Uint64(), rng.Uint64(), rng.Uint64())
				ls := []prompb.Label{{Name: "__name__", Value: names[class]}, {Name: "id", Value: v}, {Name: "store", Value: "s1"}}
				wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Value: 1, Timestamp: ts}}})
				sent[class][sampleKey(ls, ts)] = true
			}
			if err := cl.Send(context.Background(), wr.MarshalProtobuf(nil)); err != nil {
				t.Fatal(err)
			}
		}
		sealed += len(sent[class])
		for metric(t, r.metrics, "tillpipe_relay_sealed_samples_total", nil) < float64(sealed) {
			select {
			case <-ctx.Done():
				t.Fatalf("%s not sealed", class)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	total := sealed
	dropped := map[string]float64{}
	for class := range sent {
		dropped[class] = metric(t, r.metrics, "tillpipe_relay_samples_dropped_total", map[string]string{"class": class})
	}
	t.Logf("dropped while offline: %v", dropped)
	if dropped["bulk"] == 0 {
		t.Fatal("nothing dropped: the test did not reach the cap")
	}
	if dropped["critical"] != 0 {
		t.Errorf("critical dropped: %v", dropped)
	}
	if dropped["normal"] > 0 && dropped["bulk"] != float64(len(sent["bulk"])) {
		t.Errorf("normal dropped while bulk still held data: %v", dropped)
	}
	c.nats.Start()
	c.connect(t)
	want := float64(total) - dropped["bulk"] - dropped["normal"]
	l := c.waitSamples(t, ctx, int(want))
	for class, keys := range sent {
		got := 0
		for k := range keys {
			got += l.samples[k]
		}
		if missing := len(keys) - got; float64(missing) != dropped[class] {
			t.Errorf("%s: %d of %d samples missing on the stream, %v counted dropped", class, missing, len(keys), dropped[class])
		}
	}
}

func TestConfig(t *testing.T) {
	env := map[string]string{"TILLPIPE_RELAY_STORE": "envstore", "TILLPIPE_RELAY_DATA_DIR": "/tmp/x", "TILLPIPE_RELAY_LISTEN": ":1"}
	getenv := func(k string) string { return env[k] }
	cfg, err := loadConfig([]string{"-listen", ":2"}, getenv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store != "envstore" || cfg.Listen != ":2" || cfg.BulkBatchAge != time.Minute {
		t.Errorf("flag > env > default broken: %+v", cfg)
	}
	for _, tc := range []struct {
		name  string
		args  []string
		field string
	}{
		{"missing_store", []string{"-data-dir", "d"}, "store"},
		{"store_with_dot", []string{"-store", "a.b", "-data-dir", "d"}, "store"},
		{"missing_data_dir", []string{"-store", "s"}, "data-dir"},
		{"negative_rate", []string{"-store", "s", "-data-dir", "d", "-uplink-rate", "-1"}, "uplink-rate"},
		{"cert_without_key", []string{"-store", "s", "-data-dir", "d", "-tls-cert", "c"}, "tls-key"},
		{"client_ca_without_tls", []string{"-store", "s", "-data-dir", "d", "-client-ca", "c"}, "client-ca"},
		{"buffer_below_four_batches", []string{"-store", "s", "-data-dir", "d", "-buffer-max-bytes", "1000"}, "buffer-max-bytes"},
		{"zero_batch_age", []string{"-store", "s", "-data-dir", "d", "-critical-batch-age", "0s"}, "critical-batch-age"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(tc.args, func(string) string { return "" }, &bytes.Buffer{})
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("err %v, want a ConfigError for %s", err, tc.field)
			}
		})
	}
	var help bytes.Buffer
	if _, err := loadConfig([]string{"-h"}, getenv, &help); !errors.Is(err, flagErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, f := range []string{"store", "data-dir", "listen", "nats-url", "nats-creds", "uplink-rate", "buffer-max-bytes", "buffer-max-age",
		"rules", "max-series-per-device", "auth-tokens", "tls-cert", "tls-key", "client-ca"} {
		if !strings.Contains(help.String(), "-"+f+" ") && !strings.Contains(help.String(), "-"+f+"\n") {
			t.Errorf("-h does not document -%s", f)
		}
	}
}

func TestSnappyBodyOverHTTPDirect(t *testing.T) {
	// A raw client (no remotewrite.Client): Prometheus' headers exactly.
	c := startCentral(t)
	r := startRelay(t, baseArgs(t.TempDir(), c.nats.URL(), testenv.FreePort(t))...)
	body, _ := newFleet("s1", 1).scrape(0, time.Now().UnixMilli())
	req, _ := http.NewRequest(http.MethodPost, r.url, bytes.NewReader(snappy.Encode(nil, body)))
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}
