package uplink

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"tillpipe/internal/buffer"
	"tillpipe/internal/stream"
	"tillpipe/internal/testenv"
	"tillpipe/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testStore = "s1"

// harness is one relay's uplink against a real nats-server.
type harness struct {
	t      testing.TB
	nats   *testenv.NATS
	outbox *buffer.Group
	reg    *prometheus.Registry
	u      *Uplink
	mu     sync.Mutex          // guards seq and frames: a test hook appends from Run
	seq    map[string]uint64   // next seq per class
	frames map[string][]byte   // msg id -> frame appended
	admin  jetstream.JetStream // central's view
	stop   func() error        // cancels Run and returns its error
}

func openOutbox(t testing.TB) *buffer.Group {
	t.Helper()
	g, err := buffer.OpenGroup(t.TempDir(), []string{"critical", "normal", "bulk"},
		buffer.GroupOptions{Queue: buffer.Options{Sync: buffer.SyncInterval}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

// dial connects like the relay does; the connection closes when t ends.
func dial(t testing.TB, url, creds string) *nats.Conn {
	t.Helper()
	nc, err := Dial(context.Background(), url, creds, testStore, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// adminJS is central's connection (full rights): it plays the ingester.
func adminJS(t testing.TB, url string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func ensure(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := stream.Ensure(ctx, js, stream.Config{}); err != nil {
		t.Fatal(err)
	}
}

func newHarness(t testing.TB, n *testenv.NATS, nc *nats.Conn, admin jetstream.JetStream, o Options) *harness {
	t.Helper()
	h := &harness{t: t, nats: n, outbox: openOutbox(t), reg: prometheus.NewRegistry(),
		seq: map[string]uint64{}, frames: map[string][]byte{}, admin: admin}
	o.Store, o.Conn, o.Outbox, o.Registerer = testStore, nc, h.outbox, h.reg
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	u, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	h.u = u
	return h
}

// run starts Run; it is stopped (and must return nil) when t ends.
func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- h.u.Run(ctx) }()
	var err error
	stopped := false
	h.stop = func() error {
		if !stopped {
			cancel()
			err = <-errc
			stopped = true
		}
		return err
	}
	h.t.Cleanup(func() {
		if err := h.stop(); err != nil {
			h.t.Errorf("Run returned %v", err)
		}
	})
}

// frame builds a sealed batch of class with a payload of about size bytes
// (0: a small remote-write request) and the next seq of its class.
func (h *harness) frame(class wire.Class, size int) (id string, f []byte) {
	h.t.Helper()
	seq := h.seq[class.String()]
	h.seq[class.String()] = seq + 1
	hdr := wire.Header{Codec: wire.CodecNone, Class: class, Store: testStore, Relay: "r1", Seq: seq, FirstRecord: seq, LastRecord: seq}
	var err error
	if size == 0 {
		wr := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
			Labels:  []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "store", Value: testStore}},
			Samples: []prompb.Sample{{Value: 1, Timestamp: int64(seq) * 15000}, {Value: 1, Timestamp: int64(seq)*15000 + 1}},
		}}}
		f, err = wire.AppendBatch(nil, &hdr, wr)
	} else {
		raw := make([]byte, size)
		_, _ = rand.Read(raw)
		hdr.Payload = wire.PayloadRemoteWriteV1
		f, err = wire.AppendFrame(nil, &hdr, raw)
	}
	if err != nil {
		h.t.Error(err)
	}
	return stream.MsgID(testStore, class.String(), seq), f
}

// add appends n batches of class to the outbox and returns their ids.
func (h *harness) add(class wire.Class, n, size int) []string {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []string
	for range n {
		id, f := h.frame(class, size)
		if _, err := h.outbox.Queue(class.String()).Append(context.Background(), f, 2); err != nil {
			h.t.Error(err)
			return ids
		}
		h.frames[id] = f
		ids = append(ids, id)
	}
	return ids
}

// streamMsgs returns every message on the telemetry stream in stream order.
func (h *harness) streamMsgs() []*jetstream.RawStreamMsg {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := h.admin.Stream(ctx, stream.Name)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			h.t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// streamState is the telemetry stream's message and byte count, zero while
// central cannot say (an outage, no stream yet).
func (h *harness) streamState() (msgs, bytes uint64) {
	st, _ := h.streamInfo()
	return st.Msgs, st.Bytes
}

// mustStreamBytes is the stream's byte count for a measurement, which must
// not mistake a failed query for zero.
func (h *harness) mustStreamBytes() uint64 {
	h.t.Helper()
	st, err := h.streamInfo()
	if err != nil {
		h.t.Fatalf("stream info: %v", err)
	}
	return st.Bytes
}

func (h *harness) streamInfo() (jetstream.StreamState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := h.admin.Stream(ctx, stream.Name)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	return info.State, nil
}

func (h *harness) errorsOf(reason string) float64 {
	return counterValue(h.u.m.errors.WithLabelValues(reason))
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// committedToEnd reports whether every queue is committed to its tail.
func (h *harness) committedToEnd() bool {
	for _, c := range wire.Classes {
		q := h.outbox.Queue(c.String())
		if q.Committed() != q.NextIndex() {
			return false
		}
	}
	return true
}

// waitUntil polls cond until it holds; the limit only bounds a broken test.
func waitUntil(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("gave up waiting for %s", what)
		case <-tick.C:
		}
	}
}

// pause lets the system run for d (the window of a measurement or an
// upper-bound check, never an assertion on how long something took).
func pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}

// testWriter sends log lines to the test's log (shown on failure or -v).
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func msgID(m *jetstream.RawStreamMsg) string { return m.Header.Get(jetstream.MsgIDHeader) }
