package collector

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"
)

// TestAppendTimeSeriesPB_MatchesPrompb checks the hand-written encoder
// against prompb's on the values whose fields protobuf omits or sizes
// differently.
func TestAppendTimeSeriesPB_MatchesPrompb(t *testing.T) {
	labels := []prompb.Label{{Name: "__name__", Value: "m"}, {Name: "device", Value: "till-042"}, {Name: "empty", Value: ""}}
	long := []prompb.Label{{Name: "__name__", Value: string(bytes.Repeat([]byte("x"), 300))}}
	for _, tc := range []struct {
		name   string
		labels []prompb.Label
		v      float64
		ts     int64
	}{
		{"zero_value_omitted", labels, 0, 1763716507000},
		{"negative_zero_value_omitted", labels, math.Copysign(0, -1), 1763716507000},
		{"zero_timestamp_omitted", labels, 1.5, 0},
		{"negative_timestamp_ten_byte_varint", labels, 1.5, -1},
		{"stale_nan", labels, StaleNaN, 1763716507000},
		{"nan_and_inf", labels, math.Inf(-1), 1},
		{"label_over_127_bytes_two_byte_length", long, 42, 1763716507000},
		{"no_labels", nil, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wr := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
				{Labels: tc.labels, Samples: []prompb.Sample{{Value: tc.v, Timestamp: tc.ts}}},
				{Labels: tc.labels, Samples: []prompb.Sample{{Value: tc.v, Timestamp: tc.ts}}},
			}}
			want := wr.MarshalProtobuf(nil)
			pb := appendLabelsPB(nil, tc.labels)
			got := appendTimeSeriesPB(nil, pb, tc.v, tc.ts)
			got = appendTimeSeriesPB(got, pb, tc.v, tc.ts)
			if !bytes.Equal(got, want) {
				t.Errorf("got  %x\nwant %x", got, want)
			}
			dec, err := decodeLabelsPB(pb)
			if err != nil || len(dec) != len(tc.labels) {
				t.Fatalf("decode: %v, %d labels, want %d", err, len(dec), len(tc.labels))
			}
			for i := range dec {
				if dec[i] != tc.labels[i] {
					t.Errorf("label %d decodes as %+v, want %+v", i, dec[i], tc.labels[i])
				}
			}
		})
	}
}

// TestWriteRequest_MatchesCollect runs two collectors over the same
// changing tree, one through Collect and prompb's marshaler, the other
// through WriteRequest: the bodies must be identical in every cycle,
// including the one with stale markers and the one after it, the cycles
// that repeat the last one's series (Collector.fast), and those of them
// where a value turns zero or back (a zero is left out of the body, so the
// values no longer fit the last request: the cycle falls back and is
// encoded again).
func TestWriteRequest_MatchesCollect(t *testing.T) {
	cg := copyDir(t, "testdata/cgroup/v2-docker")
	dd := copyDir(t, "testdata/docker")
	viaCollect := newFixtureCollector(t, cg, dd)
	viaAppend := newFixtureCollector(t, cg, dd)
	ctx := context.Background()
	// A container's thread count: 9 in the fixture, 0 in cycles 6 and 7.
	pids := filepath.Join(cg, "system.slice", "docker-7cbe0a2f5b477d7990885c4c7e297672734cf5aa570d82a112c068cde1cfbfe3.scope", "pids.current")
	for cycle := range 9 {
		if cycle == 2 { // pos-api is removed: stale markers in cycle 2
			if err := os.RemoveAll(filepath.Join(cg, "system.slice", "docker-"+posAPI+".scope")); err != nil {
				t.Fatal(err)
			}
		}
		switch cycle {
		case 6:
			if err := os.WriteFile(pids, []byte("0\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		case 8:
			if err := os.WriteFile(pids, []byte("9\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		now := fixtureTime.Add(time.Duration(cycle) * 15 * time.Second)
		tss := viaCollect.Collect(ctx, now)
		want := (&prompb.WriteRequest{Timeseries: tss}).MarshalProtobuf(nil)
		req, n := viaAppend.WriteRequest(ctx, now)
		body := decodeSnappy(t, req)
		if n != len(tss) || len(body) != len(want) {
			t.Fatalf("cycle %d: %d series, %d bytes; Collect: %d series, %d bytes", cycle, n, len(body), len(tss), len(want))
		}
		sameSeries(t, body, tss)
		if cycle != 2 && !bytes.Equal(body, want) { // stale markers come out of a map, in any order
			t.Errorf("cycle %d: bodies differ", cycle)
		}
		// From cycle 4 on, each cycle repeats the series of a cycle
		// without stale markers (cycle 1 does too, but makes the keys the
		// first cycle leaves out) and starts on the fast path; its values
		// alone go into the last request but in cycles 6 and 8, whose
		// thread count turned zero and back: they fall back to
		// marshalSnappy, which leaves the fast path.
		if fast := cycle >= 4 && cycle != 6 && cycle != 8; viaAppend.fast != fast {
			t.Errorf("cycle %d: fast path %v, want %v", cycle, viaAppend.fast, fast)
		}
	}
}

// decodeSnappy returns req decoded from snappy's block format.
func decodeSnappy(t testing.TB, req []byte) []byte {
	t.Helper()
	body, err := snappy.Decode(nil, req)
	if err != nil {
		t.Fatalf("snappy-decode the request: %v", err)
	}
	return body
}

// sameSeries checks that body holds exactly the series and samples of tss.
func sameSeries(t *testing.T, body []byte, tss []prompb.TimeSeries) {
	t.Helper()
	var u prompb.WriteRequestUnmarshaler
	wr, err := u.UnmarshalProtobuf(body)
	if err != nil {
		t.Fatalf("unmarshal WriteRequest body: %v", err)
	}
	got := map[string]prompb.Sample{}
	for _, ts := range wr.Timeseries {
		got[seriesID(ts.Labels)] = ts.Samples[0]
	}
	for _, ts := range tss {
		g, ok := got[seriesID(ts.Labels)]
		w := ts.Samples[0]
		if !ok || g.Timestamp != w.Timestamp || math.Float64bits(g.Value) != math.Float64bits(w.Value) {
			t.Errorf("%s: WriteRequest has %+v (present %v), Collect %+v", seriesID(ts.Labels), g, ok, w)
		}
	}
	if len(got) != len(tss) {
		t.Errorf("WriteRequest has %d distinct series, Collect %d", len(got), len(tss))
	}
}

// TestEmit_SlotsFollowReorderedSeries checks that the slot cache never
// hands out the wrong series when the emit order changes between cycles,
// nor a series forgotten after its stale marker, and that a cycle takes
// the fast path exactly when it repeats a clean one, with the samples it
// was given.
func TestEmit_SlotsFollowReorderedSeries(t *testing.T) {
	c, err := New(Options{Device: "d", CgroupRoot: t.TempDir(), NoDocker: true, ProcRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	base := 0.0 // added to each sample: each cycle's differ from the last's
	fast := false
	cycle := func(names ...string) map[string]float64 {
		c.begin(fixtureTime)
		for i, n := range names {
			c.emit(mThreads, n, "", "", "", base+float64(i))
		}
		c.end()
		fast = c.fast
		got := map[string]float64{}
		for _, s := range c.sampled() {
			ls, err := decodeLabelsPB(s.pb)
			if err != nil {
				t.Fatal(err)
			}
			got[seriesID(ls)] = s.value
		}
		return got
	}
	id := func(n string) string { return `container_threads{container="` + n + `",device="d"}` }
	for i, step := range []struct {
		names []string
		fast  bool
		want  map[string]float64 // at base 0
	}{
		{[]string{"a", "b", "c"}, false, map[string]float64{id("a"): 0, id("b"): 1, id("c"): 2}},
		{[]string{"a", "b", "c"}, false, map[string]float64{id("a"): 0, id("b"): 1, id("c"): 2}}, // makes the keys
		{[]string{"a", "b", "c"}, true, map[string]float64{id("a"): 0, id("b"): 1, id("c"): 2}},
		{[]string{"a", "b", "c"}, true, map[string]float64{id("a"): 0, id("b"): 1, id("c"): 2}},
		{[]string{"c", "a", "b"}, false, map[string]float64{id("c"): 0, id("a"): 1, id("b"): 2}},
		{[]string{"a", "b", "c"}, false, map[string]float64{id("a"): 0, id("b"): 1, id("c"): 2}}, // the keys followed the reorder
		{[]string{"c", "a", "b"}, false, map[string]float64{id("c"): 0, id("a"): 1, id("b"): 2}},
		{[]string{"c", "a"}, false, map[string]float64{id("c"): 0, id("a"): 1, id("b"): StaleNaN}},
		{[]string{"c", "a"}, false, map[string]float64{id("c"): 0, id("a"): 1}}, // the last had a stale marker
		{[]string{"c", "a", "b"}, false, map[string]float64{id("c"): 0, id("a"): 1, id("b"): 2}},
		{[]string{"a", "a", "b", "c"}, false, map[string]float64{id("a"): 0, id("b"): 2, id("c"): 3}},
		{[]string{"a", "a", "b", "c"}, false, map[string]float64{id("a"): 0, id("b"): 2, id("c"): 3}}, // the last had a series twice
		{[]string{"a", "b", "c"}, false, map[string]float64{id("a"): 0, id("b"): 1, id("c"): 2}},
		{[]string{"a", "b", "c"}, true, map[string]float64{id("a"): 0, id("b"): 1, id("c"): 2}},
		{[]string{"a", "b", "c", "d"}, false, map[string]float64{id("a"): 0, id("b"): 1, id("c"): 2, id("d"): 3}},
		{[]string{"a", "b", "c", "d"}, true, map[string]float64{id("a"): 0, id("b"): 1, id("c"): 2, id("d"): 3}},
		{[]string{"a", "b"}, false, map[string]float64{id("a"): 0, id("b"): 1, id("c"): StaleNaN, id("d"): StaleNaN}},
	} {
		base = float64(i * 10)
		got := cycle(step.names...)
		if fast != step.fast {
			t.Errorf("%d %v: fast path %v, want %v", i, step.names, fast, step.fast)
		}
		if len(got) != len(step.want) {
			t.Errorf("%v: got %v, want %v", step.names, got, step.want)
			continue
		}
		for k, w := range step.want {
			if !math.IsNaN(w) {
				w += base
			}
			if g, ok := got[k]; !ok || math.Float64bits(g) != math.Float64bits(w) {
				t.Errorf("%v: %s = %v (present %v), want %v", step.names, k, g, ok, w)
			}
		}
	}
	if len(c.series) != 2 {
		t.Errorf("%d series interned, want 2", len(c.series))
	}
}

// TestBody_PatchesOnlyWhatItCan marshals a sequence of cycles through one
// body and checks every result against a fresh marshal, and that the body
// was rewritten in place exactly when the layout allowed it.
func TestBody_PatchesOnlyWhatItCan(t *testing.T) {
	mk := func(name string) *series {
		return &series{pb: appendLabelsPB(nil, []prompb.Label{{Name: "__name__", Value: name}, {Name: "device", Value: "d"}})}
	}
	a, b, c := mk("a"), mk("b"), mk("c")
	const ts = int64(1_763_700_000_000)
	steps := []struct {
		name    string
		cycle   []*series
		values  []float64
		ts      int64
		patched bool
	}{
		{"first", []*series{a, b, c}, []float64{1, 0, 2.5}, ts, false},
		{"new values", []*series{a, b, c}, []float64{5, 0, -3}, ts + 15000, true},
		{"stale marker", []*series{a, b, c}, []float64{6, 0, StaleNaN}, ts + 30000, true},
		{"zero becomes nonzero", []*series{a, b, c}, []float64{6, 1, 7}, ts + 45000, false},
		{"nonzero becomes zero", []*series{a, b, c}, []float64{0, 1, 7}, ts + 60000, false},
		{"same zeros again", []*series{a, b, c}, []float64{0, 2, 8}, ts + 75000, true},
		{"reordered", []*series{b, a, c}, []float64{2, 0, 8}, ts + 90000, false},
		{"one gone", []*series{b, a}, []float64{2, 0}, ts + 105000, false},
		{"shorter timestamp", []*series{b, a}, []float64{2, 0}, 1, false},
		{"no timestamp", []*series{b, a}, []float64{2, 0}, 0, false},
		{"timestamp back", []*series{b, a}, []float64{3, 0}, ts, false},
		{"patch after rebuild", []*series{b, a}, []float64{4, 0}, ts + 15000, true},
	}
	var bd, sent, fast body // sent: marshalSnappy only; fast: writeValues first, as the Collector calls them
	var seq uint64          // the number of the series of the cycle, as the Collector's seq
	var last []*series
	for _, st := range steps {
		for i, s := range st.cycle {
			s.value = st.values[i]
		}
		var want []byte
		for _, s := range st.cycle {
			want = appendTimeSeriesPB(want, s.pb, s.value, st.ts)
		}
		before := bytes.Clone(bd.buf)
		if got := bd.patch(st.cycle, bd.values(st.cycle), st.ts); got != st.patched {
			t.Fatalf("%s: patched %v, want %v", st.name, got, st.patched)
		}
		if !st.patched && !bytes.Equal(bd.buf, before) {
			t.Fatalf("%s: a refused patch changed the body", st.name)
		}
		if got := bd.marshal(st.cycle, st.ts); !bytes.Equal(got, want) {
			t.Fatalf("%s: body\n%x\nwant\n%x", st.name, got, want)
		}
		// The snappy encoding follows, patched or encoded again, whether the
		// last call was marshal or marshalSnappy.
		for range 2 {
			if got := decodeSnappy(t, bd.marshalSnappy(st.cycle, 0, st.ts)); !bytes.Equal(got, want) {
				t.Fatalf("%s: snappy body decodes to\n%x\nwant\n%x", st.name, got, want)
			}
			if !bd.zValid && st.ts != 0 {
				t.Fatalf("%s: the body was not snapblock-encoded", st.name)
			}
		}
		// A patched cycle is written into the encoding alone.
		before = bytes.Clone(sent.buf)
		if got := decodeSnappy(t, sent.marshalSnappy(st.cycle, 0, st.ts)); !bytes.Equal(got, want) {
			t.Fatalf("%s: snappy body alone decodes to\n%x\nwant\n%x", st.name, got, want)
		}
		if st.patched && !bytes.Equal(sent.buf, before) {
			t.Fatalf("%s: a cycle written into the encoding changed the body", st.name)
		}
		// The values alone go into the encoding exactly when the body
		// could be patched, and never under another seq.
		if !slices.Equal(st.cycle, last) {
			seq++
			last = st.cycle
		}
		if _, ok := fast.writeValues(seq+1, st.values, st.ts); ok {
			t.Fatalf("%s: writeValues took the values of other series", st.name)
		}
		req, ok := fast.writeValues(seq, st.values, st.ts)
		if ok != st.patched {
			t.Fatalf("%s: writeValues %v, want %v", st.name, ok, st.patched)
		}
		if !ok {
			req = fast.marshalSnappy(st.cycle, seq, st.ts)
		}
		if got := decodeSnappy(t, req); !bytes.Equal(got, want) {
			t.Fatalf("%s: snappy body after writeValues %v decodes to\n%x\nwant\n%x", st.name, ok, got, want)
		}
	}
}
