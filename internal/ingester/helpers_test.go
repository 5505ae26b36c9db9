package ingester

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"tillpipe/internal/fleetsim"
	"tillpipe/internal/remotewrite"
	"tillpipe/internal/stream"
	"tillpipe/internal/testenv"
	"tillpipe/internal/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testAckWait is short so that tests which lose an ack see the redelivery soon.
const testAckWait = 3 * time.Second

// jsEnv is an in-process JetStream with the tillpipe streams and consumers.
type jsEnv struct {
	nats *testenv.NATS
	nc   *nats.Conn
	js   jetstream.JetStream
}

func startJetStream(t testing.TB) *jsEnv {
	t.Helper()
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	nc, err := nats.Connect(n.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
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
	if err := Setup(ctx, js, SetupOptions{Consumer: ConsumerOptions{AckWait: testAckWait}}); err != nil {
		t.Fatal(err)
	}
	return &jsEnv{nats: n, nc: nc, js: js}
}

// newClient returns a remote-write client whose idle connections are closed
// at the end of the test (goleak).
func newClient(t testing.TB, url, encoding string) *remotewrite.Client {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	c, err := remotewrite.NewClient(remotewrite.ClientOptions{URL: url, Encoding: encoding,
		HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// running is an Ingester running in the test process with its own registry.
type running struct {
	in   *Ingester
	reg  *prometheus.Registry
	stop func()
}

func startIngester(t testing.TB, js jetstream.JetStream, backend *remotewrite.Client, opts Options) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.JetStream, opts.Backend, opts.Registerer = js, backend, reg
	opts.Consumer.AckWait = testAckWait
	if opts.RetryMax == 0 {
		opts.RetryMax = time.Second
	}
	if opts.FetchMaxWait == 0 {
		opts.FetchMaxWait = 200 * time.Millisecond
	}
	in, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &running{in: in, reg: reg, stop: stop}
}

func (r *running) written() int { return int(value(r.in.m.samplesWritten)) }

// value sums the counters or gauges of c.
func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	sum := 0.0
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err == nil {
			sum += d.GetCounter().GetValue() + d.GetGauge().GetValue()
		}
	}
	return sum
}

// waitFor polls cond until it holds. The deadline only keeps a broken test
// from hanging; nothing asserts how long it took.
func waitFor(t testing.TB, what string, cond func() bool, state ...func() string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			for _, f := range state {
				what += "; " + f()
			}
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// batch is one wire batch as a relay would publish it.
type batch struct {
	store string
	class wire.Class
	seq   uint64
	wr    prompb.WriteRequest
}

func (b *batch) samples() int {
	n := 0
	for _, ts := range b.wr.Timeseries {
		n += len(ts.Samples)
	}
	return n
}

func (b *batch) frame(t testing.TB) []byte {
	t.Helper()
	h := wire.Header{Codec: wire.CodecZstd, Class: b.class, Store: b.store, Relay: "relay-" + b.store, Seq: b.seq,
		FirstRecord: b.seq, LastRecord: b.seq}
	f, err := wire.AppendBatch(nil, &h, &b.wr)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// publish publishes frame as the relay would: to telemetry.<store>.<class>
// with Nats-Msg-Id <store>.<class>.<seq>.
func publish(t testing.TB, js jetstream.JetStream, subjectStore string, class wire.Class, seq uint64, frame []byte) {
	t.Helper()
	msg := nats.NewMsg(stream.Subject(subjectStore, class.String()))
	msg.Data = frame
	msg.Header.Set(jetstream.MsgIDHeader, stream.MsgID(subjectStore, class.String(), seq))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("publish %s seq %d: %v", msg.Subject, seq, err)
	}
}

// classOf classifies a fleetsim series as a relay's default rules would:
// payment and auth containers are critical, device series normal, the rest bulk.
func classOf(ts *prompb.TimeSeries) wire.Class {
	for _, l := range ts.Labels {
		if l.Name == "container" {
			if strings.HasPrefix(l.Value, "payment") || strings.HasPrefix(l.Value, "auth") || l.Value == "card-terminal" {
				return wire.ClassCritical
			}
			return wire.ClassBulk
		}
	}
	return wire.ClassNormal
}

// fleet builds the batches of stores stores with tills tills each over
// scrapes 15 s scrapes starting at start: one batch per store, class and scrape.
func fleet(stores, tills, scrapes int, start time.Time, metric string) []batch {
	var out []batch
	for s := range stores {
		store := fmt.Sprintf("%s-store-%03d", metric, s)
		ts := make([]*fleetsim.Till, tills)
		for d := range tills {
			ts[d] = fleetsim.NewTill(store, fmt.Sprintf("till-%02d", d), int64(s*1000+d))
			ts[d].RestartProbability = 0
		}
		var seq [4]uint64
		for k := range scrapes {
			ms := start.Add(time.Duration(k) * 15 * time.Second).UnixMilli()
			var by [4][]prompb.TimeSeries
			for _, till := range ts {
				for _, series := range till.AppendSeries(nil, ms) {
					c := classOf(&series)
					by[c] = append(by[c], series)
				}
			}
			for _, c := range wire.Classes {
				seq[c]++
				out = append(out, batch{store: store, class: c, seq: seq[c], wr: prompb.WriteRequest{Timeseries: by[c]}})
			}
		}
	}
	return out
}

type sample struct {
	t int64
	v float64
}

// expected indexes the samples of bs by series key (testenv.LabelsKey).
func expected(bs []batch) (map[string][]sample, int) {
	want := map[string][]sample{}
	n := 0
	for _, b := range bs {
		for _, ts := range b.wr.Timeseries {
			m := map[string]string{}
			for _, l := range ts.Labels {
				m[l.Name] = l.Value
			}
			k := testenv.LabelsKey(m)
			for _, s := range ts.Samples {
				want[k] = append(want[k], sample{s.Timestamp, s.Value})
				n++
			}
		}
	}
	for k := range want {
		slices.SortFunc(want[k], func(a, b sample) int { return int(a.t - b.t) })
	}
	return want, n
}

// compareExport checks that the backend holds exactly want: every series,
// every sample once, nothing else. VictoriaMetrics stores values as decimals,
// so values compare to a relative 1e-10 (its decimal conversion keeps about
// 11 significant digits); timestamps and counts compare exactly.
func compareExport(t testing.TB, got []testenv.Series, want map[string][]sample) {
	t.Helper()
	// The export may return one series on several lines.
	merged := map[string][]sample{}
	for _, s := range got {
		k := s.Key()
		for i := range s.Timestamps {
			merged[k] = append(merged[k], sample{s.Timestamps[i], s.Values[i]})
		}
	}
	seen := map[string]bool{}
	bad := 0
	for k, g := range merged {
		seen[k] = true
		w, ok := want[k]
		if !ok {
			t.Errorf("unexpected series %s", k)
			bad++
			continue
		}
		slices.SortFunc(g, func(a, b sample) int { return int(a.t - b.t) })
		if len(g) != len(w) {
			t.Errorf("series %s: %d samples, want %d", k, len(g), len(w))
			bad++
			continue
		}
		for i := range g {
			if g[i].t != w[i].t || !closeEnough(g[i].v, w[i].v) {
				t.Errorf("series %s sample %d: (%d, %v), want (%d, %v)", k, i, g[i].t, g[i].v, w[i].t, w[i].v)
				bad++
				break
			}
		}
		if bad > 10 {
			t.Fatal("too many differences")
		}
	}
	for k := range want {
		if !seen[k] {
			t.Errorf("series %s missing", k)
			if bad++; bad > 10 {
				t.Fatal("too many differences")
			}
		}
	}
}

func closeEnough(a, b float64) bool {
	if a == b {
		return true
	}
	return math.Abs(a-b) <= 1e-10*math.Max(math.Abs(a), math.Abs(b))
}

// deadLetters reads every message of the dead-letter stream.
func deadLetters(t testing.TB, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream.DeadLetterName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, raw)
	}
	return out
}

// sink is a counting remote-write backend: it decodes every request and
// counts its samples. reject, when set, picks the status for a request
// (0 means accept).
type sink struct {
	srv      *httptest.Server
	samples  atomic.Int64
	requests atomic.Int64
	reject   func(wr *prompb.WriteRequest) int
}

func startSink(t testing.TB, reject func(wr *prompb.WriteRequest) int) *sink {
	t.Helper()
	s := &sink{reject: reject}
	pool := sync.Pool{New: func() any { return new(sinkBufs) }}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := pool.Get().(*sinkBufs)
		defer pool.Put(b)
		var err error
		b.scratch, b.body, err = remotewrite.ReadBody(r, 64<<20, b.scratch[:0], b.body[:0])
		if err != nil {
			http.Error(w, err.Error(), remotewrite.StatusFor(err))
			return
		}
		wr, err := b.wru.UnmarshalProtobuf(b.body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.requests.Add(1)
		if s.reject != nil {
			if code := s.reject(wr); code != 0 {
				http.Error(w, "rejected", code)
				return
			}
		}
		n := 0
		for i := range wr.Timeseries {
			n += len(wr.Timeseries[i].Samples)
		}
		s.samples.Add(int64(n))
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

type sinkBufs struct {
	scratch, body []byte
	wru           prompb.WriteRequestUnmarshaler
}

func (s *sink) url() string { return s.srv.URL + "/api/v1/write" }

// countSamples counts the samples of a marshaled WriteRequest.
func countSamples(t testing.TB, raw []byte) int {
	var wru prompb.WriteRequestUnmarshaler
	wr, err := wru.UnmarshalProtobuf(raw)
	if err != nil {
		t.Errorf("unmarshal forwarded request: %v", err)
		return 0
	}
	n := 0
	for _, ts := range wr.Timeseries {
		n += len(ts.Samples)
	}
	return n
}

// exportAll exports match once VictoriaMetrics shows at least n samples for
// it (samples written just before may take a moment to become searchable).
func exportAll(t testing.TB, vm *testenv.VictoriaMetrics, match string, n int) []testenv.Series {
	t.Helper()
	var got []testenv.Series
	count := 0
	waitFor(t, "samples searchable in VictoriaMetrics", func() bool {
		var err error
		if got, err = vm.Export(context.Background(), match); err != nil {
			return false
		}
		count = 0
		for _, s := range got {
			count += len(s.Timestamps)
		}
		return count >= n
	}, func() string { return fmt.Sprintf("%d of %d samples", count, n) })
	return got
}
