package collector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"

	"tillpipe/internal/collector/snapblock"
)

// The remote-write WriteRequest is marshaled here directly, byte for byte
// as prompb.WriteRequest.MarshalProtobuf does, but from label sets that
// were marshaled once when the series was interned:
//
//	WriteRequest  1: repeated TimeSeries  (tag 0x0a)
//	TimeSeries    1: repeated Label       (tag 0x0a)  <- series.pb, fixed
//	              2: repeated Sample      (tag 0x12)
//	Label         1: name, 2: value       (tags 0x0a, 0x12; empty omitted)
//	Sample        1: double value         (tag 0x09, omitted when 0)
//	              2: int64 timestamp      (tag 0x10, omitted when 0)
//
// so a cycle costs one copy of each label set instead of re-encoding every
// label.

// appendLabelsPB appends ls as the Label fields of a TimeSeries.
func appendLabelsPB(dst []byte, ls []prompb.Label) []byte {
	for _, l := range ls {
		n := 0
		if l.Name != "" {
			n += 1 + uvarintLen(uint64(len(l.Name))) + len(l.Name)
		}
		if l.Value != "" {
			n += 1 + uvarintLen(uint64(len(l.Value))) + len(l.Value)
		}
		dst = append(dst, 0x0a)
		dst = binary.AppendUvarint(dst, uint64(n))
		if l.Name != "" {
			dst = append(dst, 0x0a)
			dst = binary.AppendUvarint(dst, uint64(len(l.Name)))
			dst = append(dst, l.Name...)
		}
		if l.Value != "" {
			dst = append(dst, 0x12)
			dst = binary.AppendUvarint(dst, uint64(len(l.Value)))
			dst = append(dst, l.Value...)
		}
	}
	return dst
}

// appendTimeSeriesPB appends one WriteRequest.timeseries field: the
// pre-marshaled labels and one sample.
func appendTimeSeriesPB(dst, labels []byte, v float64, ts int64) []byte {
	sample := 0
	if v != 0 {
		sample += 9
	}
	if ts != 0 {
		sample += 1 + uvarintLen(uint64(ts))
	}
	n := len(labels) + 1 + uvarintLen(uint64(sample)) + sample
	dst = append(dst, 0x0a)
	dst = binary.AppendUvarint(dst, uint64(n))
	dst = append(dst, labels...)
	dst = append(dst, 0x12)
	dst = binary.AppendUvarint(dst, uint64(sample))
	if v != 0 {
		dst = append(dst, 0x09)
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
	}
	if ts != 0 {
		dst = append(dst, 0x10)
		dst = binary.AppendUvarint(dst, uint64(ts))
	}
	return dst
}

// body is the last WriteRequest marshaled and where each series' sample
// sits in it. A cycle with the same series in the same order as the last
// (most cycles: nothing started or stopped) rewrites the sample fields in
// place instead of copying every label set again, when each value is zero
// where it was zero before (a zero value is omitted, so the length would
// change) and the timestamp's varint has the same length. The bytes are
// then what appendTimeSeriesPB would have appended.
//
// The snappy encoding is kept the same way: snapblock emits the sample
// fields as literals that no copy refers to, so the samples can be written
// straight into the last encoding, and the 167 KB of a 30-container body
// are compressed only when the series change. A cycle with the last
// one's layout writes its samples only there (marshalSnappy): buf's
// sample fields are then stale, and are written again (patch) before
// anything reads buf.
type body struct {
	buf    []byte
	series []*series // in body order
	value  []int32   // offset of each series' value bits in buf; -1: omitted (zero)
	ts     []int32   // offset of each series' timestamp varint in buf
	tsLen  int

	z      snapblock.Block
	zOut   []byte            // z's encoding of buf, when zValid
	zValue []int32           // value, as offsets in zOut
	zTS    []int32           // ts, as offsets in zOut
	zValid bool              // zOut encodes buf's layout; its sample fields are written at zValue and zTS
	vol    []snapblock.Range // the sample fields of buf, for z
	zbuf   []byte            // snappy.Encode's output, should z refuse
	seq    uint64            // the Collector's seq of series when zValid; 0: unknown
	vals   []float64         // scratch: the values of a cycle, for writeSamples
}

// marshal returns cycle stamped ts as a WriteRequest.
func (b *body) marshal(cycle []*series, ts int64) []byte {
	if !b.patch(cycle, b.values(cycle), ts) {
		b.build(cycle, ts)
		b.zValid = false
	}
	return b.buf
}

// marshalSnappy returns cycle stamped ts as a WriteRequest in snappy's
// block format, valid until the next call. seq is the Collector's number
// for the series of cycle in their order (see writeValues), 0 if none.
func (b *body) marshalSnappy(cycle []*series, seq uint64, ts int64) []byte {
	b.seq = seq
	vals := b.values(cycle) // once, for the block and for the body
	// One pass checks the layout and writes into the block: should a
	// value's zeroness differ, the block is encoded again below.
	if b.zValid && b.sameTS(ts) && slices.Equal(cycle, b.series) && writeSamples(b.zOut, b.zValue, b.zTS, vals, ts) {
		return b.zOut
	}
	if !b.patch(cycle, vals, ts) {
		b.build(cycle, ts)
	}
	b.vol = b.vol[:0]
	for i := range b.series {
		start, end := b.value[i], b.value[i]+8 // the value, then [0x10 ts]
		if b.tsLen > 0 {
			end = b.ts[i] + int32(b.tsLen)
			if start < 0 {
				start = b.ts[i]
			}
		}
		if start >= 0 {
			b.vol = append(b.vol, snapblock.Range{Start: start, End: end})
		}
	}
	out, err := b.z.Encode(b.buf, b.vol)
	if err != nil { // not reached: the ranges are sorted and inside buf by construction
		b.zValid = false
		b.zbuf = snappy.Encode(b.zbuf[:cap(b.zbuf)], b.buf)
		return b.zbuf
	}
	b.zOut, b.zValid = out, false
	if b.tsLen == 0 { // not reached by the agent: with no timestamp, no cycle is the same (see same)
		return out
	}
	// With a timestamp, each series' sample field is one volatile range,
	// the i-th, at the same place in buf and in out but for where the
	// range starts.
	offs := b.z.Offsets()
	b.zValue, b.zTS = b.zValue[:0], b.zTS[:0]
	for i, r := range b.vol {
		at := int32(offs[i]) - r.Start
		v := b.value[i]
		if v >= 0 {
			v += at
		}
		b.zValue = append(b.zValue, v)
		b.zTS = append(b.zTS, b.ts[i]+at)
	}
	b.zValid = true
	return out
}

// writeValues is marshalSnappy for a cycle of the series of the one it
// last encoded, in their order (the Collector's seq for them is that
// encoding's), given as their values alone: it writes them and ts into
// the last encoding and returns it. It returns false when it cannot: the
// encoding is not of those series, a value's zeroness differs (the block
// may then be half written: the caller goes through marshalSnappy, which
// encodes it again), or so does the length of ts's varint.
func (b *body) writeValues(seq uint64, vals []float64, ts int64) ([]byte, bool) {
	if !b.zValid || seq == 0 || seq != b.seq || len(vals) != len(b.series) || !b.sameTS(ts) {
		return nil, false
	}
	return b.zOut, writeSamples(b.zOut, b.zValue, b.zTS, vals, ts)
}

// values returns the values of cycle, in b's scratch.
func (b *body) values(cycle []*series) []float64 {
	b.vals = b.vals[:0]
	for _, s := range cycle {
		b.vals = append(b.vals, s.value)
	}
	return b.vals
}

// same reports whether cycle stamped ts has the layout of the last body:
// the same series in the same order, each zero where it was (a zero value
// is left out of the body), and a timestamp varint of the same length.
func (b *body) same(cycle []*series, ts int64) bool {
	if len(cycle) != len(b.series) || !b.sameTS(ts) {
		return false
	}
	for i, s := range cycle {
		if s != b.series[i] || (s.value != 0) != (b.value[i] >= 0) {
			return false
		}
	}
	return true
}

// sameTS reports whether ts is not 0 and its varint has the length of the
// last body's timestamps.
func (b *body) sameTS(ts int64) bool { return ts != 0 && uvarintLen(uint64(ts)) == b.tsLen }

// patch writes the samples of cycle stamped ts, vals (cycle's values, as
// values returns them), into buf when it has the layout of the last body
// (same); otherwise it returns false and leaves the body as it was.
func (b *body) patch(cycle []*series, vals []float64, ts int64) bool {
	if !b.same(cycle, ts) {
		return false
	}
	return writeSamples(b.buf, b.value, b.ts, vals, ts)
}

// writeSamples writes vals[i] at value[i] in dst (unless value[i] is -1:
// omitted) and ts, of the length the offsets were made for, as a uvarint
// at tsAt[i], while each of vals is zero where value[i] is -1 and only
// there. It returns false at the first that is not, with those before it
// written, and when vals and value differ in length.
func writeSamples(dst []byte, value, tsAt []int32, vals []float64, ts int64) bool {
	if len(vals) != len(value) {
		return false
	}
	var tsb [binary.MaxVarintLen64]byte
	enc := tsb[:binary.PutUvarint(tsb[:], uint64(ts))]
	// The timestamp goes in as one 8-byte read, mask and write where dst
	// has 8 bytes from it: a call to memmove for its 6 bytes took about
	// 30,000 instructions a cycle over 1,085 series (cachegrind).
	var word, mask uint64
	if len(enc) < 8 {
		word, mask = binary.LittleEndian.Uint64(tsb[:8]), 1<<(8*len(enc))-1
	}
	value, tsAt = value[:len(vals)], tsAt[:len(vals)]
	for i, v := range vals {
		off := value[i]
		if (v != 0) != (off >= 0) {
			return false
		}
		if off >= 0 {
			binary.LittleEndian.PutUint64(dst[off:], math.Float64bits(v))
		}
		if t := int(tsAt[i]); mask != 0 && t+8 <= len(dst) {
			w := dst[t : t+8]
			binary.LittleEndian.PutUint64(w, binary.LittleEndian.Uint64(w)&^mask|word)
		} else {
			copy(dst[t:], enc)
		}
	}
	return true
}

func (b *body) build(cycle []*series, ts int64) {
	b.buf, b.tsLen = b.buf[:0], 0
	b.series, b.value, b.ts = append(b.series[:0], cycle...), b.value[:0], b.ts[:0] // ts: none when ts is 0
	if ts != 0 {
		b.tsLen = uvarintLen(uint64(ts))
	}
	for _, s := range cycle {
		b.buf = appendTimeSeriesPB(b.buf, s.pb, s.value, ts)
		// The sample ends the series: [0x09 value(8)] [0x10 ts(tsLen)].
		end := len(b.buf)
		if b.tsLen > 0 {
			end -= b.tsLen
			b.ts = append(b.ts, int32(end))
			end--
		}
		if s.value != 0 {
			b.value = append(b.value, int32(end-8))
		} else {
			b.value = append(b.value, -1)
		}
	}
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

var errLabelsPB = errors.New("malformed label set")

// decodeLabelsPB is the inverse of appendLabelsPB.
func decodeLabelsPB(b []byte) ([]prompb.Label, error) {
	var ls []prompb.Label
	for len(b) > 0 {
		msg, rest, err := field(b, 0x0a)
		if err != nil {
			return nil, err
		}
		b = rest
		var l prompb.Label
		for len(msg) > 0 {
			var v []byte
			switch msg[0] {
			case 0x0a:
				v, msg, err = field(msg, 0x0a)
				l.Name = string(v)
			case 0x12:
				v, msg, err = field(msg, 0x12)
				l.Value = string(v)
			default:
				err = fmt.Errorf("%w: tag %#x", errLabelsPB, msg[0])
			}
			if err != nil {
				return nil, err
			}
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// field splits a length-delimited field with the given tag off b.
func field(b []byte, tag byte) (value, rest []byte, err error) {
	if len(b) == 0 || b[0] != tag {
		return nil, nil, errLabelsPB
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || uint64(len(b)-1-k) < n {
		return nil, nil, errLabelsPB
	}
	return b[1+k : 1+k+int(n)], b[1+k+int(n):], nil
}
