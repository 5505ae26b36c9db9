package ingester

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tillpipe/internal/stream"
	"tillpipe/internal/testenv"
	"tillpipe/internal/wire"
)

func TestSetup_ConcurrentReplicas(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 5 { // five replicas starting at once
		wg.Go(func() {
			nc, err := nats.Connect(n.URL())
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			errs <- Setup(ctx, js, SetupOptions{})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Setup: %v", err)
		}
	}
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for _, c := range wire.Classes {
		cons, err := js.Consumer(ctx, stream.Name, ConsumerName(c))
		if err != nil {
			t.Fatalf("consumer %s: %v", ConsumerName(c), err)
		}
		cfg := cons.CachedInfo().Config
		if cfg.AckPolicy != jetstream.AckExplicitPolicy || cfg.FilterSubject != "telemetry.*."+c.String() ||
			cfg.AckWait != DefaultAckWait || cfg.MaxDeliver != DefaultMaxDeliver || cfg.MaxAckPending != DefaultMaxAckPending ||
			len(cfg.BackOff) == 0 || cfg.BackOff[0] != DefaultAckWait {
			t.Errorf("consumer %s config = %+v", ConsumerName(c), cfg)
		}
	}
	// A changed option updates the existing consumers.
	if err := Setup(ctx, js, SetupOptions{Consumer: ConsumerOptions{MaxAckPending: 3000}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, stream.Name, ConsumerName(wire.ClassBulk))
	if err != nil {
		t.Fatal(err)
	}
	if got := cons.CachedInfo().Config.MaxAckPending; got != 3000 {
		t.Errorf("MaxAckPending after update = %d, want 3000", got)
	}
	if _, err := js.KeyValue(ctx, stream.ConfigBucket); err != nil {
		t.Errorf("config bucket: %v", err)
	}
}

// TestIngest_VictoriaMetricsExact publishes fleet batches as relays would
// (each twice, as after a lost PubAck) and reads them back from
// VictoriaMetrics' export API: every sample exactly once.
func TestIngest_VictoriaMetricsExact(t *testing.T) {
	env := startJetStream(t)
	vm := testenv.StartVictoriaMetrics(t)
	bs := fleet(3, 3, 8, time.Now().Add(-time.Hour).Truncate(time.Second), "exact")
	want, n := expected(bs)
	r := startIngester(t, env.js, newClient(t, vm.WriteURL(), "zstd"), Options{BatchMaxSamples: 2500})
	for pass := range 2 {
		for i := range bs {
			publish(t, env.js, bs[i].store, bs[i].class, bs[i].seq, bs[i].frame(t))
		}
		if pass == 0 {
			waitFor(t, "all samples written", func() bool { return r.written() >= n })
		}
	}
	ctx := context.Background()
	s, err := env.js.Stream(ctx, stream.Name)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	if info.State.Msgs != uint64(len(bs)) {
		t.Errorf("stream holds %d messages after publishing %d batches twice, want %d", info.State.Msgs, len(bs), len(bs))
	}
	// Every consumer has acked everything.
	for _, c := range wire.Classes {
		cons, _ := env.js.Consumer(ctx, stream.Name, ConsumerName(c))
		waitFor(t, "acks of "+c.String(), func() bool {
			ci, err := cons.Info(ctx)
			return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
		})
	}
	r.stop()
	if got := r.written(); got != n {
		t.Errorf("samples_written_total = %d, want %d", got, n)
	}
	if got := int(value(r.in.m.batches)); got != len(bs) {
		t.Errorf("batches_total = %d, want %d", got, len(bs))
	}
	if v := r.in.m.lag(wire.ClassBulk, time.Now()); v < 30*60 {
		t.Errorf("bulk lag = %gs, want about an hour", v)
	}
	compareExport(t, exportAll(t, vm, `{store=~"exact-.*"}`, n), want)
}

// TestIngest_TwoReplicas runs two ingesters on the same consumers: the load
// is shared and no sample is written twice.
func TestIngest_TwoReplicas(t *testing.T) {
	env := startJetStream(t)
	vm := testenv.StartVictoriaMetrics(t)
	bs := fleet(4, 3, 10, time.Now().Add(-2*time.Hour).Truncate(time.Second), "replicas")
	want, n := expected(bs)
	a := startIngester(t, env.js, newClient(t, vm.WriteURL(), "zstd"), Options{BatchMaxSamples: 2000})
	b := startIngester(t, env.js, newClient(t, vm.WriteURL(), "snappy"), Options{BatchMaxSamples: 2000})
	for i := range bs {
		publish(t, env.js, bs[i].store, bs[i].class, bs[i].seq, bs[i].frame(t))
	}
	waitFor(t, "all samples written", func() bool { return a.written()+b.written() >= n })
	a.stop()
	b.stop()
	if a.written() == 0 || b.written() == 0 {
		t.Errorf("load not shared: replica a wrote %d samples, b %d", a.written(), b.written())
	}
	if got := a.written() + b.written(); got != n {
		t.Errorf("replicas wrote %d samples together, want %d", got, n)
	}
	t.Logf("replica a wrote %d samples, b %d", a.written(), b.written())
	compareExport(t, exportAll(t, vm, `{store=~"replicas-.*"}`, n), want)
}

// TestIngest_Poison publishes, between good batches, batches that fail
// verification: each lands in the dead-letter stream with its reason and
// the good ones are written.
func TestIngest_Poison(t *testing.T) {
	env := startJetStream(t)
	vm := testenv.StartVictoriaMetrics(t)
	start := time.Now().Add(-30 * time.Minute).Truncate(time.Second)
	goodOf := func(store string, seq uint64) batch {
		b := fleet(1, 1, 1, start.Add(time.Duration(seq)*time.Minute), store)[1] // the normal-class batch
		b.store, b.seq = store, seq
		for i := range b.wr.Timeseries {
			ls := append([]prompb.Label(nil), b.wr.Timeseries[i].Labels...)
			for j := range ls {
				if ls[j].Name == "store" {
					ls[j].Value = store
				}
			}
			b.wr.Timeseries[i].Labels = ls
		}
		return b
	}
	huge := func() prompb.WriteRequest { // incompressible, over the 256 KiB frame limit below
		var wr prompb.WriteRequest
		for range 5000 {
			buf := make([]byte, 64)
			_, _ = rand.Read(buf)
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: "junk"}, {Name: "x", Value: hex.EncodeToString(buf)}},
				Samples: []prompb.Sample{{Value: 1, Timestamp: start.UnixMilli()}}})
		}
		return wr
	}
	cases := []struct {
		name   string
		reason string
		// poison returns the subject store and frame of the bad batch, made from a good one.
		poison func(good batch, frame []byte) (string, []byte)
	}{
		{"bad_checksum", ReasonChecksum, func(g batch, f []byte) (string, []byte) {
			f[len(f)-1] ^= 0xff
			return g.store, f
		}},
		{"unknown_version", ReasonVersion, func(g batch, f []byte) (string, []byte) {
			f[4] = 9
			return g.store, f
		}},
		{"store_mismatch", ReasonStoreMismatch, func(g batch, f []byte) (string, []byte) {
			return g.store + "-other", f
		}},
		{"class_mismatch", ReasonClassMismatch, func(g batch, _ []byte) (string, []byte) {
			g.class = wire.ClassCritical
			return g.store, g.frame(t)
		}},
		{"truncated", ReasonTruncated, func(g batch, f []byte) (string, []byte) {
			return g.store, f[:len(f)-7]
		}},
		{"bad_magic", ReasonBadMagic, func(g batch, f []byte) (string, []byte) {
			return g.store, append([]byte("JUNK"), f[4:]...)
		}},
		{"too_large", ReasonTooLarge, func(g batch, _ []byte) (string, []byte) {
			g.wr = huge()
			return g.store, g.frame(t)
		}},
	}
	var good []batch
	for _, tc := range cases {
		store := "poison-" + tc.name
		for seq := uint64(1); seq <= 3; seq++ {
			g := goodOf(store, seq)
			if seq != 2 {
				good = append(good, g)
				publish(t, env.js, g.store, g.class, g.seq, g.frame(t))
				continue
			}
			subj, f := tc.poison(g, g.frame(t))
			publish(t, env.js, subj, wire.ClassNormal, g.seq, f)
		}
	}
	want, n := expected(good)
	r := startIngester(t, env.js, newClient(t, vm.WriteURL(), "zstd"), Options{
		BatchMaxSamples: 200, Decoder: wire.DecoderOptions{MaxFrameLen: 256 << 10}})
	waitFor(t, "good batches written and poison dead-lettered", func() bool {
		return r.written() >= n && int(value(r.in.m.deadLetter)) >= len(cases)
	}, func() string {
		return fmt.Sprintf("written %d of %d samples, %g dead letters, batches %g", r.written(), n, value(r.in.m.deadLetter), value(r.in.m.batches))
	})
	r.stop()

	dl := deadLetters(t, env.js)
	bySubject := map[string]string{}
	for _, m := range dl {
		bySubject[m.Subject] = m.Header.Get(stream.HeaderReason)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store := "poison-" + tc.name
			if tc.name == "store_mismatch" {
				store += "-other"
			}
			subj := stream.DeadLetterSubject(store, "normal")
			if got, ok := bySubject[subj]; !ok || got != tc.reason {
				t.Errorf("dead letter on %s: reason %q (present %v), want %q", subj, got, ok, tc.reason)
			}
			if got := value(r.in.m.deadLetter.WithLabelValues(tc.reason)); got != 1 {
				t.Errorf("deadletter_total{reason=%q} = %g, want 1", tc.reason, got)
			}
		})
	}
	if len(dl) != len(cases) {
		t.Errorf("dead-letter stream holds %d messages, want %d", len(dl), len(cases))
	}
	if got := r.written(); got != n {
		t.Errorf("samples_written_total = %d, want %d", got, n)
	}
	compareExport(t, exportAll(t, vm, `{store=~"poison-.*"}`, n), want)
}

// TestIngest_Backend4xx: a request the backend refuses with a 4xx is split,
// and only the batch refused on its own is dead-lettered.
func TestIngest_Backend4xx(t *testing.T) {
	env := startJetStream(t)
	refuses := func(wr *prompb.WriteRequest) int {
		for _, ts := range wr.Timeseries {
			for _, l := range ts.Labels {
				if l.Value == "refuse-me" {
					return http.StatusBadRequest
				}
			}
		}
		return 0
	}
	s := startSink(t, refuses)
	start := time.Now().Add(-time.Hour).UnixMilli()
	total := 0
	for seq := uint64(1); seq <= 5; seq++ {
		b := batch{store: "s4xx", class: wire.ClassBulk, seq: seq}
		for k := range 10 {
			v := "ok"
			if seq == 3 {
				v = "refuse-me"
			}
			b.wr.Timeseries = append(b.wr.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: "m"}, {Name: "v", Value: v}, {Name: "store", Value: "s4xx"}},
				Samples: []prompb.Sample{{Value: float64(k), Timestamp: start + int64(k)}}})
		}
		if seq != 3 {
			total += 10
		}
		publish(t, env.js, b.store, b.class, b.seq, b.frame(t))
	}
	r := startIngester(t, env.js, newClient(t, s.url(), "snappy"), Options{Classes: []wire.Class{wire.ClassBulk}})
	waitFor(t, "good batches written, refused one dead-lettered", func() bool {
		return r.written() >= total && value(r.in.m.deadLetter) >= 1
	})
	r.stop()
	if got := s.samples.Load(); got != int64(total) {
		t.Errorf("sink accepted %d samples, want %d", got, total)
	}
	if got := value(r.in.m.deadLetter.WithLabelValues(ReasonBackend4xx)); got != 1 {
		t.Errorf("deadletter_total{reason=backend_4xx} = %g, want 1", got)
	}
	dl := deadLetters(t, env.js)
	if len(dl) != 1 || dl[0].Subject != "deadletter.s4xx.bulk" || dl[0].Header.Get(stream.HeaderReason) != ReasonBackend4xx {
		t.Fatalf("dead letters = %+v, want one on deadletter.s4xx.bulk with reason backend_4xx", dl)
	}
}
