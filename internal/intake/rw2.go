package intake

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/VictoriaMetrics/easyproto"
	"github.com/prometheus/client_golang/prometheus"

	"tillpipe/internal/remotewrite"
)

// Remote-write 2.0 (https://prometheus.io/docs/specs/prw/remote_write_spec_2_0/).
//
// A 2.0 body is an io.prometheus.write.v2.Request:
//
//	Request    { repeated string symbols = 4; repeated TimeSeries timeseries = 5; reserved 1 to 3; }
//	TimeSeries { repeated uint32 labels_refs = 1 (packed); repeated Sample samples = 2;
//	             repeated Histogram histograms = 3; repeated Exemplar exemplars = 4;
//	             Metadata metadata = 5; int64 created_timestamp = 6 (release candidates; now reserved) }
//	Sample     { double value = 1; int64 timestamp = 2; int64 start_timestamp = 3 }
//	Exemplar   { repeated uint32 labels_refs = 1; double value = 2; int64 timestamp = 3 }
//	Metadata   { MetricType type = 1; uint32 help_ref = 3; uint32 unit_ref = 4 }
//
// Every string is an index into symbols, whose first element must be "".
// [request.convertV2] turns such a body into the remote-write 1.0
// WriteRequest of its float series, encoded as [appendLabel] and
// [appendSample] do, and the request then takes the 1.0 path unchanged.
//
// What the relay's batches (payload v1: float samples only) cannot carry:
//   - Native histogram samples and exemplars are refused. The spec lets a
//     receiver refuse samples it does not support (400) and forbids a 2xx
//     unless everything it knows of was written, so a request carrying them
//     is a partial write: its float samples are written as usual, and it is
//     answered 400 with the Written headers saying how many (a sender must
//     not retry a 4xx, so nothing is written twice). Refusing the whole
//     request instead would lose the float samples for good, since the
//     sender cannot retry them either.
//   - Series metadata (type, help, unit) and start (created) timestamps are
//     dropped, counted in rw2_dropped_total{part}, and do not stop a 204:
//     the spec counts neither among the written data (Prometheus's own
//     receiver drops metadata by default), and a 1.0 series has no place
//     for them.
//
// Refused histogram samples and exemplars and dropped metadata and start
// timestamps are counted as soon as the body decodes, whatever then
// happens to the request's float samples (as samples_rejected_total counts
// every refused attempt).

// protoV2 is the proto parameter of a remote-write 2.0 Content-Type.
const protoV2 = "io.prometheus.write.v2.Request"

// The response headers of remote-write 2.0: how many of each were written.
const (
	headerSamplesWritten    = "X-Prometheus-Remote-Write-Samples-Written"
	headerHistogramsWritten = "X-Prometheus-Remote-Write-Histograms-Written"
	headerExemplarsWritten  = "X-Prometheus-Remote-Write-Exemplars-Written"
)

// Values of the part label of rw2_dropped_total.
const (
	partExemplar       = "exemplar"
	partMetadata       = "metadata"
	partStartTimestamp = "start_timestamp"
)

func newRW2Dropped() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rw2_dropped_total",
		Help: "Parts of remote-write 2.0 series the relay does not forward, by part: exemplar (the request is answered 400, its float samples written), metadata (series with metadata) and start_timestamp (samples with a start or created timestamp), both dropped. Native histogram samples count in samples_rejected_total{reason=\"native_histograms\"}.",
	}, []string{"part"})
	for _, p := range []string{partExemplar, partMetadata, partStartTimestamp} {
		c.WithLabelValues(p)
	}
	return c
}

// checkEncodingV2 returns why the Content-Encoding of a remote-write 2.0
// request is refused, or "". The spec asks 415 for an encoding the
// receiver does not support (1.0 requests get 400 bad_encoding, as they
// always did). The encodings are those of [remotewrite.Decompress].
func checkEncodingV2(enc string) string {
	switch strings.ToLower(strings.TrimSpace(enc)) {
	case "", "snappy", "zstd":
		return ""
	}
	return fmt.Sprintf("content-encoding %q not supported: want snappy or zstd", enc)
}

// setWritten sets the Written headers of a remote-write 2.0 answer.
func setWritten(h http.Header, samples int) {
	h.Set(headerSamplesWritten, strconv.Itoa(samples))
	h.Set(headerHistogramsWritten, "0")
	h.Set(headerExemplarsWritten, "0")
}

// v2Scratch is a request's remote-write 2.0 state, pooled with it.
type v2Scratch struct {
	raw     []byte          // the 2.0 body once rq.body holds its conversion; else a buffer
	symbols []string        // point into the 2.0 body
	refs    []uint32        // one series' or exemplar's labels_refs
	samples []prompb.Sample // one series' float samples
}

// big reports whether the scratch is too large to keep in the pool.
func (v *v2Scratch) big() bool {
	return cap(v.raw) > maxPooledBytes || cap(v.symbols)*16 > maxPooledBytes ||
		cap(v.refs)*4 > maxPooledBytes || cap(v.samples)*16 > maxPooledBytes
}

// v2Counts is what a remote-write 2.0 request carries beyond its float
// samples.
type v2Counts struct {
	histograms      int // native histogram samples
	exemplars       int
	metadata        int // series with metadata
	startTimestamps int // samples (or series, as created_timestamp) with a start timestamp
}

// serveV2 answers a remote-write 2.0 request whose body rq.body holds,
// decompressed; the Written headers are set (to 0) already.
func (h *Handler) serveV2(w http.ResponseWriter, r *http.Request, rq *request) {
	defer rq.v2.release()
	c, err := rq.convertV2(h.opts.MaxBodyBytes)
	if err != nil {
		if errors.Is(err, remotewrite.ErrTooLarge) {
			h.reject(w, ReasonTooLarge, http.StatusRequestEntityTooLarge, 0, err.Error())
			return
		}
		h.reject(w, ReasonBadProtobuf, http.StatusBadRequest, 0, "unmarshal remote-write 2.0 Request: "+err.Error())
		return
	}
	h.countV2(c)
	if err := rq.decode(); err != nil { // a bug of convertV2's
		h.reject(w, ReasonBadProtobuf, http.StatusBadRequest, 0, "remote-write 2.0 request converted to 1.0: "+err.Error())
		return
	}
	written, limited, ok := h.accept(w, r, rq)
	if !ok {
		return
	}
	setWritten(w.Header(), written)
	if limited == 0 && c.histograms == 0 && c.exemplars == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	// A partial write: accept counted the series limit, countV2 the rest.
	var reason string
	var refused []string
	add := func(why, what string, n int) {
		if n == 0 {
			return
		}
		if reason == "" {
			reason = why
		}
		refused = append(refused, fmt.Sprintf("%d %s", n, what))
	}
	add(ReasonSeriesLimit, fmt.Sprintf("samples of series new to a device at its limit of %d series", h.opts.MaxSeriesPerDevice), limited)
	add(ReasonHistograms, "native histogram samples", c.histograms)
	add(ReasonExemplars, "exemplars", c.exemplars)
	msg := fmt.Sprintf("partial write: %d float samples written; not written: %s (this relay forwards float samples only)", written, strings.Join(refused, ", "))
	h.log.Debug("partial write", "reason", reason, "status", http.StatusBadRequest, "samples", written, "msg", msg)
	http.Error(w, reason+": "+msg, http.StatusBadRequest)
}

// countV2 counts what the relay does not forward of a decoded request.
func (h *Handler) countV2(c v2Counts) {
	if c.histograms > 0 {
		h.rejected.WithLabelValues(ReasonHistograms).Add(float64(c.histograms))
		h.rejectedReqs.WithLabelValues(ReasonHistograms).Inc()
	}
	if c.exemplars > 0 {
		h.rw2Dropped.WithLabelValues(partExemplar).Add(float64(c.exemplars))
		h.rejectedReqs.WithLabelValues(ReasonExemplars).Inc()
	}
	if c.metadata > 0 {
		h.rw2Dropped.WithLabelValues(partMetadata).Add(float64(c.metadata))
	}
	if c.startTimestamps > 0 {
		h.rw2Dropped.WithLabelValues(partStartTimestamp).Add(float64(c.startTimestamps))
	}
}

// release drops the scratch's references into the body.
func (v *v2Scratch) release() {
	clear(v.symbols)
	v.symbols = v.symbols[:0]
}

// convertV2 decodes rq.body, an io.prometheus.write.v2.Request, and
// replaces it by the remote-write 1.0 WriteRequest of its series: labels
// resolved from the symbols, float samples. A series with histogram
// samples and no float sample is left out (its histograms are counted);
// one with neither is kept, without samples, for validate to refuse as
// no_samples. Everything is checked that a conversion relies on or the
// spec requires of the structure (symbols[0] empty, references in range,
// labels_refs in pairs, at least one label, no empty label name, no
// reserved Request field); label names, values and their order are left
// to [validate], as for 1.0. Unknown fields are skipped, as 2.x may add
// optional ones.
//
// Memory is bounded by the body: the symbols table holds a string header
// per symbol (each at least 2 bytes of body), the scratch one series'
// references and samples, and the conversion, where interned strings are
// spelled out, is refused past maxBytes (an error wrapping
// [remotewrite.ErrTooLarge]). Other errors wrap errBadProtobuf.
func (rq *request) convertV2(maxBytes int64) (c v2Counts, err error) {
	v := &rq.v2
	body := rq.body
	v.release()
	var fc easyproto.FieldContext
	for src := body; len(src) > 0; {
		if src, err = nextField(&fc, src, "Request"); err != nil {
			return c, err
		}
		switch fc.FieldNum {
		case 1, 2, 3:
			return c, fmt.Errorf("field %d is reserved in a 2.0 Request (is this a remote-write 1.0 body?): %w", fc.FieldNum, errBadProtobuf)
		case 4:
			s, ok := fc.String()
			if !ok {
				return c, fmt.Errorf("symbol is not a string: %w", errBadProtobuf)
			}
			v.symbols = append(v.symbols, s)
		}
	}
	if len(v.symbols) > 0 && v.symbols[0] != "" {
		return c, fmt.Errorf("symbols[0] is %q, must be empty: %w", truncate(v.symbols[0]), errBadProtobuf)
	}
	out := v.raw[:0]
	for src := body; len(src) > 0; {
		src, _ = fc.NextField(src) // read above
		if fc.FieldNum != 5 {
			continue
		}
		data, ok := fc.MessageData()
		if !ok {
			return c, fmt.Errorf("timeseries is not a message: %w", errBadProtobuf)
		}
		if out, err = v.convertSeries(out, data, &c, maxBytes); err != nil {
			return c, err
		}
	}
	v.raw, rq.body = body, out
	return c, nil
}

// convertSeries appends the 1.0 TimeSeries field of ts, a 2.0 TimeSeries,
// to out, unless it carries histograms only.
func (v *v2Scratch) convertSeries(out, ts []byte, c *v2Counts, maxBytes int64) ([]byte, error) {
	v.refs, v.samples = v.refs[:0], v.samples[:0]
	histograms := 0
	metadata := false
	var fc easyproto.FieldContext
	for len(ts) > 0 {
		var err error
		if ts, err = nextField(&fc, ts, "TimeSeries"); err != nil {
			return out, err
		}
		switch fc.FieldNum {
		case 1:
			var ok bool
			if v.refs, ok = fc.UnpackUint32s(v.refs); !ok {
				return out, fmt.Errorf("labels_refs are not uint32: %w", errBadProtobuf)
			}
		case 2:
			data, ok := fc.MessageData()
			if !ok {
				return out, fmt.Errorf("sample is not a message: %w", errBadProtobuf)
			}
			s, start, err := decodeSampleV2(data)
			if err != nil {
				return out, err
			}
			v.samples = append(v.samples, s)
			if start != 0 {
				c.startTimestamps++
			}
		case 3:
			data, ok := fc.MessageData()
			if !ok {
				return out, fmt.Errorf("histogram is not a message: %w", errBadProtobuf)
			}
			for len(data) > 0 { // refused anyway: its fields are not read, only walked
				if data, err = nextField(&fc, data, "Histogram"); err != nil {
					return out, err
				}
			}
			histograms++
		case 4:
			data, ok := fc.MessageData()
			if !ok {
				return out, fmt.Errorf("exemplar is not a message: %w", errBadProtobuf)
			}
			if err := v.checkExemplar(data); err != nil {
				return out, err
			}
			c.exemplars++
		case 5:
			data, ok := fc.MessageData()
			if !ok {
				return out, fmt.Errorf("metadata is not a message: %w", errBadProtobuf)
			}
			set, err := v.checkMetadata(data)
			if err != nil {
				return out, err
			}
			metadata = metadata || set
		case 6: // created_timestamp of the 2.0 release candidates
			if t, ok := fc.Int64(); ok && t != 0 {
				c.startTimestamps++
			}
		}
	}
	// Labels are checked before the series is counted or left out, so
	// that a malformed series is refused whatever it carries.
	switch {
	case len(v.refs) == 0:
		return out, fmt.Errorf("series without labels: %w", errBadProtobuf)
	case len(v.refs)%2 != 0:
		return out, fmt.Errorf("series with an odd number (%d) of labels_refs: %w", len(v.refs), errBadProtobuf)
	}
	size := int64(0) // of the 1.0 TimeSeries, saturating at maxBytes
	for i := 0; i < len(v.refs); i += 2 {
		name, value, err := v.label(v.refs, i)
		if err != nil {
			return out, err
		}
		if name == "" {
			return out, fmt.Errorf("series with an empty label name (labels_refs[%d]): %w", i, errBadProtobuf)
		}
		n := labelSize(name, value)
		size = min(size+int64(1+sov(uint64(n))+n), maxBytes)
	}
	c.histograms += histograms
	if metadata {
		c.metadata++
	}
	if len(v.samples) == 0 && histograms > 0 {
		return out, nil
	}
	size += int64(samplesSize(v.samples))
	if int64(len(out))+int64(1+sov(uint64(size)))+size > maxBytes {
		return out, fmt.Errorf("the series spelled out as remote-write 1.0 are over %d bytes; send smaller requests: %w", maxBytes, remotewrite.ErrTooLarge)
	}
	out = slices.Grow(out, 1+sov(uint64(size))+int(size))
	out = append(out, 1<<3|2)
	out = binary.AppendUvarint(out, uint64(size))
	for i := 0; i < len(v.refs); i += 2 {
		name, value := v.symbols[v.refs[i]], v.symbols[v.refs[i+1]]
		out = appendLabel(out, name, value, labelSize(name, value))
	}
	for i := range v.samples {
		out = appendSample(out, &v.samples[i])
	}
	return out, nil
}

// label returns the label of refs[i] and refs[i+1].
func (v *v2Scratch) label(refs []uint32, i int) (name, value string, err error) {
	for j := i; j < i+2; j++ {
		if int64(refs[j]) >= int64(len(v.symbols)) {
			return "", "", fmt.Errorf("labels_refs[%d] = %d, outside the %d symbols: %w", j, refs[j], len(v.symbols), errBadProtobuf)
		}
	}
	return v.symbols[refs[i]], v.symbols[refs[i+1]], nil
}

func decodeSampleV2(src []byte) (s prompb.Sample, start int64, err error) {
	var fc easyproto.FieldContext
	for len(src) > 0 {
		if src, err = nextField(&fc, src, "Sample"); err != nil {
			return s, 0, err
		}
		ok := true
		switch fc.FieldNum {
		case 1:
			s.Value, ok = fc.Double()
		case 2:
			s.Timestamp, ok = fc.Int64()
		case 3:
			start, ok = fc.Int64()
		}
		if !ok {
			return s, 0, fmt.Errorf("sample field %d of the wrong type: %w", fc.FieldNum, errBadProtobuf)
		}
	}
	return s, start, nil
}

// checkExemplar checks an Exemplar message: its fields' types and its
// label references.
func (v *v2Scratch) checkExemplar(src []byte) error {
	refs := v.refs[len(v.refs):] // after the series' own, which stay
	var fc easyproto.FieldContext
	for len(src) > 0 {
		var err error
		if src, err = nextField(&fc, src, "Exemplar"); err != nil {
			return err
		}
		ok := true
		switch fc.FieldNum {
		case 1:
			refs, ok = fc.UnpackUint32s(refs)
		case 2:
			_, ok = fc.Double()
		case 3:
			_, ok = fc.Int64()
		}
		if !ok {
			return fmt.Errorf("exemplar field %d of the wrong type: %w", fc.FieldNum, errBadProtobuf)
		}
	}
	if len(refs)%2 != 0 {
		return fmt.Errorf("exemplar with an odd number (%d) of labels_refs: %w", len(refs), errBadProtobuf)
	}
	for i := 0; i < len(refs); i += 2 {
		if _, _, err := v.label(refs, i); err != nil {
			return fmt.Errorf("exemplar: %w", err)
		}
	}
	return nil
}

// checkMetadata checks a Metadata message and reports whether it says
// anything.
func (v *v2Scratch) checkMetadata(src []byte) (set bool, err error) {
	var fc easyproto.FieldContext
	for len(src) > 0 {
		if src, err = nextField(&fc, src, "Metadata"); err != nil {
			return false, err
		}
		var x uint32
		ok := true
		switch fc.FieldNum {
		case 1: // an enum: any varint, unknown values included
			var t int64
			t, ok = fc.Int64()
			set = set || t != 0
		case 3, 4:
			if x, ok = fc.Uint32(); ok && x != 0 && int64(x) >= int64(len(v.symbols)) { // 0: unset
				return false, fmt.Errorf("metadata field %d = %d, outside the %d symbols: %w", fc.FieldNum, x, len(v.symbols), errBadProtobuf)
			}
			set = set || x != 0
		}
		if !ok {
			return false, fmt.Errorf("metadata field %d of the wrong type: %w", fc.FieldNum, errBadProtobuf)
		}
	}
	return set, nil
}

// nextField is fc.NextField for a field of message msg. It also refuses
// field numbers protobuf does not allow, 0 and 2²⁹ on, which easyproto
// reads.
func nextField(fc *easyproto.FieldContext, src []byte, msg string) ([]byte, error) {
	src, err := fc.NextField(src)
	if err != nil {
		return src, fmt.Errorf("read %s field: %v: %w", msg, err, errBadProtobuf)
	}
	if fc.FieldNum == 0 || fc.FieldNum >= 1<<29 {
		return src, fmt.Errorf("%s field number %d: %w", msg, fc.FieldNum, errBadProtobuf)
	}
	return src, nil
}

// truncate shortens s for an error message.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
