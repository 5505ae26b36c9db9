package wire

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"slices"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

// staleNaN is Prometheus's staleness marker, a NaN with a payload that must
// survive the trip bit for bit.
var staleNaN = math.Float64frombits(0x7ff0000000000002)

// fixedRequest is the input of the golden vectors. Do not change it without
// regenerating them (go test ./internal/wire/ -run TestGolden -update).
func fixedRequest() *prompb.WriteRequest {
	lbl := func(kv ...string) []prompb.Label {
		var ls []prompb.Label
		for i := 0; i < len(kv); i += 2 {
			ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
		}
		return ls
	}
	const t0 = 1_767_225_600_000 // 2026-01-01T00:00:00Z
	var tss []prompb.TimeSeries
	for _, c := range []string{"payment-gateway", "pos-ui", "auth-agent"} {
		tss = append(tss, prompb.TimeSeries{
			Labels: lbl("__name__", "container_cpu_usage_seconds_total", "container", c,
				"device", "till-07", "image", "registry.retail.example/pos/"+c+":1.42.3", "store", "s0042"),
			Samples: []prompb.Sample{{Value: 1234.5, Timestamp: t0}, {Value: 1234.75, Timestamp: t0 + 15_000}, {Value: 1235.125, Timestamp: t0 + 30_000}},
		}, prompb.TimeSeries{
			Labels: lbl("__name__", "container_memory_working_set_bytes", "container", c,
				"device", "till-07", "image", "registry.retail.example/pos/"+c+":1.42.3", "store", "s0042"),
			Samples: []prompb.Sample{{Value: 73_400_320, Timestamp: t0}, {Value: 73_531_392, Timestamp: t0 + 15_000}, {Value: staleNaN, Timestamp: t0 + 30_000}},
		})
	}
	tss = append(tss,
		prompb.TimeSeries{
			Labels:  lbl("__name__", "node_load1", "device", "till-07", "store", "s0042"),
			Samples: []prompb.Sample{{Value: -0, Timestamp: t0 - 5}, {Value: math.Inf(1), Timestamp: t0 + 45_000}},
		},
		prompb.TimeSeries{Labels: lbl("__name__", "till_no_samples", "device", "till-07", "store", "s0042")},
		prompb.TimeSeries{Labels: lbl("__name__", "ünïcödé_label_value", "device", "till-07", "note", "naïve ☃\x00end", "store", "s0042"),
			Samples: []prompb.Sample{{Value: -1e-300, Timestamp: t0 + 1}}},
	)
	md := []prompb.MetricMetadata{{Type: 1, MetricFamilyName: "container_cpu_usage_seconds_total", Help: "Cumulative cpu time consumed in seconds.", Unit: "seconds"}}
	return &prompb.WriteRequest{Timeseries: tss, Metadata: md}
}

// fixedHeader is the caller-set part of the golden vectors' header.
func fixedHeader(c Codec) Header {
	return Header{
		Codec:       c,
		Class:       ClassNormal,
		Store:       "s0042",
		Relay:       "relay-s0042-a",
		Seq:         7,
		FirstRecord: 100,
		LastRecord:  164,
	}
}

var codecs = []Codec{CodecNone, CodecSnappy, CodecZstd}

// encode is AppendBatch that fails the test on error.
func encode(t testing.TB, h Header, wr *prompb.WriteRequest) ([]byte, Header) {
	t.Helper()
	frame, err := AppendBatch(nil, &h, wr)
	if err != nil {
		t.Fatalf("AppendBatch: %v", err)
	}
	return frame, h
}

// requireEqualRequest compares every label and sample; sample values by bits,
// so NaN payloads and negative zero count.
func requireEqualRequest(t testing.TB, got, want *prompb.WriteRequest) {
	t.Helper()
	if len(got.Timeseries) != len(want.Timeseries) {
		t.Fatalf("%d series, want %d", len(got.Timeseries), len(want.Timeseries))
	}
	for i := range want.Timeseries {
		g, w := got.Timeseries[i], want.Timeseries[i]
		if len(g.Labels) != len(w.Labels) {
			t.Fatalf("series %d: labels %v, want %v", i, g.Labels, w.Labels)
		}
		for j := range w.Labels {
			if g.Labels[j] != w.Labels[j] {
				t.Fatalf("series %d label %d: %q=%q, want %q=%q", i, j, g.Labels[j].Name, g.Labels[j].Value, w.Labels[j].Name, w.Labels[j].Value)
			}
		}
		if len(g.Samples) != len(w.Samples) {
			t.Fatalf("series %d: %d samples, want %d", i, len(g.Samples), len(w.Samples))
		}
		for j := range w.Samples {
			gs, ws := g.Samples[j], w.Samples[j]
			if gs.Timestamp != ws.Timestamp || math.Float64bits(gs.Value) != math.Float64bits(ws.Value) {
				t.Fatalf("series %d sample %d: %v@%d, want %v@%d", i, j, gs.Value, gs.Timestamp, ws.Value, ws.Timestamp)
			}
		}
	}
	if !slices.Equal(got.Metadata, want.Metadata) {
		t.Fatalf("metadata %+v, want %+v", got.Metadata, want.Metadata)
	}
}

// reseal recomputes the header CRC of frame after a test edited its header.
func reseal(frame []byte) []byte {
	hlen := int(binary.LittleEndian.Uint16(frame[offHeaderLen:]))
	binary.LittleEndian.PutUint32(frame[hlen-crcLen:], crc32.Checksum(frame[:hlen-crcLen], castagnoli))
	return frame
}

// resealAll recomputes the payload length and CRC, then the header CRC, after
// a test replaced the payload.
func resealAll(frame []byte) []byte {
	hlen := int(binary.LittleEndian.Uint16(frame[offHeaderLen:]))
	binary.LittleEndian.PutUint32(frame[offPayloadLen:], uint32(len(frame)-hlen))
	binary.LittleEndian.PutUint32(frame[offCRC:], crc32.Checksum(frame[hlen:], castagnoli))
	return reseal(frame)
}

func TestClass_StringParse(t *testing.T) {
	for _, c := range Classes {
		got, err := ParseClass(c.String())
		if err != nil || got != c {
			t.Errorf("ParseClass(%q) = %v, %v; want %v", c.String(), got, err, c)
		}
	}
	if s := Class(9).String(); s != "class(9)" {
		t.Errorf("Class(9).String() = %q", s)
	}
	if _, err := ParseClass("urgent"); !errors.Is(err, ErrUnknownClass) {
		t.Errorf("ParseClass(urgent) error %v, want ErrUnknownClass", err)
	}
	if Classes[0] != ClassCritical || Classes[2] != ClassBulk {
		t.Errorf("Classes %v not in priority order", Classes)
	}
}

func TestCodec_StringParse(t *testing.T) {
	for _, c := range codecs {
		got, err := ParseCodec(c.String())
		if err != nil || got != c {
			t.Errorf("ParseCodec(%q) = %v, %v; want %v", c.String(), got, err, c)
		}
	}
	if s := Codec(7).String(); s != "codec(7)" {
		t.Errorf("Codec(7).String() = %q", s)
	}
	if _, err := ParseCodec("lz4"); !errors.Is(err, ErrUnknownCodec) {
		t.Errorf("ParseCodec(lz4) error %v, want ErrUnknownCodec", err)
	}
}

func TestRoundTrip(t *testing.T) {
	wr := fixedRequest()
	for _, c := range codecs {
		t.Run(c.String(), func(t *testing.T) {
			frame, h := encode(t, fixedHeader(c), wr)
			raw := wr.MarshalProtobuf(nil)
			want := Header{
				Version: 0x0100, Codec: c, Payload: PayloadRemoteWriteV1, Class: ClassNormal,
				Store: "s0042", Relay: "relay-s0042-a", Seq: 7, FirstRecord: 100, LastRecord: 164,
				MinTime: 1_767_225_600_000 - 5, MaxTime: 1_767_225_600_000 + 45_000,
				Series: 9, Samples: 21, RawLen: uint32(len(raw)),
				PayloadLen: h.PayloadLen, CRC: h.CRC,
			}
			if h != want {
				t.Fatalf("encoder filled header\n%+v, want\n%+v", h, want)
			}
			if hlen := len(frame) - int(h.PayloadLen); hlen != 80+len(h.Store)+len(h.Relay) {
				t.Fatalf("header of %d bytes, want %d", hlen, 80+len(h.Store)+len(h.Relay))
			}
			if c != CodecNone && h.PayloadLen >= h.RawLen {
				t.Errorf("%s payload %d bytes, not smaller than raw %d", c, h.PayloadLen, h.RawLen)
			}
			parsed, err := ParseHeader(frame)
			if err != nil || parsed != h {
				t.Fatalf("ParseHeader = %+v, %v; want %+v", parsed, err, h)
			}
			b, err := NewDecoder(DecoderOptions{}).Decode(frame)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if b.Header != h {
				t.Fatalf("decoded header\n%+v, want\n%+v", b.Header, h)
			}
			requireEqualRequest(t, b.Request, wr)
		})
	}
}

// TestDecode_BatchOutlivesFrame checks that a decoded batch does not point
// into the frame: the ingester hands the message buffer back right away.
func TestDecode_BatchOutlivesFrame(t *testing.T) {
	for _, c := range codecs {
		t.Run(c.String(), func(t *testing.T) {
			frame, _ := encode(t, fixedHeader(c), fixedRequest())
			b, err := NewDecoder(DecoderOptions{}).Decode(frame)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			clear(frame)
			requireEqualRequest(t, b.Request, fixedRequest())
			if b.Header.Store != "s0042" {
				t.Fatalf("store %q after the frame was cleared", b.Header.Store)
			}
		})
	}
}

// TestDecoder_Reuse decodes batches of different stores and sizes with one
// Decoder, as an ingester does, and checks none leaks into the next.
func TestDecoder_Reuse(t *testing.T) {
	d := NewDecoder(DecoderOptions{})
	big := fixedRequest()
	small := &prompb.WriteRequest{Timeseries: big.Timeseries[:1]}
	for i, tc := range []struct {
		store string
		wr    *prompb.WriteRequest
	}{{"s0001", big}, {"s0001", small}, {"s0002", big}, {"s0002", &prompb.WriteRequest{}}, {"s0001", small}} {
		h := fixedHeader(Codec(i % 3))
		h.Store = tc.store
		frame, want := encode(t, h, tc.wr)
		b, err := d.Decode(frame)
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if b.Header != want {
			t.Fatalf("batch %d: header %+v, want %+v", i, b.Header, want)
		}
		requireEqualRequest(t, b.Request, tc.wr)
	}
}

func TestAppendBatch_AppendsToDst(t *testing.T) {
	prefix := []byte("existing")
	dst := append(make([]byte, 0, 4096), prefix...)
	for _, c := range codecs {
		h := fixedHeader(c)
		out, err := AppendBatch(dst, &h, fixedRequest())
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if string(out[:len(prefix)]) != string(prefix) {
			t.Fatalf("%s: prefix overwritten", c)
		}
		if _, err := NewDecoder(DecoderOptions{}).Decode(out[len(prefix):]); err != nil {
			t.Fatalf("%s: appended frame does not decode: %v", c, err)
		}
	}
}

func TestAppendBatch_InvalidHeader(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Header)
		want error
	}{
		{"unknown_codec", func(h *Header) { h.Codec = 3 }, ErrUnknownCodec},
		{"zero_class", func(h *Header) { h.Class = 0 }, ErrUnknownClass},
		{"unknown_class", func(h *Header) { h.Class = 4 }, ErrUnknownClass},
		{"empty_store", func(h *Header) { h.Store = "" }, ErrInvalidHeader},
		{"store_with_dot", func(h *Header) { h.Store = "s0042.critical" }, ErrInvalidHeader},
		{"store_over_255_bytes", func(h *Header) { h.Store = string(make([]byte, 256)) }, ErrInvalidHeader},
		{"relay_with_space", func(h *Header) { h.Relay = "relay a" }, ErrInvalidHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fixedHeader(CodecZstd)
			tt.edit(&h)
			dst := []byte("keep")
			out, err := AppendBatch(dst, &h, fixedRequest())
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if string(out) != "keep" {
				t.Fatalf("dst changed to %q on error", out)
			}
		})
	}
	h := fixedHeader(CodecZstd)
	if _, err := AppendFrame(nil, &h, nil); !errors.Is(err, ErrUnknownPayload) {
		t.Fatalf("AppendFrame without payload format: %v, want ErrUnknownPayload", err)
	}
}

func TestAppendFrame_MatchesAppendBatch(t *testing.T) {
	wr := fixedRequest()
	for _, c := range codecs {
		want, wh := encode(t, fixedHeader(c), wr)
		h := wh
		h.Version, h.RawLen, h.PayloadLen, h.CRC = 0, 0, 0, 0
		got, err := AppendFrame(nil, &h, wr.MarshalProtobuf(nil))
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if string(got) != string(want) || h != wh {
			t.Fatalf("%s: AppendFrame and AppendBatch differ", c)
		}
	}
}

func TestAppendBatch_EmptyRequest(t *testing.T) {
	for _, c := range codecs {
		frame, h := encode(t, fixedHeader(c), &prompb.WriteRequest{})
		if h.Series != 0 || h.Samples != 0 || h.MinTime != 0 || h.MaxTime != 0 || h.RawLen != 0 {
			t.Fatalf("%s: header %+v for an empty request", c, h)
		}
		b, err := NewDecoder(DecoderOptions{}).Decode(frame)
		if err != nil || len(b.Request.Timeseries) != 0 {
			t.Fatalf("%s: Decode = %v, %v", c, b, err)
		}
	}
}
