package intake

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"unicode/utf8"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"tillpipe/internal/seal"
)

// StoreLabel is the label the relay stamps on every series.
const StoreLabel = "store"

var (
	errInvalidLabels = errors.New("invalid labels")
	errNoSamples     = errors.New("series without samples")
)

// validate checks one series: at least one sample; label names
// [a-zA-Z_][a-zA-Z0-9_]*, unique; values valid UTF-8.
func validate(ts *prompb.TimeSeries) error {
	if len(ts.Samples) == 0 {
		return fmt.Errorf("series %s: %w", seriesName(ts.Labels), errNoSamples)
	}
	if len(ts.Labels) == 0 {
		return fmt.Errorf("series without labels: %w", errInvalidLabels)
	}
	sorted := true
	for i := range ts.Labels {
		l := &ts.Labels[i]
		if !validLabelName(l.Name) {
			return fmt.Errorf("series %s: label name %q: %w", seriesName(ts.Labels), l.Name, errInvalidLabels)
		}
		if !utf8.ValidString(l.Value) {
			return fmt.Errorf("series %s: label %s value is not UTF-8: %w", seriesName(ts.Labels), l.Name, errInvalidLabels)
		}
		if i > 0 {
			if p := ts.Labels[i-1].Name; p == l.Name {
				return fmt.Errorf("series %s: label %s twice: %w", seriesName(ts.Labels), l.Name, errInvalidLabels)
			} else if p > l.Name {
				sorted = false
			}
		}
	}
	if !sorted {
		for i := range ts.Labels {
			for j := i + 1; j < len(ts.Labels); j++ {
				if ts.Labels[i].Name == ts.Labels[j].Name {
					return fmt.Errorf("series %s: label %s twice: %w", seriesName(ts.Labels), ts.Labels[i].Name, errInvalidLabels)
				}
			}
		}
	}
	return nil
}

func validLabelName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// seriesName is the metric name for error messages, truncated.
func seriesName(ls []prompb.Label) string {
	for i := range ls {
		if ls[i].Name == "__name__" {
			v := ls[i].Value
			if len(v) > 64 {
				v = v[:64] + "..."
			}
			return fmt.Sprintf("%q", v)
		}
	}
	return "without __name__"
}

// record accumulates one request's series, class by class, and encodes
// them as an inbox record (see [seal.AppendRecord]): the caller appends
// every series of a class, then of the next, setting each section's Len.
type record struct {
	buf []byte // the bodies, back to back
	out []byte // the record
	hdr seal.RecordHeader
}

func (r *record) reset() {
	r.buf = r.buf[:0]
	r.hdr = seal.RecordHeader{}
}

func (r *record) samples() int {
	n := 0
	for i := range r.hdr.Sections {
		n += int(r.hdr.Sections[i].Samples)
	}
	return n
}

func (r *record) finish() []byte {
	r.out = seal.AppendRecord(r.out[:0], &r.hdr, r.buf)
	return r.out
}

// appendSeries marshals ts as WriteRequest field 1 (TimeSeries) into
// section sec, with the store label set to store: a client's store label
// is replaced, and one is inserted in name order if missing. The encoding
// is the one prompb.WriteRequest.MarshalProtobuf writes.
func (r *record) appendSeries(sec *seal.RecordSection, labels []prompb.Label, samples []prompb.Sample, store string) {
	storeSize := labelSize(StoreLabel, store)
	size := 0
	for i := range labels {
		l := &labels[i]
		if l.Name == StoreLabel {
			continue
		}
		n := labelSize(l.Name, l.Value)
		size += 1 + sov(uint64(n)) + n
	}
	size += 1 + sov(uint64(storeSize)) + storeSize
	size += samplesSize(samples)
	b := slices.Grow(r.buf, 1+sov(uint64(size))+size)
	b = append(b, 1<<3|2)
	b = binary.AppendUvarint(b, uint64(size))
	stamped := false
	for i := range labels {
		l := &labels[i]
		if l.Name == StoreLabel {
			continue
		}
		if !stamped && l.Name > StoreLabel {
			b = appendLabel(b, StoreLabel, store, storeSize)
			stamped = true
		}
		b = appendLabel(b, l.Name, l.Value, labelSize(l.Name, l.Value))
	}
	if !stamped {
		b = appendLabel(b, StoreLabel, store, storeSize)
	}
	r.buf = r.appendSamples(b, sec, samples)
}

// appendSpliced is appendSeries for a series whose raw label fields (as the
// client encoded them, exactly what appendLabel writes) are known: it copies
// them with the store label spliced in as sp says, storeField being the
// encoded store label field.
func (r *record) appendSpliced(sec *seal.RecordSection, raw []byte, sp splice, storeField []byte, samples []prompb.Sample) {
	size := len(raw) - int(sp.cut1-sp.cut0) + len(storeField) + samplesSize(samples)
	b := slices.Grow(r.buf, 1+sov(uint64(size))+size)
	b = append(b, 1<<3|2)
	b = binary.AppendUvarint(b, uint64(size))
	if sp.ins <= sp.cut0 {
		b = append(b, raw[:sp.ins]...)
		b = append(b, storeField...)
		b = append(b, raw[sp.ins:sp.cut0]...)
		b = append(b, raw[sp.cut1:]...)
	} else {
		b = append(b, raw[:sp.cut0]...)
		b = append(b, raw[sp.cut1:sp.ins]...)
		b = append(b, storeField...)
		b = append(b, raw[sp.ins:]...)
	}
	r.buf = r.appendSamples(b, sec, samples)
}

// appendSamples appends the Sample fields of a TimeSeries and accounts the
// series in sec.
func (r *record) appendSamples(b []byte, sec *seal.RecordSection, samples []prompb.Sample) []byte {
	if sec.Series == 0 && len(samples) > 0 {
		sec.MinTime, sec.MaxTime = math.MaxInt64, math.MinInt64
	}
	for i := range samples {
		s := &samples[i]
		b = appendSample(b, s)
		sec.MinTime, sec.MaxTime = min(sec.MinTime, s.Timestamp), max(sec.MaxTime, s.Timestamp)
	}
	sec.Series++
	sec.Samples += uint32(len(samples))
	return b
}

// appendSample appends s as a TimeSeries' Sample field, as
// prompb.WriteRequest.MarshalProtobuf writes it.
func appendSample(b []byte, s *prompb.Sample) []byte {
	b = append(b, 2<<3|2)
	b = binary.AppendUvarint(b, uint64(sampleSize(s)))
	if s.Value != 0 {
		b = append(b, 1<<3|1)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(s.Value))
	}
	if s.Timestamp != 0 {
		b = append(b, 2<<3)
		b = binary.AppendUvarint(b, uint64(s.Timestamp))
	}
	return b
}

func samplesSize(samples []prompb.Sample) int {
	size := 0
	for i := range samples {
		n := sampleSize(&samples[i])
		size += 1 + sov(uint64(n)) + n
	}
	return size
}

func appendLabel(b []byte, name, value string, size int) []byte {
	b = append(b, 1<<3|2)
	b = binary.AppendUvarint(b, uint64(size))
	if name != "" {
		b = append(b, 1<<3|2)
		b = binary.AppendUvarint(b, uint64(len(name)))
		b = append(b, name...)
	}
	if value != "" {
		b = append(b, 2<<3|2)
		b = binary.AppendUvarint(b, uint64(len(value)))
		b = append(b, value...)
	}
	return b
}

func labelSize(name, value string) int {
	n := 0
	if name != "" {
		n += 1 + sov(uint64(len(name))) + len(name)
	}
	if value != "" {
		n += 1 + sov(uint64(len(value))) + len(value)
	}
	return n
}

func sampleSize(s *prompb.Sample) int {
	n := 0
	if s.Value != 0 {
		n += 9
	}
	if s.Timestamp != 0 {
		n += 1 + sov(uint64(s.Timestamp))
	}
	return n
}

func sov(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }
