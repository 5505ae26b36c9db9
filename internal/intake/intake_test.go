package intake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"tillpipe/internal/buffer"
	"tillpipe/internal/fleetsim"
	"tillpipe/internal/remotewrite"
	"tillpipe/internal/seal"
	"tillpipe/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	h     *Handler
	inbox *buffer.Group
	reg   *prometheus.Registry
	url   string
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	inbox, err := seal.OpenInbox(t.TempDir(), seal.InboxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inbox.Close() })
	reg := prometheus.NewRegistry()
	opts.Store, opts.Inbox, opts.Registerer = "s1", inbox, reg
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{h: h, inbox: inbox, reg: reg, url: srv.URL}
}

func (f *fixture) post(t *testing.T, body []byte, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-protobuf")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func encode(wr *prompb.WriteRequest) []byte { return snappy.Encode(nil, wr.MarshalProtobuf(nil)) }

func ser(ts int64, kv ...string) prompb.TimeSeries {
	var ls []prompb.Label
	for i := 0; i+1 < len(kv); i += 2 {
		ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Value: 1, Timestamp: ts}}}
}

// inboxSeries decodes every record, by class.
func inboxSeries(t *testing.T, g *buffer.Group) map[wire.Class][]prompb.TimeSeries {
	t.Helper()
	out := map[wire.Class][]prompb.TimeSeries{}
	for idx := uint64(0); ; {
		e, err := seal.InboxQueue(g).ReadEntry(idx, nil)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		hdr, err := seal.ParseRecordHeader(e.Data)
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, c := range wire.Classes {
			sec, body, err := seal.AppendBody(nil, e.Data, c)
			if err != nil {
				t.Fatal(err)
			}
			if sec != *hdr.Section(c) {
				t.Errorf("AppendBody gives section %+v, header %+v", sec, *hdr.Section(c))
			}
			if len(body) != int(sec.Len) {
				t.Errorf("%v body of %d bytes, section says %d", c, len(body), sec.Len)
			}
			var wru prompb.WriteRequestUnmarshaler
			wr, err := wru.UnmarshalProtobuf(body)
			if err != nil {
				t.Fatal(err)
			}
			if int(sec.Series) != len(wr.Timeseries) {
				t.Errorf("%v section says %d series, body has %d", c, sec.Series, len(wr.Timeseries))
			}
			samples := 0
			for _, ts := range wr.Timeseries {
				samples += len(ts.Samples)
				for _, s := range ts.Samples {
					if s.Timestamp < sec.MinTime || s.Timestamp > sec.MaxTime {
						t.Errorf("%v sample at %d outside the section's [%d, %d]", c, s.Timestamp, sec.MinTime, sec.MaxTime)
					}
				}
				out[c] = append(out[c], prompb.TimeSeries{Labels: append([]prompb.Label(nil), ts.Labels...), Samples: append([]prompb.Sample(nil), ts.Samples...)})
			}
			if samples != int(sec.Samples) {
				t.Errorf("%v section says %d samples, body has %d", c, sec.Samples, samples)
			}
			total += samples
		}
		if total != e.Samples {
			t.Errorf("record %d: buffer frame says %d samples, sections %d", e.Index, e.Samples, total)
		}
		idx = e.Next
	}
}

func counter(t *testing.T, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, _ := g.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return 0
}

func TestAcceptStampsStoreAndClassifies(t *testing.T) {
	f := newFixture(t, Options{})
	wr := &prompb.WriteRequest{Timeseries: fleetsim.NewTill("other-store", "till-1", 1).AppendSeries(nil, 1_700_000_000_000)}
	wr.Timeseries = append(wr.Timeseries, ser(5, "__name__", "zz", "device", "till-1")) // no store label, sorts before it
	for _, enc := range []string{"snappy", "zstd"} {
		t.Run(enc, func(t *testing.T) {
			c, err := remotewrite.NewClient(remotewrite.ClientOptions{URL: f.url, Encoding: enc})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Send(context.Background(), wr.MarshalProtobuf(nil)); err != nil {
				t.Fatal(err)
			}
		})
	}
	got := inboxSeries(t, f.inbox)
	if n := seal.InboxQueue(f.inbox).NextIndex(); n != 2 {
		t.Errorf("%d inbox records for 2 requests of every class, want one per request", n)
	}
	n := 0
	for c, tss := range got {
		for _, ts := range tss {
			n++
			stores := 0
			for i, l := range ts.Labels {
				if l.Name == StoreLabel {
					stores++
					if l.Value != "s1" {
						t.Errorf("store label %q, want s1", l.Value)
					}
				}
				if i > 0 && ts.Labels[i-1].Name >= l.Name {
					t.Errorf("labels out of order: %v", ts.Labels)
				}
			}
			if stores != 1 {
				t.Errorf("%d store labels in %v", stores, ts.Labels)
			}
			if want := f.h.rules.Classify(ts.Labels); want != c {
				t.Errorf("series %v in %v, rules say %v", ts.Labels, c, want)
			}
		}
	}
	if want := 2 * len(wr.Timeseries); n != want {
		t.Errorf("%d series in the inbox, want %d", n, want)
	}
	if len(got[wire.ClassCritical]) == 0 || len(got[wire.ClassBulk]) == 0 {
		t.Errorf("classes: %d critical, %d bulk", len(got[wire.ClassCritical]), len(got[wire.ClassBulk]))
	}
}

func TestReject(t *testing.T) {
	good := encode(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{ser(1, "__name__", "up", "device", "t1")}})
	two := func(a, b prompb.TimeSeries) []byte {
		return encode(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{a, b}})
	}
	noSamples := ser(1, "__name__", "up")
	noSamples.Samples = nil
	for _, tc := range []struct {
		name    string
		opts    Options
		prepare func(t *testing.T, f *fixture)
		body    []byte
		hdr     map[string]string
		code    int
		reason  string
		samples float64
	}{
		{name: "missing_token", opts: Options{Tokens: NewTokens("secret")}, body: good, code: 401, reason: ReasonUnauthorized},
		{name: "wrong_token", opts: Options{Tokens: NewTokens("secret")}, body: good, hdr: map[string]string{"Authorization": "Bearer secreT"}, code: 401, reason: ReasonUnauthorized},
		{name: "other_proto", body: good, hdr: map[string]string{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v3.Request"}, code: 415, reason: ReasonUnsupported},
		{name: "json_body", body: []byte("{}"), hdr: map[string]string{"Content-Type": "application/json"}, code: 415, reason: ReasonUnsupported},
		{name: "body_over_limit", opts: Options{MaxBodyBytes: 16}, body: good, code: 413, reason: ReasonTooLarge},
		{name: "bad_snappy", body: []byte("not snappy at all"), code: 400, reason: ReasonBadEncoding},
		{name: "unknown_encoding", body: good, hdr: map[string]string{"Content-Encoding": "gzip"}, code: 400, reason: ReasonBadEncoding},
		{name: "bad_protobuf", body: snappy.Encode(nil, []byte{0x0a, 0xff, 0xff, 0x01}), code: 400, reason: ReasonBadProtobuf},
		{name: "invalid_label_name", body: two(ser(1, "__name__", "up"), ser(1, "__name__", "up", "bad-name", "x")), code: 400, reason: ReasonLabels, samples: 2},
		{name: "duplicate_label", body: two(ser(1, "__name__", "up"), ser(1, "__name__", "up", "a", "x", "a", "y")), code: 400, reason: ReasonLabels, samples: 2},
		{name: "label_value_not_utf8", body: two(ser(1, "__name__", "up"), ser(1, "__name__", "up", "a", "\xff")), code: 400, reason: ReasonLabels, samples: 2},
		{name: "series_without_samples", body: two(ser(1, "__name__", "up"), noSamples), code: 400, reason: ReasonNoSamples, samples: 1},
		{name: "inbox_full", opts: Options{InboxMaxBytes: 1}, body: good, code: 429, reason: ReasonInboxFull, samples: 1},
		{name: "every_series_over_device_limit", opts: Options{MaxSeriesPerDevice: 1},
			prepare: func(t *testing.T, f *fixture) {
				if code, body, _ := f.post(t, encode(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{ser(1, "__name__", "other", "device", "t1")}}), nil); code != 204 {
					t.Fatalf("first series: %d %s", code, body)
				}
			},
			body: good, code: 400, reason: ReasonSeriesLimit, samples: 1},
		{name: "shutting_down", prepare: func(t *testing.T, f *fixture) { f.h.Close() }, body: good, code: 503, reason: ReasonShutdown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.opts)
			if tc.prepare != nil {
				tc.prepare(t, f)
			}
			before := f.inbox.Bytes()
			code, body, hdr := f.post(t, tc.body, tc.hdr)
			f.checkRejected(t, before, code, body, tc.code, tc.reason, tc.samples)
			if code == 429 && hdr.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			if code == 401 && hdr.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}

// checkRejected checks a refused request's answer (code, one line starting
// with the reason), its counters, and that the inbox, before bytes before
// it, did not grow.
func (f *fixture) checkRejected(t *testing.T, before int64, code int, body string, wantCode int, reason string, samples float64) {
	t.Helper()
	if code != wantCode || !strings.HasPrefix(body, reason+": ") || strings.Count(strings.TrimSpace(body), "\n") > 0 {
		t.Fatalf("got %d %q, want %d with one line starting %q", code, body, wantCode, reason)
	}
	if got := counter(t, f.reg, "requests_rejected_total", "reason", reason); got != 1 {
		t.Errorf("requests_rejected_total{reason=%q} = %v, want 1", reason, got)
	}
	if got := counter(t, f.reg, "samples_rejected_total", "reason", reason); got != samples {
		t.Errorf("samples_rejected_total{reason=%q} = %v, want %v", reason, got, samples)
	}
	if f.inbox.Bytes() != before {
		t.Errorf("the inbox grew from %d to %d bytes on a rejected request", before, f.inbox.Bytes())
	}
}

func TestSeriesLimit(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	f := newFixture(t, Options{MaxSeriesPerDevice: 3, SeriesWindow: time.Hour, Now: func() time.Time { return now }})
	send := func(device string, names ...string) (int, string) {
		wr := &prompb.WriteRequest{}
		for _, n := range names {
			wr.Timeseries = append(wr.Timeseries, ser(now.UnixMilli(), "__name__", n, "device", device))
		}
		code, body, _ := f.post(t, encode(wr), nil)
		return code, body
	}
	inboxCount := func() int {
		n := 0
		for _, tss := range inboxSeries(t, f.inbox) {
			n += len(tss)
		}
		return n
	}
	steps := []struct {
		name    string
		device  string
		series  []string
		code    int
		inbox   int // series in the inbox after the step
		limited float64
	}{
		{"under_limit_accepted", "t1", []string{"a", "b"}, 204, 2, 0},
		{"known_flow_new_cut_at_limit", "t1", []string{"a", "b", "c", "d"}, 204, 5, 1},
		{"only_new_series_is_400", "t1", []string{"e"}, 400, 5, 2},
		{"other_device_has_its_own_limit", "t2", []string{"e", "f", "g"}, 204, 8, 2},
		{"known_series_still_flow", "t1", []string{"a", "b", "c"}, 204, 11, 2},
	}
	for _, s := range steps {
		code, body := send(s.device, s.series...)
		if code != s.code {
			t.Fatalf("%s: %d %s, want %d", s.name, code, body, s.code)
		}
		if n := inboxCount(); n != s.inbox {
			t.Fatalf("%s: %d series in the inbox, want %d", s.name, n, s.inbox)
		}
		if got := counter(t, f.reg, "samples_rejected_total", "reason", ReasonSeriesLimit); got != s.limited {
			t.Fatalf("%s: series_limit counted %v samples, want %v", s.name, got, s.limited)
		}
	}
	// A whole window later the old series have aged out.
	now = now.Add(61 * time.Minute)
	if code, body := send("t1", "x", "y", "z"); code != 204 {
		t.Fatalf("after the window: %d %s", code, body)
	}
	if code, body := send("t1", "a"); code != 400 {
		t.Fatalf("a series forgotten a window ago is new again: %d %s, want 400", code, body)
	}
}

func TestDeviceFallsBackToInstanceThenAddress(t *testing.T) {
	f := newFixture(t, Options{MaxSeriesPerDevice: 1})
	for i, tc := range []struct {
		ts   prompb.TimeSeries
		code int
	}{
		{ser(1, "__name__", "a", "instance", "i1"), 204},
		{ser(1, "__name__", "b", "instance", "i1"), 400}, // same instance
		{ser(1, "__name__", "b", "instance", "i2"), 204},
		{ser(1, "__name__", "c"), 204}, // client address
		{ser(1, "__name__", "d"), 400},
	} {
		if code, body, _ := f.post(t, encode(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{tc.ts}}), nil); code != tc.code {
			t.Errorf("step %d: %d %s, want %d", i, code, body, tc.code)
		}
	}
}

func TestLoadTokens(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "tokens")
	os.WriteFile(p, []byte("# till tokens\n\n  tok-a  \ntok-b\n"), 0o600)
	tk, err := LoadTokens(p)
	if err != nil {
		t.Fatal(err)
	}
	for tok, want := range map[string]bool{"tok-a": true, "tok-b": true, "tok-c": false, "": false, "# till tokens": false} {
		if tk.Valid(tok) != want {
			t.Errorf("Valid(%q) = %v", tok, !want)
		}
	}
	os.WriteFile(p, []byte("# nothing\n"), 0o600)
	if _, err := LoadTokens(p); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("empty tokens file: %v", err)
	}
}

func TestAppendAllocs(t *testing.T) {
	till := fleetsim.NewTill("s1", "till-1", 1)
	wr := &prompb.WriteRequest{Timeseries: till.AppendSeries(nil, 1_700_000_000_000)}
	var rec record
	allocs := testing.AllocsPerRun(100, func() {
		rec.reset()
		for i := range wr.Timeseries {
			rec.appendSeries(rec.hdr.Section(wire.Class(1+i%3)), wr.Timeseries[i].Labels, wr.Timeseries[i].Samples, "s1")
		}
	})
	if allocs > 0 {
		t.Errorf("%v allocations per request encoding, want 0", allocs)
	}
}

func BenchmarkIntake(b *testing.B) {
	for _, tills := range []int{1, 20} {
		b.Run(fmt.Sprintf("tills=%d", tills), func(b *testing.B) {
			inbox, err := seal.OpenInbox(b.TempDir(), seal.InboxOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer inbox.Close()
			h, err := New(Options{Store: "s1", Inbox: inbox, InboxMaxBytes: 1 << 40})
			if err != nil {
				b.Fatal(err)
			}
			var bodies [][]byte
			for i := range tills {
				till := fleetsim.NewTill("s1", fmt.Sprintf("till-%d", i), int64(i))
				bodies = append(bodies, encode(&prompb.WriteRequest{Timeseries: till.AppendSeries(nil, 1_700_000_000_000)}))
			}
			samples := 0
			b.ReportAllocs()
			for b.Loop() {
				for _, body := range bodies {
					r := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body))
					w := httptest.NewRecorder()
					h.ServeHTTP(w, r)
					if w.Code != 204 {
						b.Fatalf("%d %s", w.Code, w.Body)
					}
					samples += 400
				}
			}
			b.ReportMetric(float64(samples)/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(inbox.Bytes())/float64(samples), "inbox-bytes/sample") // never committed here: every record
		})
	}
}
