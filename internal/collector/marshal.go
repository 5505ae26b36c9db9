package collector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
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
