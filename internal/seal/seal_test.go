package seal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"tillpipe/internal/buffer"
	"tillpipe/internal/fleetsim"
	"tillpipe/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type env struct {
	dir    string
	inbox  *buffer.Group
	outbox *Outbox
}

func openEnv(t *testing.T, dir string) *env {
	t.Helper()
	in, err := OpenInbox(filepath.Join(dir, "inbox"), InboxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := OpenOutbox(filepath.Join(dir, "outbox"), OutboxOptions{})
	if err != nil {
		in.Close()
		t.Fatal(err)
	}
	e := &env{dir: dir, inbox: in, outbox: out}
	t.Cleanup(e.close)
	return e
}

func (e *env) close() {
	e.inbox.Close()
	e.outbox.Close()
}

// record builds an inbox record of one series per timestamp, one sample
// each, all in class c.
func record(c wire.Class, name string, ts ...int64) ([]byte, int) {
	return multiRecord(map[wire.Class][]int64{c: ts}, name)
}

// multiRecord builds an inbox record with, per class, one series per
// timestamp, one sample each.
func multiRecord(byClass map[wire.Class][]int64, name string) ([]byte, int) {
	var bodies []byte
	var h RecordHeader
	n := 0
	for _, c := range wire.Classes {
		ts := byClass[c]
		if len(ts) == 0 {
			continue
		}
		wr := prompb.WriteRequest{}
		for _, t := range ts {
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: name}},
				Samples: []prompb.Sample{{Value: float64(t), Timestamp: t}},
			})
		}
		start := len(bodies)
		bodies = wr.MarshalProtobuf(bodies)
		*h.Section(c) = RecordSection{Series: uint32(len(ts)), Samples: uint32(len(ts)), MinTime: slices.Min(ts), MaxTime: slices.Max(ts), Len: uint32(len(bodies) - start)}
		n += len(ts)
	}
	return AppendRecord(nil, &h, bodies), n
}

// appendRecords appends records of one sample each, at from..to-1, in class c.
func appendRecords(t *testing.T, q *buffer.Queue, c wire.Class, from, to int64) {
	t.Helper()
	for i := from; i < to; i++ {
		rec, n := record(c, "m", i)
		if _, err := q.Append(context.Background(), rec, n); err != nil {
			t.Fatal(err)
		}
	}
}

// frames decodes every frame in q from index 0.
func frames(t *testing.T, q *buffer.Queue) (hs []wire.Header, samples map[int64]int) {
	t.Helper()
	samples = map[int64]int{}
	dec := wire.NewDecoder(wire.DecoderOptions{})
	for idx := uint64(0); ; {
		f, next, err := q.Read(idx, nil)
		if errors.Is(err, io.EOF) {
			return hs, samples
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := dec.Decode(f)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, b.Header)
		for _, ts := range b.Request.Timeseries {
			for _, s := range ts.Samples {
				samples[s.Timestamp]++
			}
		}
		idx = next
	}
}

// drain runs the stage with an ended context: it seals everything and returns.
func drain(t *testing.T, s *Stage) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestSealByteLimitAndDrain(t *testing.T) {
	e := openEnv(t, t.TempDir())
	appendRecords(t, InboxQueue(e.inbox), wire.ClassNormal, 1, 101)
	rec, _ := record(wire.ClassNormal, "m", 1)
	s, err := New(filepath.Join(e.dir, "seal"), e.inbox, e.outbox, Options{Store: "s1", Relay: "r1",
		Normal: Limits{MaxBytes: 10 * (len(rec) - RecordHeaderLen), MaxAge: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	hs, samples := frames(t, Queue(e.outbox.Group, wire.ClassNormal))
	if len(hs) != 10 {
		t.Fatalf("%d batches, want 10 of 10 records", len(hs))
	}
	next := uint64(0)
	for i, h := range hs {
		if h.FirstRecord != next || h.Samples != 10 || h.Store != "s1" || h.Relay != "r1" || h.Class != wire.ClassNormal || h.Codec != wire.CodecZstd {
			t.Errorf("batch %d: %+v", i, h)
		}
		if i > 0 && h.Seq != hs[i-1].Seq+1 {
			t.Errorf("batch %d seq %d after %d", i, h.Seq, hs[i-1].Seq)
		}
		next = h.LastRecord + 1
	}
	for ts := int64(1); ts <= 100; ts++ {
		if samples[ts] != 1 {
			t.Errorf("sample %d sealed %d times", ts, samples[ts])
		}
	}
	if c := InboxQueue(e.inbox).Committed(); c != 100 {
		t.Errorf("inbox committed %d, want 100", c)
	}
}

func TestSealAgeLimit(t *testing.T) {
	e := openEnv(t, t.TempDir())
	s, err := New(filepath.Join(e.dir, "seal"), e.inbox, e.outbox, Options{Store: "s1",
		Critical: Limits{MaxAge: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	appendRecords(t, InboxQueue(e.inbox), wire.ClassCritical, 1, 2)
	// The batch is far under its byte limit: only its age can seal it, and
	// the stage is still running.
	if err := Queue(e.outbox.Group, wire.ClassCritical).Wait(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestRecover covers every point a crash can interrupt a seal at. Records
// 0..9 hold samples 0..9; a batch of records 0..4 was sealed as seq 7.
func TestRecover(t *testing.T) {
	const seq = 7
	sealed := func(t *testing.T, e *env) {
		rec := []byte(nil)
		wr := prompb.WriteRequest{}
		for i := int64(0); i < 5; i++ {
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "m"}}, Samples: []prompb.Sample{{Value: float64(i), Timestamp: i}}})
		}
		h := wire.Header{Codec: wire.CodecZstd, Class: wire.ClassNormal, Store: "s1", Seq: seq, FirstRecord: 0, LastRecord: 4}
		rec, err := wire.AppendBatch(rec, &h, &wr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Queue(e.outbox.Group, wire.ClassNormal).Append(context.Background(), rec, 5); err != nil {
			t.Fatal(err)
		}
	}
	state := func(seq, last uint64) func(*testing.T, *env) {
		return func(t *testing.T, e *env) {
			if err := os.MkdirAll(filepath.Join(e.dir, "seal"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := writeState(statePath(filepath.Join(e.dir, "seal"), "normal"), sealState{Seq: seq, LastRecord: last}); err != nil {
				t.Fatal(err)
			}
		}
	}
	commitInbox := func(t *testing.T, e *env) {
		if err := InboxQueue(e.inbox).Commit(5); err != nil {
			t.Fatal(err)
		}
	}
	sentAndDropped := func(t *testing.T, e *env) {
		// The uplink sent it and the outbox dropped the segment: the tail is gone.
		q := Queue(e.outbox.Group, wire.ClassNormal)
		if err := q.Commit(q.NextIndex()); err != nil {
			t.Fatal(err)
		}
		e.outbox.Close()
		out, err := OpenOutbox(filepath.Join(e.dir, "outbox"), OutboxOptions{MaxBytes: 64 << 20, MaxRecordBytes: 1 << 20, SegmentBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		e.outbox = out
		// A large critical append makes the group drop normal's only segment.
		h := wire.Header{Codec: wire.CodecNone, Payload: wire.PayloadRemoteWriteV1, Class: wire.ClassCritical, Store: "s1"}
		big, err := wire.AppendFrame(nil, &h, make([]byte, 1<<20-200))
		if err != nil {
			t.Fatal(err)
		}
		for range 70 {
			if _, err := Queue(out.Group, wire.ClassCritical).Append(context.Background(), big, 0); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := q.Read(0, nil); !errors.Is(err, io.EOF) && !errors.Is(err, buffer.ErrClosed) {
			if _, _, err := Queue(out.Group, wire.ClassNormal).Read(0, nil); !errors.Is(err, io.EOF) {
				t.Fatalf("normal outbox still holds the batch: %v", err)
			}
		}
	}
	for _, tc := range []struct {
		name    string
		steps   []func(*testing.T, *env)
		wantPos uint64
		wantSeq uint64
		// wantSealed: samples the recovered stage must seal (the rest were sealed before the crash).
		wantSealed []int64
	}{
		{"crash_before_outbox_append", nil, 0, 0, []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"crash_after_outbox_append", []func(*testing.T, *env){sealed}, 5, seq, []int64{5, 6, 7, 8, 9}},
		{"crash_after_state_write", []func(*testing.T, *env){sealed, state(seq, 4)}, 5, seq, []int64{5, 6, 7, 8, 9}},
		{"crash_after_inbox_commit", []func(*testing.T, *env){sealed, state(seq, 4), commitInbox}, 5, seq, []int64{5, 6, 7, 8, 9}},
		{"state_write_lost_outbox_ahead", []func(*testing.T, *env){sealed, state(seq-1, 2)}, 5, seq, []int64{5, 6, 7, 8, 9}},
		{"outbox_tail_sent_and_dropped", []func(*testing.T, *env){sealed, state(seq, 4), sentAndDropped}, 5, seq, []int64{5, 6, 7, 8, 9}},
		{"inbox_lost_behind_state", []func(*testing.T, *env){state(seq, 40)}, 0, seq, []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := openEnv(t, t.TempDir())
			appendRecords(t, InboxQueue(e.inbox), wire.ClassNormal, 0, 10)
			for _, step := range tc.steps {
				step(t, e)
			}
			before := Queue(e.outbox.Group, wire.ClassNormal).NextIndex()
			now := time.Unix(1_700_000_000, 0)
			s, err := New(filepath.Join(e.dir, "seal"), e.inbox, e.outbox, Options{Store: "s1", Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			pos, gotSeq := s.Position(wire.ClassNormal)
			if tc.wantSeq == 0 {
				tc.wantSeq = uint64(now.UnixMicro())
			}
			if pos != tc.wantPos || gotSeq != tc.wantSeq {
				t.Fatalf("resumes at record %d seq %d, want record %d seq %d", pos, gotSeq, tc.wantPos, tc.wantSeq)
			}
			drain(t, s)
			q := Queue(e.outbox.Group, wire.ClassNormal)
			f, _, err := q.Read(before, nil)
			if err != nil {
				t.Fatal(err)
			}
			dec := wire.NewDecoder(wire.DecoderOptions{})
			b, err := dec.Decode(f)
			if err != nil {
				t.Fatal(err)
			}
			if b.Header.Seq != tc.wantSeq+1 || b.Header.FirstRecord != tc.wantPos || b.Header.LastRecord != 9 {
				t.Errorf("new batch seq %d records %d..%d, want seq %d records %d..9", b.Header.Seq, b.Header.FirstRecord, b.Header.LastRecord, tc.wantSeq+1, tc.wantPos)
			}
			var got []int64
			for _, ts := range b.Request.Timeseries {
				got = append(got, ts.Samples[0].Timestamp)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantSealed) {
				t.Errorf("sealed samples %v, want %v", got, tc.wantSealed)
			}
		})
	}
}

func TestOutboxDropsBulkFirst(t *testing.T) {
	reg := prometheus.NewRegistry()
	out, err := OpenOutbox(t.TempDir(), OutboxOptions{MaxBytes: 8 << 20, SegmentBytes: 1 << 20, MaxRecordBytes: 1 << 20, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	rec := make([]byte, 256<<10)
	appendN := func(c wire.Class, n int) {
		for range n {
			if _, err := Queue(out.Group, c).Append(context.Background(), rec, 100); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(wire.ClassBulk, 8)     // 2 MiB
	appendN(wire.ClassNormal, 8)   // 2 MiB
	appendN(wire.ClassCritical, 8) // 2 MiB
	appendN(wire.ClassCritical, 12)
	got := func(c, reason string) float64 {
		return counterValue(t, reg, "samples_dropped_total", map[string]string{"class": c, "reason": reason})
	}
	if got("bulk", "cap") == 0 {
		t.Errorf("no bulk dropped over the cap")
	}
	if got("critical", "cap") != 0 {
		t.Errorf("critical dropped (%v) before bulk and normal were empty", got("critical", "cap"))
	}
	if n, b := got("normal", "cap"), got("bulk", "cap"); n > 0 && b != 800 {
		t.Errorf("normal dropped (%v) while bulk still held data (dropped %v of 800)", n, b)
	}
	st := out.Stats()
	for _, c := range []string{"critical", "normal", "bulk"} {
		if lost := float64(800) - float64(st[c].PendingSamples); c != "critical" && lost != got(c, "cap") {
			t.Errorf("%s: %v samples missing, %v counted dropped", c, lost, got(c, "cap"))
		}
	}
}

// counterValue reads one counter from g; the test fails if it is missing.
func counterValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

func BenchmarkSeal(b *testing.B) {
	for _, tills := range []int{1, 20} {
		b.Run(fmt.Sprintf("tills=%d", tills), func(b *testing.B) {
			dir := b.TempDir()
			in, _ := OpenInbox(filepath.Join(dir, "in"), InboxOptions{})
			out, _ := OpenOutbox(filepath.Join(dir, "out"), OutboxOptions{})
			defer in.Close()
			defer out.Close()
			var raws [][]byte
			for i := range tills {
				till := fleetsim.NewTill("s1", fmt.Sprintf("till-%d", i), int64(i))
				wr := prompb.WriteRequest{Timeseries: till.AppendSeries(nil, 1_700_000_000_000)}
				raws = append(raws, wr.MarshalProtobuf(nil))
			}
			s, err := New(filepath.Join(dir, "seal"), in, out, Options{Store: "s1"})
			if err != nil {
				b.Fatal(err)
			}
			cs := s.classes[wire.ClassNormal-1]
			samples, bytes := 0, 0
			b.ReportAllocs()
			for b.Loop() {
				for _, raw := range raws {
					if cs.records == 0 {
						cs.raw = cs.raw[:0]
					}
					cs.raw = append(cs.raw, raw...)
					cs.records++
					cs.series += 400
					cs.samples += 400
				}
				samples += int(cs.samples)
				if err := cs.trySeal(context.Background()); err != nil {
					b.Fatal(err)
				}
				bytes += len(cs.frame)
			}
			b.ReportMetric(float64(samples)/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(bytes)/float64(samples), "bytes/sample")
		})
	}
}
