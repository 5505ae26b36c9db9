package intake

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"

	"tillpipe/internal/fleetsim"
	"tillpipe/internal/seal"
	"tillpipe/internal/wire"
)

// wantRecord is the inbox record of wr built the slow way: every series
// classified by the rules and encoded label by label with store s1.
func wantRecord(h *Handler, wr *prompb.WriteRequest) []byte {
	var rec record
	rec.reset()
	for _, c := range wire.Classes {
		sec := rec.hdr.Section(c)
		start := len(rec.buf)
		for i := range wr.Timeseries {
			ts := &wr.Timeseries[i]
			if h.rules.Classify(ts.Labels) == c {
				rec.appendSeries(sec, ts.Labels, ts.Samples, h.opts.Store)
			}
		}
		sec.Len = uint32(len(rec.buf) - start)
	}
	return rec.finish()
}

// lastRecord is the newest inbox record.
func lastRecord(t *testing.T, f *fixture) []byte {
	t.Helper()
	q := seal.InboxQueue(f.inbox)
	e, err := q.ReadEntry(q.NextIndex()-1, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e.Data
}

// postChecked posts body, wr as the client encoded it, and checks that the
// record equals the slow path's.
func postChecked(t *testing.T, f *fixture, step string, body []byte, wr *prompb.WriteRequest) {
	t.Helper()
	if code, msg, _ := f.post(t, snappy.Encode(nil, body), nil); code != 204 {
		t.Fatalf("%s: %d %s", step, code, msg)
	}
	if got, want := lastRecord(t, f), wantRecord(f.h, wr); !bytes.Equal(got, want) {
		t.Fatalf("%s: record differs from the slow path's\ngot  %q\nwant %q", step, got, want)
	}
}

func TestKnownSeries(t *testing.T) {
	type req []prompb.TimeSeries
	for _, tc := range []struct {
		name  string
		hMask uint64 // 0: all ones
		limit int
		reqs  []req
	}{
		{name: "labels_change_with_the_same_hash", hMask: 1, reqs: []req{
			{ser(1, "__name__", "up", "container", "payment-x", "device", "t1")},
			{ser(2, "__name__", "up", "container", "printer-x", "device", "t1")}, // same length: critical -> normal
			{ser(3, "__name__", "up", "container", "payment-x", "device", "t1")},
			{ser(4, "__name__", "up", "container", "printer-x", "device", "t1"), ser(4, "__name__", "up", "container", "payment-x", "device", "t1")},
		}},
		{name: "every_hash_collides", hMask: 1 << 63, reqs: []req{
			{ser(1, "__name__", "a", "device", "t1"), ser(1, "__name__", "node_disk_x", "device", "t1"), ser(1, "__name__", "c", "container", "auth-1", "device", "t1")},
			{ser(2, "__name__", "c", "container", "auth-1", "device", "t1"), ser(2, "__name__", "a", "device", "t1"), ser(2, "__name__", "node_disk_x", "device", "t1")},
			{ser(3, "__name__", "node_disk_x", "device", "t1"), ser(3, "__name__", "c", "container", "auth-1", "device", "t1")},
		}},
		{name: "client_store_overwritten_when_known", reqs: []req{
			{ser(1, "__name__", "a", "device", "t1", "store", "other"), ser(1, "__name__", "b", "store", "s1", "zone", "z"), ser(1, "store", "x", "__name__", "unsorted", "a", "b")},
			{ser(2, "__name__", "a", "device", "t1", "store", "other"), ser(2, "__name__", "b", "store", "s1", "zone", "z"), ser(2, "store", "x", "__name__", "unsorted", "a", "b")},
			{ser(3, "__name__", "a", "device", "t1"), ser(3, "__name__", "a", "device", "t1", "store", "yet-another")},
		}},
		{name: "store_inserted_in_name_order_when_known", reqs: []req{
			{ser(1, "__name__", "a", "device", "t1"), ser(1, "__name__", "a", "device", "t1", "zz", "1"), ser(1, "zz", "1", "__name__", "a")},
			{ser(2, "__name__", "a", "device", "t1"), ser(2, "__name__", "a", "device", "t1", "zz", "1"), ser(2, "zz", "1", "__name__", "a")},
		}},
		{name: "multi_sample_series_when_known", reqs: []req{
			{{Labels: ser(0, "__name__", "a", "device", "t1").Labels, Samples: []prompb.Sample{{Value: 1, Timestamp: 10}, {Value: 0, Timestamp: 0}, {Value: -2.5, Timestamp: 30}}}},
			{{Labels: ser(0, "__name__", "a", "device", "t1").Labels, Samples: []prompb.Sample{{Value: 3, Timestamp: 40}, {Value: 4, Timestamp: 50}}}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Options{MaxSeriesPerDevice: tc.limit})
			if tc.hMask != 0 {
				f.h.devices.hMask = tc.hMask
			}
			for i, r := range tc.reqs {
				wr := &prompb.WriteRequest{Timeseries: r}
				postChecked(t, f, fmt.Sprintf("request %d", i), wr.MarshalProtobuf(nil), wr)
			}
		})
	}
}

// TestKnownSeries_Random sends random requests drawn from a small pool of
// series, with a 2-bit raw hash so that most lookups collide, and checks
// every record against the slow path.
func TestKnownSeries_Random(t *testing.T) {
	f := newFixture(t, Options{})
	f.h.devices.hMask = 3
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"up", "node_disk_io", "x"}
	containers := []string{"", "payment", "auth-agent", "pos-ui"}
	stores := []string{"", "s1", "other"}
	for i := range 300 {
		wr := &prompb.WriteRequest{}
		for range 1 + rng.IntN(6) {
			kv := []string{"__name__", names[rng.IntN(len(names))]}
			if c := containers[rng.IntN(len(containers))]; c != "" {
				kv = append(kv, "container", c)
			}
			kv = append(kv, "device", fmt.Sprintf("t%d", rng.IntN(2)))
			if s := stores[rng.IntN(len(stores))]; s != "" {
				kv = append(kv, "store", s)
			}
			if rng.IntN(3) == 0 {
				kv = append(kv, "zone", "z")
			}
			wr.Timeseries = append(wr.Timeseries, ser(int64(i+1), kv...))
		}
		postChecked(t, f, fmt.Sprintf("request %d", i), wr.MarshalProtobuf(nil), wr)
	}
}

// TestKnownSeries_NotCanonical: label fields a client encodes otherwise
// than the relay (value before name, an explicit empty field, an unknown
// field, labels split by samples) are read right and never copied raw.
func TestKnownSeries_NotCanonical(t *testing.T) {
	str := func(b []byte, field int, s string) []byte {
		b = append(b, byte(field<<3|2))
		b = binary.AppendUvarint(b, uint64(len(s)))
		return append(b, s...)
	}
	msg := func(b []byte, field int, m []byte) []byte { return str(b, field, string(m)) }
	sample := msg(nil, 2, binary.AppendUvarint(append(binary.LittleEndian.AppendUint64([]byte{1<<3 | 1}, 0x3ff0000000000000), 2<<3), 5))
	label := func(parts ...[]byte) []byte { return msg(nil, 1, bytes.Join(parts, nil)) }
	name := str(nil, 1, "__name__")
	for _, tc := range []struct {
		name string
		ts   []byte // TimeSeries message
	}{
		{"value_before_name", bytes.Join([][]byte{label(str(nil, 2, "up"), name), label(str(nil, 1, "device"), str(nil, 2, "t1")), sample}, nil)},
		{"explicit_empty_value", bytes.Join([][]byte{label(name, str(nil, 2, "up")), label(str(nil, 1, "a"), str(nil, 2, "")), sample}, nil)},
		{"unknown_label_field", bytes.Join([][]byte{label(name, str(nil, 2, "up"), str(nil, 9, "?")), sample}, nil)},
		{"labels_split_by_a_sample", bytes.Join([][]byte{label(name, str(nil, 2, "up")), sample, label(str(nil, 1, "store"), str(nil, 2, "x"))}, nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Options{})
			body := msg(nil, 1, tc.ts)
			var wru prompb.WriteRequestUnmarshaler
			wr, err := wru.UnmarshalProtobuf(body)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				postChecked(t, f, fmt.Sprintf("request %d", i), body, wr)
			}
			if n := f.h.devices.active.Load(); n != 1 {
				t.Errorf("%d series tracked, want 1", n)
			}
		})
	}
}

// TestKnownSeries_Limit: the series limit counts series, not encodings,
// known series keep flowing at the limit, and the raw entries stay bounded
// and age out with the window.
func TestKnownSeries_Limit(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	f := newFixture(t, Options{MaxSeriesPerDevice: 2, SeriesWindow: time.Hour, Now: func() time.Time { return now }})
	send := func(want int, ss ...prompb.TimeSeries) {
		t.Helper()
		wr := &prompb.WriteRequest{Timeseries: ss}
		if code, body, _ := f.post(t, encode(wr), nil); code != want {
			t.Fatalf("%d %s, want %d", code, body, want)
		}
	}
	a, b, c := ser(1, "__name__", "a", "device", "t1"), ser(1, "__name__", "b", "device", "t1"), ser(1, "__name__", "c", "device", "t1")
	send(204, a, b)
	send(204, a, b) // known: the fast path
	send(400, c)
	// Other encodings of a (a client store label) are the same series.
	for i := range 5 {
		send(204, ser(1, "__name__", "a", "device", "t1", "store", fmt.Sprint(i)))
	}
	send(400, c)
	if got := f.h.devices.active.Load(); got != 2 {
		t.Errorf("%d series tracked, want 2", got)
	}
	// Half a window: a and b move to the previous generation and back.
	now = now.Add(31 * time.Minute)
	send(204, a)
	now = now.Add(31 * time.Minute)
	send(204, a)
	send(204, c) // b aged out, so c fits
	send(400, b)
	now = now.Add(2 * time.Hour)
	send(204, b)
	if got := f.h.devices.active.Load(); got != 1 {
		t.Errorf("%d series tracked after a whole idle window and one series, want 1", got)
	}
}

// FuzzDecode: the request walk must not panic, must accept what prompb
// accepts, and must find the same series, labels and samples.
func FuzzDecode(f *testing.F) {
	till := fleetsim.NewTill("s1", "till-1", 1)
	f.Add((&prompb.WriteRequest{Timeseries: till.AppendSeries(nil, 1_700_000_000_000)[:20]}).MarshalProtobuf(nil))
	f.Add((&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{ser(1, "__name__", "up", "store", "x")}}).MarshalProtobuf(nil))
	f.Add([]byte{0x0a, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, body []byte) {
		rq := &request{body: body}
		err := rq.decode()
		for i := 0; err == nil && i < len(rq.series); i++ {
			err = rq.parseLabels(&rq.series[i])
		}
		var wru prompb.WriteRequestUnmarshaler
		wr, perr := wru.UnmarshalProtobuf(body)
		if perr != nil {
			return // may still be ours: we skip metadata
		}
		if err != nil {
			t.Fatalf("prompb reads it, decode says %v", err)
		}
		if len(wr.Timeseries) != len(rq.series) {
			t.Fatalf("%d series, prompb %d", len(rq.series), len(wr.Timeseries))
		}
		for i, ref := range rq.series {
			ts := &wr.Timeseries[i]
			ls, ss := rq.labels[ref.l0:ref.l1], rq.samples[ref.s0:ref.s1]
			if fmt.Sprint(ls) != fmt.Sprint(ts.Labels) || fmt.Sprint(ss) != fmt.Sprint(ts.Samples) {
				t.Fatalf("series %d: %v %v, prompb %v %v", i, ls, ss, ts.Labels, ts.Samples)
			}
			if !ref.contiguous {
				continue
			}
			if dev, sp, ok, done := scanLabelsCanonical(ref.raw(body), "addr"); done {
				gdev, gsp, gok := scanLabelsGeneric(ref.raw(body), "addr")
				if ok != gok || ok && (dev != gdev || sp != gsp) {
					t.Fatalf("series %d: canonical scan %q %+v %v, generic %q %+v %v", i, dev, sp, ok, gdev, gsp, gok)
				}
			}
			if sp, ok, _ := spliceOf(ref.raw(body), ls, nil); ok {
				var fast, slow record
				fast.appendSpliced(&seal.RecordSection{}, ref.raw(body), sp, appendLabel(nil, StoreLabel, "s1", labelSize(StoreLabel, "s1")), ss)
				slow.appendSeries(&seal.RecordSection{}, ls, ss, "s1")
				if !bytes.Equal(fast.buf, slow.buf) {
					t.Fatalf("series %d spliced %q, encoded %q", i, fast.buf, slow.buf)
				}
				h := &Handler{devices: newDevices(0, time.Hour, time.Now())}
				want, _ := h.identify(&request{}, ls, "addr")
				if got, sp2, ok := scanLabels(ref.raw(body), "addr"); !ok || got != want || sp2 != sp {
					t.Fatalf("series %d: scanLabels %q %+v %v, identify %q spliceOf %+v", i, got, sp2, ok, want, sp)
				}
			}
		}
	})
}

func TestIntakeAllocs(t *testing.T) {
	f := newFixture(t, Options{MaxSeriesPerDevice: 5000})
	till := fleetsim.NewTill("s1", "till-1", 1)
	body := encode(&prompb.WriteRequest{Timeseries: till.AppendSeries(nil, 1_700_000_000_000)})
	serve := func() {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body))
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		if w.Code != 204 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	serve() // the series become known
	base := testing.AllocsPerRun(20, func() {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body))
		_ = httptest.NewRecorder()
		_ = r
	})
	allocs := testing.AllocsPerRun(20, serve) - base
	t.Logf("%.0f allocations per known request beyond the test's own", allocs)
	if allocs > maxRequestAllocs {
		t.Errorf("%.0f allocations per request of 400 known series, want at most %d", allocs, maxRequestAllocs)
	}
}

// maxRequestAllocs bounds the allocations of a request of known series
// (httptest recorder and the buffer's append excluded as far as possible).
const maxRequestAllocs = 40

// TestSeriesIDSplit: the id of label fields hashed in two parts (around a
// client's store label) is the id of the same bytes in one run, which is how
// a series new to the device was identified.
func TestSeriesIDSplit(t *testing.T) {
	h := &Handler{devices: newDevices(0, time.Hour, time.Now())}
	rq := &request{}
	rq.mh.SetSeed(h.devices.seed) // as peek does
	raw := []byte("\x0a\x10\x0a\x08__name__\x12\x04up_1\x0a\x0f\x0a\x06device\x12\x05till1")
	whole := h.seriesID(rq, raw, nil)
	for i := range len(raw) + 1 {
		if got := h.seriesID(rq, raw[:i], raw[i:]); got != whole {
			t.Fatalf("split at %d: %+v, whole %+v", i, got, whole)
		}
	}
	if other := h.seriesID(rq, raw[1:], nil); other == whole {
		t.Fatal("different bytes, same id")
	}
}
