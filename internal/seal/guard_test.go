package seal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/client_golang/prometheus"

	"tillpipe/internal/wire"
)

// TestRecover_ClassesApart: the inbox is shared, so after a crash each class
// resumes at its own position, whatever the inbox commit says. Records 0..9
// hold critical sample i and normal sample 100+i; critical sealed 0..7 (seq
// 3), normal 0..4 (seq 7), bulk nothing.
func TestRecover_ClassesApart(t *testing.T) {
	for _, tc := range []struct {
		name      string
		committed uint64
	}{
		{"inbox_never_committed", 0},
		{"inbox_committed_to_slowest_class", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := openEnv(t, t.TempDir())
			in := InboxQueue(e.inbox)
			for i := int64(0); i < 10; i++ {
				rec, n := multiRecord(map[wire.Class][]int64{wire.ClassCritical: {i}, wire.ClassNormal: {100 + i}}, "m")
				if _, err := in.Append(context.Background(), rec, n); err != nil {
					t.Fatal(err)
				}
			}
			sealed := func(c wire.Class, seq, last uint64, ts ...int64) {
				var wr prompb.WriteRequest
				for _, x := range ts {
					wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "m"}}, Samples: []prompb.Sample{{Value: float64(x), Timestamp: x}}})
				}
				h := wire.Header{Codec: wire.CodecZstd, Class: c, Store: "s1", Seq: seq, FirstRecord: 0, LastRecord: last}
				frame, err := wire.AppendBatch(nil, &h, &wr)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := Queue(e.outbox.Group, c).Append(context.Background(), frame, len(ts)); err != nil {
					t.Fatal(err)
				}
			}
			sealed(wire.ClassCritical, 3, 7, 0, 1, 2, 3, 4, 5, 6, 7)
			sealed(wire.ClassNormal, 7, 4, 100, 101, 102, 103, 104)
			if err := in.Commit(tc.committed); err != nil {
				t.Fatal(err)
			}
			s, err := New(filepath.Join(e.dir, "seal"), e.inbox, e.outbox, Options{Store: "s1"})
			if err != nil {
				t.Fatal(err)
			}
			for c, want := range map[wire.Class][2]uint64{wire.ClassCritical: {8, 3}, wire.ClassNormal: {5, 7}} {
				if pos, seq := s.Position(c); pos != want[0] || seq != want[1] {
					t.Errorf("%v resumes at record %d seq %d, want record %d seq %d", c, pos, seq, want[0], want[1])
				}
			}
			drain(t, s)
			for c, want := range map[wire.Class]string{wire.ClassCritical: "[8 9]", wire.ClassNormal: "[105 106 107 108 109]"} {
				hs, samples := frames(t, Queue(e.outbox.Group, c))
				if last := hs[len(hs)-1]; len(hs) != 2 || last.Seq != hs[0].Seq+1 || last.LastRecord != 9 {
					t.Errorf("%v: batches %+v, want the old one and seq+1 up to record 9", c, hs)
				}
				var got []int64
				for ts, n := range samples {
					if n != 1 {
						t.Errorf("%v sample %d sealed %d times", c, ts, n)
					}
				}
				b, err := wire.NewDecoder(wire.DecoderOptions{}).Decode(mustRead(t, Queue(e.outbox.Group, c), 1))
				if err != nil {
					t.Fatal(err)
				}
				for _, ts := range b.Request.Timeseries {
					got = append(got, ts.Samples[0].Timestamp)
				}
				if fmt.Sprint(got) != want {
					t.Errorf("%v sealed %v after the crash, want %s", c, got, want)
				}
			}
			if c := in.Committed(); c != 10 {
				t.Errorf("inbox committed at %d after the drain, want 10", c)
			}
		})
	}
}

func mustRead(t *testing.T, q interface {
	Read(uint64, []byte) ([]byte, uint64, error)
}, idx uint64) []byte {
	t.Helper()
	b, _, err := q.Read(idx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGuard_StateBeforeCapDrop: no state file is written while the outbox
// cannot drop, and when critical batches push the outbox over its cap and
// the outbox drops bulk's tail frame, bulk's state file already holds that
// frame's position: a restart resumes bulk after it, not at the inbox commit.
func TestGuard_StateBeforeCapDrop(t *testing.T) {
	dir := t.TempDir()
	in, err := OpenInbox(filepath.Join(dir, "inbox"), InboxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	openOut := func() *Outbox {
		out, err := OpenOutbox(filepath.Join(dir, "outbox"), OutboxOptions{MaxBytes: 1 << 20, SegmentBytes: 64 << 10, MaxRecordBytes: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	out := openOut()
	defer func() { out.Close() }()
	opts := Options{Store: "s1", Critical: Limits{MaxBytes: 32 << 10}}
	stateFile := filepath.Join(dir, "seal", "bulk.state")

	// Run 1: bulk seals records 0..4; far under the cap, nothing else.
	appendRecords(t, InboxQueue(in), wire.ClassBulk, 0, 5)
	s, err := New(filepath.Join(dir, "seal"), in, out, opts)
	if err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	_, bulkSeq := s.Position(wire.ClassBulk)
	if _, err := os.Stat(stateFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("bulk state file written while nothing could be dropped: %v", err)
	}

	// Run 2: 4 MiB of random hex (2 MiB compressed) critical data through a
	// 1 MiB outbox.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 128 {
		var wr prompb.WriteRequest
		for range 32 {
			v := ""
			for range 16 {
				v += fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64())
			}
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{Labels: []prompb.Label{{Name: "id", Value: v}}, Samples: []prompb.Sample{{Value: 1, Timestamp: int64(1000 + i)}}})
		}
		body := wr.MarshalProtobuf(nil)
		var h RecordHeader
		*h.Section(wire.ClassCritical) = RecordSection{Series: 32, Samples: 32, MinTime: int64(1000 + i), MaxTime: int64(1000 + i), Len: uint32(len(body))}
		rec := AppendRecord(nil, &h, body)
		if _, err := InboxQueue(in).Append(context.Background(), rec, 32); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	opts2 := opts
	opts2.Registerer = reg
	s, err = New(filepath.Join(dir, "seal"), in, out, opts2)
	if err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	if _, _, err := Queue(out.Group, wire.ClassBulk).Read(0, nil); !errors.Is(err, io.EOF) {
		t.Fatalf("bulk's tail frame is still in the outbox (%v): the test did not reach the cap", err)
	}
	if n := counterValue(t, reg, "seal_state_writes_total", map[string]string{"class": "bulk"}); n == 0 {
		t.Fatal("no bulk state write before the drop")
	}

	// Run 3: bulk resumes after record 4 with its seq, from the state file;
	// the inbox commit alone would not say (bulk's records are past it only
	// because every class passed them).
	out.Close()
	out = openOut()
	s, err = New(filepath.Join(dir, "seal"), in, out, opts)
	if err != nil {
		t.Fatal(err)
	}
	st, ok, err := readState(stateFile)
	if err != nil || !ok || st.Seq != bulkSeq || st.LastRecord != 4 {
		t.Fatalf("bulk state %+v (%v, %v), want seq %d last record 4", st, ok, err, bulkSeq)
	}
	if _, seq := s.Position(wire.ClassBulk); seq != bulkSeq {
		t.Errorf("bulk resumes at seq %d, want %d", seq+1, bulkSeq+1)
	}
	drain(t, s)
}
