package intake

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/prometheus/model/labels"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"tillpipe/internal/fleetsim"
	"tillpipe/internal/wire"
)

// Remote-write 2.0 requests here are built and encoded by Prometheus's own
// writev2 package (symbols table, Marshal), and what they should become
// is read back with its own decoding (TimeSeries.ToLabels), so the relay's
// decoder is checked against the real encoder, not against itself.

const contentTypeV2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"

// v2Series is a 2.0 series of labels kv with one float sample.
func v2Series(st *writev2.SymbolsTable, ts int64, v float64, kv ...string) writev2.TimeSeries {
	return writev2.TimeSeries{
		LabelsRefs: st.SymbolizeLabels(labels.FromStrings(kv...), nil),
		Samples:    []writev2.Sample{{Value: v, Timestamp: ts}},
	}
}

// v2Marshal is req as the wire carries it, before compression.
func v2Marshal(t testing.TB, req *writev2.Request) []byte {
	t.Helper()
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func v2Body(t testing.TB, st *writev2.SymbolsTable, tss ...writev2.TimeSeries) []byte {
	t.Helper()
	return snappy.Encode(nil, v2Marshal(t, &writev2.Request{Symbols: st.Symbols(), Timeseries: tss}))
}

// wantV1 is the 1.0 request of req's float series, as Prometheus decodes
// them.
func wantV1(t *testing.T, req *writev2.Request) *prompb.WriteRequest {
	t.Helper()
	wr := &prompb.WriteRequest{}
	b := labels.NewScratchBuilder(0)
	for _, ts := range req.Timeseries {
		if len(ts.Samples) == 0 && len(ts.Histograms) > 0 {
			continue
		}
		ls, err := ts.ToLabels(&b, req.Symbols)
		if err != nil {
			t.Fatal(err)
		}
		var v1 prompb.TimeSeries
		ls.Range(func(l labels.Label) { v1.Labels = append(v1.Labels, prompb.Label{Name: l.Name, Value: l.Value}) })
		for _, s := range ts.Samples {
			v1.Samples = append(v1.Samples, prompb.Sample{Value: s.Value, Timestamp: s.Timestamp})
		}
		wr.Timeseries = append(wr.Timeseries, v1)
	}
	return wr
}

func (f *fixture) postV2(t *testing.T, body []byte, hdr map[string]string) (int, string, map[string][]string) {
	t.Helper()
	h := map[string]string{"Content-Type": contentTypeV2, "Content-Encoding": "snappy"}
	for k, v := range hdr {
		h[k] = v
	}
	code, msg, rh := f.post(t, body, h)
	return code, msg, rh
}

// checkWritten checks the Written headers of a 2.0 answer.
func checkWritten(t *testing.T, hdr map[string][]string, samples int) {
	t.Helper()
	for name, want := range map[string]int{headerSamplesWritten: samples, headerHistogramsWritten: 0, headerExemplarsWritten: 0} {
		if got := hdr[name]; len(got) != 1 || got[0] != fmt.Sprint(want) {
			t.Errorf("%s: %q, want %d", name, got, want)
		}
	}
}

// checkInbox checks that the inbox holds exactly want's series, store
// stamped, each in the class the rules give it.
func checkInbox(t *testing.T, f *fixture, want *prompb.WriteRequest, copies int) {
	t.Helper()
	count := map[string]int{}
	for _, ts := range want.Timeseries {
		ls := []prompb.Label{}
		for _, l := range ts.Labels {
			if l.Name != StoreLabel {
				ls = append(ls, l)
			}
		}
		ls = append(ls, prompb.Label{Name: StoreLabel, Value: "s1"})
		count[seriesKey(ls, ts.Samples)] += copies
	}
	for c, tss := range inboxSeries(t, f.inbox) {
		for _, ts := range tss {
			if want := f.h.rules.Classify(ts.Labels); want != c {
				t.Errorf("series %v in %v, rules say %v", ts.Labels, c, want)
			}
			k := seriesKey(ts.Labels, ts.Samples)
			if count[k] == 0 {
				t.Errorf("unexpected series in the inbox: %s", k)
				continue
			}
			count[k]--
		}
	}
	for k, n := range count {
		if n != 0 {
			t.Errorf("%d series missing from the inbox: %s", n, k)
		}
	}
}

// seriesKey spells a series out, labels sorted, values bit for bit.
func seriesKey(ls []prompb.Label, ss []prompb.Sample) string {
	m := map[string]string{}
	for _, l := range ls {
		m[l.Name] = l.Value
	}
	var b strings.Builder
	fmt.Fprint(&b, m)
	for _, s := range ss {
		fmt.Fprintf(&b, " %x@%d", math.Float64bits(s.Value), s.Timestamp)
	}
	return b.String()
}

func TestV2AcceptStampsStoreAndClassifies(t *testing.T) {
	f := newFixture(t, Options{})
	st := writev2.NewSymbolTable()
	req := &writev2.Request{}
	for _, ts := range fleetsim.NewTill("other-store", "till-1", 1).AppendSeries(nil, 1_700_000_000_000) {
		kv := []string{}
		for _, l := range ts.Labels {
			kv = append(kv, l.Name, l.Value)
		}
		s := v2Series(&st, ts.Samples[0].Timestamp, ts.Samples[0].Value, kv...)
		s.Samples = append(s.Samples, writev2.Sample{Value: math.Float64frombits(0x7ff0000000000002), Timestamp: ts.Samples[0].Timestamp + 15_000}) // a stale marker
		req.Timeseries = append(req.Timeseries, s)
	}
	req.Timeseries = append(req.Timeseries, v2Series(&st, 5, -2.5, "__name__", "zz", "device", "till-1")) // no store label, sorts before it
	req.Symbols = st.Symbols()
	raw := v2Marshal(t, req)
	want := wantV1(t, req)
	samples := 0
	for _, ts := range want.Timeseries {
		samples += len(ts.Samples)
	}
	zenc, _ := zstd.NewWriter(nil)
	defer zenc.Close()
	for i, tc := range []struct {
		enc  string
		body []byte
	}{
		{"snappy", snappy.Encode(nil, raw)},
		{"zstd", zenc.EncodeAll(raw, nil)},
		{"snappy", snappy.Encode(nil, raw)}, // known series now: the fast path
	} {
		code, msg, hdr := f.postV2(t, tc.body, map[string]string{"Content-Encoding": tc.enc})
		if code != 204 {
			t.Fatalf("%s: %d %s", tc.enc, code, msg)
		}
		checkWritten(t, hdr, samples)
		if got, want := lastRecord(t, f), wantRecord(f.h, want); !bytes.Equal(got, want) {
			t.Fatalf("request %d (%s): the record differs from the 1.0 slow path's", i, tc.enc)
		}
	}
	checkInbox(t, f, want, 3)
	got := inboxSeries(t, f.inbox)
	if len(got[wire.ClassCritical]) == 0 || len(got[wire.ClassBulk]) == 0 {
		t.Errorf("classes: %d critical, %d bulk", len(got[wire.ClassCritical]), len(got[wire.ClassBulk]))
	}
	if n := counter(t, f.reg, "samples_received_total", "class", "critical") + counter(t, f.reg, "samples_received_total", "class", "normal") +
		counter(t, f.reg, "samples_received_total", "class", "bulk"); n != float64(3*samples) {
		t.Errorf("samples_received_total: %v, want %d", n, 3*samples)
	}
}

// TestV2SameRecordAs1 sends each request as 2.0 and checks that the record
// is the one the 1.0 slow path writes for the same series, on first sight
// and when known.
func TestV2SameRecordAs1(t *testing.T) {
	for _, tc := range []struct {
		name string
		kv   [][]string
	}{
		{"client_store_overwritten", [][]string{{"__name__", "a", "device", "t1", "store", "other"}, {"__name__", "b", "store", "s1", "zone", "z"}}},
		{"store_inserted_in_name_order", [][]string{{"__name__", "a", "device", "t1"}, {"__name__", "a", "device", "t1", "zz", "1"}}},
		{"classes", [][]string{{"__name__", "up", "container", "payment-x", "device", "t1"}, {"__name__", "node_disk_io", "device", "t1"}, {"__name__", "up", "container", "pos-ui", "device", "t1"}}},
		{"unicode_value", [][]string{{"__name__", "up", "device", "t1", "shop", "Zürich ☕"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Options{})
			for i := range 2 {
				st := writev2.NewSymbolTable()
				req := &writev2.Request{}
				for _, kv := range tc.kv {
					req.Timeseries = append(req.Timeseries, v2Series(&st, int64(i+1), float64(i), kv...))
				}
				req.Symbols = st.Symbols()
				code, msg, hdr := f.postV2(t, snappy.Encode(nil, v2Marshal(t, req)), nil)
				if code != 204 {
					t.Fatalf("request %d: %d %s", i, code, msg)
				}
				checkWritten(t, hdr, len(tc.kv))
				if got, want := lastRecord(t, f), wantRecord(f.h, wantV1(t, req)); !bytes.Equal(got, want) {
					t.Fatalf("request %d: record differs from the 1.0 slow path's\ngot  %q\nwant %q", i, got, want)
				}
			}
		})
	}
}

// TestV2PartialWrites: what the relay cannot carry is refused or dropped,
// counted, and the float samples written; the answer says how many.
func TestV2PartialWrites(t *testing.T) {
	hist := writev2.Histogram{Count: &writev2.Histogram_CountInt{CountInt: 3}, Sum: 4.5, Schema: 0, Timestamp: 7,
		PositiveSpans: []writev2.BucketSpan{{Offset: 0, Length: 1}}, PositiveDeltas: []int64{3}}
	type counted struct {
		metric, label, value string
		want                 float64
	}
	for _, tc := range []struct {
		name    string
		opts    Options
		prepare func(st *writev2.SymbolsTable) []byte // the body of a first request, nil: none
		series  func(st *writev2.SymbolsTable) []writev2.TimeSeries
		code    int
		reason  string // "": 204
		written int
		counts  []counted
	}{
		{
			name: "native_histograms_refused_floats_written",
			series: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				h := v2Series(st, 0, 0, "__name__", "rpc_seconds", "device", "t1")
				h.Samples, h.Histograms = nil, []writev2.Histogram{hist, hist}
				return []writev2.TimeSeries{v2Series(st, 1, 1, "__name__", "a", "device", "t1"), h, v2Series(st, 1, 2, "__name__", "b", "device", "t1")}
			},
			code: 400, reason: ReasonHistograms, written: 2,
			counts: []counted{{"samples_rejected_total", "reason", ReasonHistograms, 2}, {"requests_rejected_total", "reason", ReasonHistograms, 1}},
		},
		{
			name: "histograms_only_nothing_written",
			series: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				h := v2Series(st, 0, 0, "__name__", "rpc_seconds", "device", "t1")
				h.Samples, h.Histograms = nil, []writev2.Histogram{hist}
				return []writev2.TimeSeries{h}
			},
			code: 400, reason: ReasonHistograms, written: 0,
			counts: []counted{{"samples_rejected_total", "reason", ReasonHistograms, 1}, {"requests_rejected_total", "reason", ReasonHistograms, 1}},
		},
		{
			name: "exemplars_refused_floats_written",
			series: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				s := v2Series(st, 1, 1, "__name__", "http_requests_total", "device", "t1")
				s.Exemplars = []writev2.Exemplar{{LabelsRefs: st.SymbolizeLabels(labels.FromStrings("trace_id", "abc123"), nil), Value: 1, Timestamp: 1}}
				return []writev2.TimeSeries{s, v2Series(st, 1, 2, "__name__", "b", "device", "t1")}
			},
			code: 400, reason: ReasonExemplars, written: 2,
			counts: []counted{{"rw2_dropped_total", "part", partExemplar, 1}, {"requests_rejected_total", "reason", ReasonExemplars, 1}},
		},
		{
			name: "series_limit_is_a_partial_write",
			opts: Options{MaxSeriesPerDevice: 1},
			prepare: func(st *writev2.SymbolsTable) []byte {
				return v2Body(t, st, v2Series(st, 1, 1, "__name__", "a", "device", "t1"))
			},
			series: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				return []writev2.TimeSeries{v2Series(st, 2, 1, "__name__", "a", "device", "t1"), v2Series(st, 2, 1, "__name__", "b", "device", "t1")}
			},
			code: 400, reason: ReasonSeriesLimit, written: 1,
			counts: []counted{{"samples_rejected_total", "reason", ReasonSeriesLimit, 1}, {"requests_rejected_total", "reason", ReasonSeriesLimit, 1}},
		},
		{
			name: "metadata_and_start_timestamps_dropped_204",
			series: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				s := v2Series(st, 1_000, 1, "__name__", "http_requests_total", "device", "t1")
				s.Samples[0].StartTimestamp = 500
				s.Metadata = writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER, HelpRef: st.Symbolize("Requests served."), UnitRef: st.Symbolize("requests")}
				return []writev2.TimeSeries{s}
			},
			code: 204, written: 1,
			counts: []counted{{"rw2_dropped_total", "part", partMetadata, 1}, {"rw2_dropped_total", "part", partStartTimestamp, 1}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.opts)
			st := writev2.NewSymbolTable()
			if tc.prepare != nil {
				if code, msg, _ := f.postV2(t, tc.prepare(&st), nil); code != 204 {
					t.Fatalf("first request: %d %s", code, msg)
				}
			}
			before := inboxSeries(t, f.inbox)
			req := &writev2.Request{Timeseries: tc.series(&st)}
			req.Symbols = st.Symbols()
			code, msg, hdr := f.postV2(t, snappy.Encode(nil, v2Marshal(t, req)), nil)
			if code != tc.code || tc.reason != "" && !strings.HasPrefix(msg, tc.reason+": ") || strings.Count(strings.TrimSpace(msg), "\n") > 0 {
				t.Fatalf("got %d %q, want %d with one line starting %q", code, msg, tc.code, tc.reason)
			}
			checkWritten(t, hdr, tc.written)
			for _, c := range tc.counts {
				if got := counter(t, f.reg, c.metric, c.label, c.value); got != c.want {
					t.Errorf("%s{%s=%q} = %v, want %v", c.metric, c.label, c.value, got, c.want)
				}
			}
			// What was written is the float series the limit let through.
			n := 0
			for c, tss := range inboxSeries(t, f.inbox) {
				n += len(tss) - len(before[c])
			}
			if n != tc.written {
				t.Errorf("%d series written to the inbox, want %d", n, tc.written)
			}
			if tc.opts.MaxSeriesPerDevice == 0 {
				checkInbox(t, f, wantV1(t, req), 1)
			}
		})
	}
}

func TestV2Reject(t *testing.T) {
	good := func(st *writev2.SymbolsTable) writev2.TimeSeries {
		return v2Series(st, 1, 1, "__name__", "up", "device", "t1")
	}
	raw := func(symbols []string, tss ...writev2.TimeSeries) []byte {
		return snappy.Encode(nil, v2Marshal(t, &writev2.Request{Symbols: symbols, Timeseries: tss}))
	}
	sym := []string{"", "__name__", "up", "device", "t1", "bad-name", "x"}
	sample := []writev2.Sample{{Value: 1, Timestamp: 1}}
	big := strings.Repeat("v", 100)
	var many []writev2.TimeSeries
	for range 10 {
		many = append(many, writev2.TimeSeries{LabelsRefs: []uint32{1, 2, 3, 7}, Samples: sample})
	}
	v1Body := encode(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{ser(1, "__name__", "up", "device", "t1")}})
	st := writev2.NewSymbolTable()
	goodBody := v2Body(t, &st, good(&st))
	for _, tc := range []struct {
		name    string
		opts    Options
		body    []byte
		hdr     map[string]string
		code    int
		reason  string
		samples float64
		headers bool // the Written headers (0) are expected
	}{
		{name: "symbols_0_not_empty", body: raw([]string{"x", "__name__", "up"}, writev2.TimeSeries{LabelsRefs: []uint32{1, 2}, Samples: sample}), code: 400, reason: ReasonBadProtobuf, headers: true},
		{name: "label_ref_out_of_range", body: raw(sym, writev2.TimeSeries{LabelsRefs: []uint32{1, 7}, Samples: sample}), code: 400, reason: ReasonBadProtobuf, headers: true},
		{name: "label_ref_huge", body: raw(sym, writev2.TimeSeries{LabelsRefs: []uint32{1, math.MaxUint32}, Samples: sample}), code: 400, reason: ReasonBadProtobuf, headers: true},
		{name: "odd_labels_refs", body: raw(sym, writev2.TimeSeries{LabelsRefs: []uint32{1, 2, 3}, Samples: sample}), code: 400, reason: ReasonBadProtobuf, headers: true},
		{name: "empty_label_name", body: raw(sym, writev2.TimeSeries{LabelsRefs: []uint32{1, 2, 0, 4}, Samples: sample}), code: 400, reason: ReasonBadProtobuf, headers: true},
		{name: "series_without_labels", body: raw(sym, writev2.TimeSeries{Samples: sample}), code: 400, reason: ReasonBadProtobuf, headers: true},
		{name: "histogram_series_with_bad_refs", body: raw(sym, writev2.TimeSeries{LabelsRefs: []uint32{1, 9}, Histograms: []writev2.Histogram{{Timestamp: 1}}}), code: 400, reason: ReasonBadProtobuf, headers: true},
		{name: "exemplar_ref_out_of_range", body: raw(sym, writev2.TimeSeries{LabelsRefs: []uint32{1, 2}, Samples: sample, Exemplars: []writev2.Exemplar{{LabelsRefs: []uint32{1, 99}, Value: 1, Timestamp: 1}}}), code: 400, reason: ReasonBadProtobuf, headers: true},
		{name: "exemplar_odd_labels_refs", body: raw(sym, writev2.TimeSeries{LabelsRefs: []uint32{1, 2}, Samples: sample, Exemplars: []writev2.Exemplar{{LabelsRefs: []uint32{1}, Value: 1, Timestamp: 1}}}), code: 400, reason: ReasonBadProtobuf, headers: true},
		{name: "metadata_help_ref_out_of_range", body: raw(sym, writev2.TimeSeries{LabelsRefs: []uint32{1, 2}, Samples: sample, Metadata: writev2.Metadata{HelpRef: 7}}), code: 400, reason: ReasonBadProtobuf, headers: true},
		{name: "remote_write_1_body_sent_as_2", body: v1Body, code: 400, reason: ReasonBadProtobuf, headers: true},
		{name: "truncated", body: snappy.Encode(nil, []byte{0x22, 0x05, 'a'}), code: 400, reason: ReasonBadProtobuf, headers: true},
		{name: "invalid_label_name", body: raw(sym, writev2.TimeSeries{LabelsRefs: []uint32{1, 2}, Samples: sample}, writev2.TimeSeries{LabelsRefs: []uint32{1, 2, 5, 6}, Samples: sample}), code: 400, reason: ReasonLabels, samples: 2, headers: true},
		{name: "duplicate_label", body: raw(sym, writev2.TimeSeries{LabelsRefs: []uint32{1, 2, 3, 4, 3, 6}, Samples: sample}), code: 400, reason: ReasonLabels, samples: 1, headers: true},
		{name: "series_without_samples", body: raw(sym, writev2.TimeSeries{LabelsRefs: []uint32{1, 2}, Samples: sample}, writev2.TimeSeries{LabelsRefs: []uint32{1, 2, 3, 4}}), code: 400, reason: ReasonNoSamples, samples: 1, headers: true},
		{name: "body_over_limit", opts: Options{MaxBodyBytes: 16}, body: goodBody, code: 413, reason: ReasonTooLarge, headers: true},
		{name: "interned_strings_expand_over_limit", opts: Options{MaxBodyBytes: 400}, body: raw(append(append([]string(nil), sym...), big), many...), code: 413, reason: ReasonTooLarge, headers: true},
		{name: "bad_snappy", body: []byte("not snappy at all"), code: 400, reason: ReasonBadEncoding, headers: true},
		{name: "unknown_encoding_is_415", body: goodBody, hdr: map[string]string{"Content-Encoding": "gzip"}, code: 415, reason: ReasonUnsupported},
		{name: "unknown_proto", body: goodBody, hdr: map[string]string{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v3.Request"}, code: 415, reason: ReasonUnsupported},
		{name: "inbox_full", opts: Options{InboxMaxBytes: 1}, body: goodBody, code: 429, reason: ReasonInboxFull, samples: 1, headers: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.opts)
			before := f.inbox.Bytes()
			code, body, hdr := f.postV2(t, tc.body, tc.hdr)
			f.checkRejected(t, before, code, body, tc.code, tc.reason, tc.samples)
			t.Logf("%d %s", code, strings.TrimSpace(body))
			if tc.headers {
				checkWritten(t, hdr, 0)
			} else if len(hdr[headerSamplesWritten]) > 0 {
				t.Errorf("Written headers on a request refused before content negotiation")
			}
		})
	}
}

// TestV2Empty: a request without series (a sender's keep-alive) is written
// as nothing.
func TestV2Empty(t *testing.T) {
	f := newFixture(t, Options{})
	for _, body := range [][]byte{snappy.Encode(nil, nil), snappy.Encode(nil, v2Marshal(t, &writev2.Request{Symbols: []string{""}}))} {
		code, msg, hdr := f.postV2(t, body, nil)
		if code != 204 {
			t.Fatalf("%d %s", code, msg)
		}
		checkWritten(t, hdr, 0)
	}
	if n := f.inbox.Bytes(); n != 0 {
		t.Errorf("%d inbox bytes for empty requests", n)
	}
}

// FuzzDecodeV2: the 2.0 conversion must not panic; what it accepts,
// Prometheus's decoder accepts too, and it yields the float series that
// decoder sees; and whatever that decoder reads, re-encoded by Prometheus,
// is accepted exactly when it is well-formed, with the same series.
func FuzzDecodeV2(f *testing.F) {
	st := writev2.NewSymbolTable()
	till := fleetsim.NewTill("s1", "till-1", 1)
	req := &writev2.Request{}
	for _, ts := range till.AppendSeries(nil, 1_700_000_000_000)[:10] {
		kv := []string{}
		for _, l := range ts.Labels {
			kv = append(kv, l.Name, l.Value)
		}
		req.Timeseries = append(req.Timeseries, v2Series(&st, ts.Samples[0].Timestamp, ts.Samples[0].Value, kv...))
	}
	req.Timeseries[0].Exemplars = []writev2.Exemplar{{LabelsRefs: st.SymbolizeLabels(labels.FromStrings("trace_id", "t"), nil), Value: 1, Timestamp: 2}}
	req.Timeseries[1].Metadata = writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_GAUGE, HelpRef: st.Symbolize("help"), UnitRef: st.Symbolize("bytes")}
	req.Timeseries[2].Samples[0].StartTimestamp = 1
	req.Timeseries[3].Samples, req.Timeseries[3].Histograms = nil, []writev2.Histogram{{Count: &writev2.Histogram_CountFloat{CountFloat: 1}, Timestamp: 3}}
	req.Symbols = st.Symbols()
	f.Add(v2Marshal(f, req))
	f.Add(v2Marshal(f, &writev2.Request{Symbols: []string{"", "a", "b"}, Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{1, 2, 1}}}}))
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x00}) // a 1.0 body
	f.Fuzz(func(t *testing.T, body []byte) {
		rq := &request{body: bytes.Clone(body)}
		c, err := rq.convertV2(1 << 20)
		var req writev2.Request
		perr := req.Unmarshal(body)
		if err == nil && c.histograms == 0 { // histogram messages are counted, not parsed
			if perr != nil {
				t.Fatalf("convertV2 accepts what Prometheus refuses: %v", perr)
			}
		}
		if err == nil && perr == nil {
			checkConversion(t, &req, rq.body, c, false)
		}
		if perr != nil {
			return
		}
		clearUnrecognized(&req)
		canon := v2Marshal(t, &req)
		rq = &request{body: canon}
		c, err = rq.convertV2(1 << 40)
		if wf := wellFormed(&req); wf != nil {
			if err == nil {
				t.Fatalf("convertV2 accepts a request that is not well-formed: %v", wf)
			}
			return
		}
		if err != nil {
			t.Fatalf("convertV2 refuses a well-formed request: %v", err)
		}
		checkConversion(t, &req, rq.body, c, true)
	})
}

// checkConversion checks that v1, a converted body, holds req's float
// series (and those with neither floats nor histograms), and the counts.
// Metadata and start timestamps are compared only when req holds all the
// body said (no unknown fields, no repeated metadata to merge).
func checkConversion(t *testing.T, req *writev2.Request, v1 []byte, c v2Counts, all bool) {
	t.Helper()
	var wru prompb.WriteRequestUnmarshaler
	wr, err := wru.UnmarshalProtobuf(v1)
	if err != nil {
		t.Fatalf("the conversion does not unmarshal: %v", err)
	}
	var want v2Counts
	i := 0
	for _, ts := range req.Timeseries {
		want.histograms += len(ts.Histograms)
		want.exemplars += len(ts.Exemplars)
		if m := ts.Metadata; m.Type != 0 || m.HelpRef != 0 || m.UnitRef != 0 {
			want.metadata++
		}
		for _, s := range ts.Samples {
			if s.StartTimestamp != 0 {
				want.startTimestamps++
			}
		}
		if len(ts.Samples) == 0 && len(ts.Histograms) > 0 {
			continue
		}
		if i >= len(wr.Timeseries) {
			t.Fatalf("%d series converted, more expected", len(wr.Timeseries))
		}
		got := wr.Timeseries[i]
		i++
		var ls []prompb.Label
		for j := 0; j+1 < len(ts.LabelsRefs); j += 2 {
			ls = append(ls, prompb.Label{Name: req.Symbols[ts.LabelsRefs[j]], Value: req.Symbols[ts.LabelsRefs[j+1]]})
		}
		if fmt.Sprint(ls) != fmt.Sprint(got.Labels) {
			t.Fatalf("series %d: labels %v, want %v", i-1, got.Labels, ls)
		}
		if len(got.Samples) != len(ts.Samples) {
			t.Fatalf("series %d: %d samples, want %d", i-1, len(got.Samples), len(ts.Samples))
		}
		for j, s := range ts.Samples {
			if g := got.Samples[j]; math.Float64bits(g.Value) != math.Float64bits(s.Value) || g.Timestamp != s.Timestamp {
				t.Fatalf("series %d sample %d: %v, want %v@%d", i-1, j, g, s.Value, s.Timestamp)
			}
		}
	}
	if i != len(wr.Timeseries) {
		t.Fatalf("%d series converted, want %d", len(wr.Timeseries), i)
	}
	if !all {
		c.metadata, c.startTimestamps, want.metadata, want.startTimestamps = 0, 0, 0, 0
	}
	if c != want {
		t.Fatalf("counts %+v, want %+v", c, want)
	}
}

// wellFormed is the spec's structure, checked on the decoded request.
func wellFormed(req *writev2.Request) error {
	n := uint32(len(req.Symbols))
	if n > 0 && req.Symbols[0] != "" {
		return fmt.Errorf("symbols[0] = %q", req.Symbols[0])
	}
	pairs := func(refs []uint32, names bool) error {
		if len(refs)%2 != 0 {
			return fmt.Errorf("odd refs %v", refs)
		}
		for i, r := range refs {
			if r >= n {
				return fmt.Errorf("ref %d out of range", r)
			}
			if names && i%2 == 0 && req.Symbols[r] == "" {
				return fmt.Errorf("empty name")
			}
		}
		return nil
	}
	for _, ts := range req.Timeseries {
		if len(ts.LabelsRefs) == 0 {
			return fmt.Errorf("no labels")
		}
		if err := pairs(ts.LabelsRefs, true); err != nil {
			return err
		}
		for _, e := range ts.Exemplars {
			if err := pairs(e.LabelsRefs, false); err != nil {
				return fmt.Errorf("exemplar: %w", err)
			}
		}
		if ts.Metadata.HelpRef >= n && ts.Metadata.HelpRef != 0 || ts.Metadata.UnitRef >= n && ts.Metadata.UnitRef != 0 {
			return fmt.Errorf("metadata ref out of range")
		}
	}
	return nil
}

// clearUnrecognized drops the fields Prometheus's decoder kept as unknown,
// so that its encoding holds only the known ones.
func clearUnrecognized(req *writev2.Request) {
	req.XXX_unrecognized = nil
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		ts.XXX_unrecognized, ts.Metadata.XXX_unrecognized = nil, nil
		for j := range ts.Samples {
			ts.Samples[j].XXX_unrecognized = nil
		}
		for j := range ts.Exemplars {
			ts.Exemplars[j].XXX_unrecognized = nil
		}
		for j := range ts.Histograms {
			ts.Histograms[j].XXX_unrecognized = nil
		}
	}
}
