package seal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	dto "github.com/prometheus/client_model/go"

	"tillpipe/internal/wire"
)

// testBodies returns a header and bodies with n series in critical, none in
// normal and 2n in bulk, the way the intake lays them out.
func testBodies(n int) (RecordHeader, []byte) {
	var h RecordHeader
	var bodies []byte
	for _, c := range wire.Classes {
		k := map[wire.Class]int{wire.ClassCritical: n, wire.ClassBulk: 2 * n}[c]
		var wr prompb.WriteRequest
		for i := range k {
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: "container_cpu_usage_seconds_total"}, {Name: "container", Value: fmt.Sprintf("svc-%d", i)}, {Name: "device", Value: "till-01"}},
				Samples: []prompb.Sample{{Value: float64(i), Timestamp: int64(1000 + i)}},
			})
		}
		start := len(bodies)
		bodies = wr.MarshalProtobuf(bodies)
		if k > 0 {
			*h.Section(c) = RecordSection{Series: uint32(k), Samples: uint32(k), MinTime: 1000, MaxTime: int64(1000 + k - 1), Len: uint32(len(bodies) - start)}
		}
	}
	return h, bodies
}

func TestRecordRoundTrip(t *testing.T) {
	h, bodies := testBodies(50)
	prefix := []byte("kept")
	rec := AppendRecord(bytes.Clone(prefix), &h, bodies)
	if !bytes.Equal(rec[:len(prefix)], prefix) {
		t.Fatal("AppendRecord changed what dst held")
	}
	rec = rec[len(prefix):]
	if len(rec) >= len(bodies)/2 {
		t.Errorf("record of %d bytes for %d bytes of bodies: not compressed", len(rec), len(bodies))
	}
	got, err := ParseRecordHeader(rec)
	if err != nil {
		t.Fatal(err)
	}
	off := 0
	for _, c := range wire.Classes {
		want := h.Section(c)
		if *got.Section(c) != *want {
			t.Errorf("%v: header %+v, want %+v", c, *got.Section(c), *want)
		}
		sec, body, err := AppendBody([]byte("x"), rec, c)
		if err != nil {
			t.Fatal(err)
		}
		if sec != *want {
			t.Errorf("%v: AppendBody section %+v, want %+v", c, sec, *want)
		}
		wantBody := bodies[off : off+int(want.Len)]
		off += int(want.Len)
		if !bytes.Equal(body, append([]byte("x"), wantBody...)) {
			t.Errorf("%v: body of %d bytes, want x + %d bytes", c, len(body), len(wantBody))
		}
	}
}

// TestRecordV2 reads a record with uncompressed bodies, as a relay before
// compression wrote them.
func TestRecordV2(t *testing.T) {
	h, bodies := testBodies(3)
	for k := range h.Sections {
		h.Sections[k].Stored = h.Sections[k].Len
	}
	rec := make([]byte, RecordHeaderLen, RecordHeaderLen+len(bodies))
	putHeader(rec, &h, recordVersionV2)
	rec = append(rec, bodies...)
	off := 0
	for _, c := range wire.Classes {
		sec, body, err := AppendBody(nil, rec, c)
		if err != nil {
			t.Fatal(err)
		}
		if sec != *h.Section(c) {
			t.Errorf("%v: section %+v, want %+v", c, sec, *h.Section(c))
		}
		if !bytes.Equal(body, bodies[off:off+int(sec.Len)]) {
			t.Errorf("%v: body differs", c)
		}
		off += int(sec.Len)
	}
}

func TestRecordHostile(t *testing.T) {
	h, bodies := testBodies(20)
	good := AppendRecord(nil, &h, bodies)
	le := binary.LittleEndian
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	critical := RecordHeaderLen // the critical body's first byte
	for _, tc := range []struct {
		name string
		rec  []byte
	}{
		{"empty", nil},
		{"short header", good[:RecordHeaderLen-1]},
		{"truncated body", good[:len(good)-1]},
		{"trailing byte", append(bytes.Clone(good), 0)},
		{"version 1", mut(func(b []byte) []byte { b[0] = 1; return b })},
		{"version 4", mut(func(b []byte) []byte { b[0] = 4; return b })},
		{"stored without length", mut(func(b []byte) []byte { le.PutUint32(b[4+24:], 0); return b })},
		{"length without stored", mut(func(b []byte) []byte {
			le.PutUint32(b[4+sectionLen+24:], 10) // normal is empty
			return b
		})},
		{"length disagrees with the block", mut(func(b []byte) []byte { le.PutUint32(b[4+24:], le.Uint32(b[4+24:])+1); return b })},
		{"corrupt block", mut(func(b []byte) []byte {
			for i := critical + 3; i < critical+int(h.Sections[0].Stored); i++ {
				b[i] = 0xff
			}
			return b
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			for _, c := range wire.Classes {
				if _, _, err = AppendBody(nil, tc.rec, c); err != nil {
					break
				}
			}
			if !errors.Is(err, ErrBadRecord) {
				t.Fatalf("AppendBody = %v, want ErrBadRecord", err)
			}
		})
	}
}

// FuzzAppendBody feeds arbitrary records to the reader: it returns an error
// wrapping ErrBadRecord or a body of the length its section states, and
// never panics or allocates beyond the record's claims. Seeds:
// testdata/fuzz/FuzzAppendBody.
func FuzzAppendBody(f *testing.F) {
	h, bodies := testBodies(4)
	f.Add(AppendRecord(nil, &h, bodies))
	f.Fuzz(func(t *testing.T, rec []byte) {
		for _, c := range wire.Classes {
			sec, body, err := AppendBody(nil, rec, c)
			if err != nil {
				if !errors.Is(err, ErrBadRecord) {
					t.Fatalf("%v: error %v does not wrap ErrBadRecord", c, err)
				}
				continue
			}
			if len(body) != int(sec.Len) {
				t.Fatalf("%v: body of %d bytes, section says %d", c, len(body), sec.Len)
			}
		}
	})
}

// TestSealSkipsUnreadableRecord: an inbox record the buffer returns intact
// but that does not parse (which only a disk lying past the buffer's CRC or
// a relay bug could write) is skipped by the classes it fails for and
// counted; the records around it are sealed once each and the inbox is
// committed past it.
func TestSealSkipsUnreadableRecord(t *testing.T) {
	e := openEnv(t, t.TempDir())
	in := InboxQueue(e.inbox)
	appendRecords(t, in, wire.ClassNormal, 1, 6)
	good, _ := record(wire.ClassNormal, "m", 100)
	badVersion := bytes.Clone(good)
	badVersion[0] = 9             // every class fails to read the header
	badBlock := bytes.Clone(good) // normal's body does not decompress to the length its section says
	lenAt := 4 + sectionLen*(int(wire.ClassNormal)-1) + 24
	binary.LittleEndian.PutUint32(badBlock[lenAt:], binary.LittleEndian.Uint32(badBlock[lenAt:])+1)
	for _, rec := range [][]byte{badVersion, badBlock} {
		if _, err := in.Append(t.Context(), rec, 1); err != nil {
			t.Fatal(err)
		}
	}
	appendRecords(t, in, wire.ClassNormal, 6, 11)
	s, err := New(filepath.Join(e.dir, "seal"), e.inbox, e.outbox, Options{Store: "s1", Normal: Limits{MaxBytes: 1 << 20, MaxAge: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	_, samples := frames(t, Queue(e.outbox.Group, wire.ClassNormal))
	for ts := int64(1); ts <= 10; ts++ {
		if samples[ts] != 1 {
			t.Errorf("sample %d sealed %d times", ts, samples[ts])
		}
	}
	if len(samples) != 10 {
		t.Errorf("sealed samples at %d timestamps, want 10: %v", len(samples), samples)
	}
	want := map[wire.Class]float64{wire.ClassCritical: 1, wire.ClassNormal: 2, wire.ClassBulk: 1}
	for c, n := range want {
		var m dto.Metric
		if err := s.m.errors.WithLabelValues(c.String()).Write(&m); err != nil {
			t.Fatal(err)
		}
		if got := m.GetCounter().GetValue(); got != n {
			t.Errorf("seal_errors_total{class=%s} = %v, want %v", c, got, n)
		}
	}
	if c := in.Committed(); c != 12 {
		t.Errorf("inbox committed %d, want 12 (past the unreadable records)", c)
	}
}
