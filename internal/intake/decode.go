package intake

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/VictoriaMetrics/easyproto"
	"unicode/utf8"

	"tillpipe/internal/wire"
)

// seriesRef is one TimeSeries of a request as [request.decode] found it,
// plus what [Handler.peek] and [Handler.split] learn about it. Offsets are
// into the request body.
type seriesRef struct {
	ts0, ts1   int32 // the TimeSeries message
	lab0, lab1 int32 // its label fields (tag and length included), when contiguous
	contiguous bool  // the label fields are one run, with no other field among them
	s0, s1     int32 // its samples, in request.samples
	l0, l1     int32 // its parsed labels, in request.labels; only if not known

	devKey  string     // points into the body or is the client's address
	id      seriesID   // see [seriesID]
	dev     *device    // where peek found it, if it did
	epoch   uint64     // dev.epoch then
	hit     uint8      // hitNone, hitCur, hitPrev
	spliced bool       // sp applies: encode from the raw label fields
	sp      splice     // how to stamp the store label into them
	class   wire.Class // known from peek, then where split put it; 0: over the limit
}

// raw returns the series' label fields; only valid if contiguous.
func (s *seriesRef) raw(body []byte) []byte { return body[s.lab0:s.lab1] }

var errBadProtobuf = errors.New("bad protobuf")

// decode walks rq.body, a remote-write WriteRequest, once: for each
// TimeSeries it notes where the message and its label fields are and
// parses its samples into rq.samples. Labels are left alone: a known series
// never parses them (see [Handler.peek]). Fields other than TimeSeries'
// labels and samples (metadata, exemplars, histograms) are skipped, as
// [prompb.WriteRequestUnmarshaler] does; the relay forwards neither.
func (rq *request) decode() error {
	rq.series, rq.samples, rq.labels = rq.series[:0], rq.samples[:0], rq.labels[:0]
	body := rq.body
	src := body
	var fc easyproto.FieldContext
	for len(src) > 0 {
		var err error
		if src, err = fc.NextField(src); err != nil {
			return fmt.Errorf("read WriteRequest field: %w", err)
		}
		if fc.FieldNum != 1 {
			continue
		}
		data, ok := fc.MessageData()
		if !ok {
			return fmt.Errorf("timeseries is not a message: %w", errBadProtobuf)
		}
		end := len(body) - len(src)
		ref := seriesRef{ts0: int32(end - len(data)), ts1: int32(end), s0: int32(len(rq.samples))}
		if err := rq.decodeSeries(&ref, data); err != nil {
			return err
		}
		ref.s1 = int32(len(rq.samples))
		rq.series = append(rq.series, ref)
	}
	return nil
}

func (rq *request) decodeSeries(ref *seriesRef, ts []byte) error {
	const (
		before = iota // no label field yet
		in            // in the run of label fields
		after         // another field came after a label field
	)
	state := before
	ref.contiguous = true
	base := int(ref.ts0)
	src := ts
	var fc easyproto.FieldContext
	for len(src) > 0 {
		start := base + len(ts) - len(src)
		var err error
		if src, err = fc.NextField(src); err != nil {
			return fmt.Errorf("read TimeSeries field: %w", err)
		}
		end := base + len(ts) - len(src)
		switch fc.FieldNum {
		case 1:
			if _, ok := fc.MessageData(); !ok {
				return fmt.Errorf("label is not a message: %w", errBadProtobuf)
			}
			switch state {
			case before:
				ref.lab0, state = int32(start), in
			case after:
				ref.contiguous = false
			}
			if state == in {
				ref.lab1 = int32(end)
			}
		case 2:
			data, ok := fc.MessageData()
			if !ok {
				return fmt.Errorf("sample is not a message: %w", errBadProtobuf)
			}
			s, err := decodeSample(data)
			if err != nil {
				return err
			}
			rq.samples = append(rq.samples, s)
			if state == in {
				state = after
			}
		default:
			if state == in {
				state = after
			}
		}
	}
	return nil
}

func decodeSample(src []byte) (prompb.Sample, error) {
	var s prompb.Sample
	var fc easyproto.FieldContext
	for len(src) > 0 {
		var err error
		if src, err = fc.NextField(src); err != nil {
			return s, fmt.Errorf("read Sample field: %w", err)
		}
		var ok bool
		switch fc.FieldNum {
		case 1:
			if s.Value, ok = fc.Double(); !ok {
				return s, fmt.Errorf("sample value: %w", errBadProtobuf)
			}
		case 2:
			if s.Timestamp, ok = fc.Int64(); !ok {
				return s, fmt.Errorf("sample timestamp: %w", errBadProtobuf)
			}
		}
	}
	return s, nil
}

// parseLabels appends the labels of ref to rq.labels (their strings point
// into the body) and sets ref.l0 and ref.l1.
func (rq *request) parseLabels(ref *seriesRef) error {
	ref.l0 = int32(len(rq.labels))
	src := rq.body[ref.ts0:ref.ts1]
	var fc easyproto.FieldContext
	for len(src) > 0 {
		var err error
		if src, err = fc.NextField(src); err != nil {
			return fmt.Errorf("read TimeSeries field: %w", err)
		}
		if fc.FieldNum != 1 {
			continue
		}
		data, _ := fc.MessageData() // checked by decode
		l, err := decodeLabel(data)
		if err != nil {
			return err
		}
		rq.labels = append(rq.labels, l)
	}
	ref.l1 = int32(len(rq.labels))
	return nil
}

func decodeLabel(src []byte) (prompb.Label, error) {
	var l prompb.Label
	var fc easyproto.FieldContext
	for len(src) > 0 {
		var err error
		if src, err = fc.NextField(src); err != nil {
			return l, fmt.Errorf("read Label field: %w", err)
		}
		var ok bool
		switch fc.FieldNum {
		case 1:
			if l.Name, ok = fc.String(); !ok {
				return l, fmt.Errorf("label name: %w", errBadProtobuf)
			}
		case 2:
			if l.Value, ok = fc.String(); !ok {
				return l, fmt.Errorf("label value: %w", errBadProtobuf)
			}
		}
	}
	return l, nil
}

// scanLabels reads the raw label fields of a series just enough for the
// known-series path: the device (the device label, else the instance label,
// else addr, as [Handler.identify]) and how to stamp the store label. It
// also checks the client's store label, which the series' hash leaves out:
// one at most, and its value UTF-8. ok is false if raw does not parse or
// fails those checks; the series then takes the slow path, which says why.
func scanLabels(raw []byte, addr string) (dev string, sp splice, ok bool) {
	if dev, sp, ok, done := scanLabelsCanonical(raw, addr); done {
		return dev, sp, ok
	}
	return scanLabelsGeneric(raw, addr)
}

// scanLabelsCanonical is [scanLabels] for label fields encoded as
// [appendLabel] does (name, then value, each only when not empty), which is
// how Prometheus, vmagent and the collector send them: it reads them
// without the general field walk. done is false for any other encoding,
// which [scanLabelsGeneric] then reads; the two agree wherever this one is
// done (FuzzDecode checks it).
func scanLabelsCanonical(raw []byte, addr string) (dev string, sp splice, ok, done bool) {
	var device, instance []byte
	haveCut, haveIns := false, false
	for off := 0; off < len(raw); {
		start := off
		if raw[off] != 1<<3|2 {
			return "", sp, false, false
		}
		lab, rest := lengthPrefixed(raw[off+1:])
		if lab == nil {
			return "", sp, false, false
		}
		off = len(raw) - len(rest)
		var name, value []byte
		if len(lab) > 0 && lab[0] == 1<<3|2 {
			if name, lab = lengthPrefixed(lab[1:]); name == nil {
				return "", sp, false, false
			}
		}
		if len(lab) > 0 && lab[0] == 2<<3|2 {
			if value, lab = lengthPrefixed(lab[1:]); value == nil {
				return "", sp, false, false
			}
		}
		if len(lab) > 0 || len(name) == 0 || len(value) == 0 {
			return "", sp, false, false // other fields, or one of them empty: the general walk decides
		}
		switch string(name) {
		case StoreLabel:
			if haveCut || !utf8.Valid(value) {
				return "", sp, false, true
			}
			sp.cut0, sp.cut1, haveCut = uint32(start), uint32(off), true
			continue
		case "device":
			device = value
		case "instance":
			instance = value
		}
		if !haveIns && (name[0] > StoreLabel[0] || name[0] == StoreLabel[0] && string(name) > StoreLabel) {
			sp.ins, haveIns = uint32(start), true
		}
	}
	if !haveIns {
		sp.ins = uint32(len(raw))
	}
	if !haveCut {
		sp.cut0, sp.cut1 = sp.ins, sp.ins
	}
	switch {
	case device != nil:
		return unsafeString(device), sp, true, true
	case instance != nil:
		return unsafeString(instance), sp, true, true
	}
	return addr, sp, true, true
}

// lengthPrefixed splits b into the non-empty bytes its leading varint
// length announces and what follows; nil if they are not there.
func lengthPrefixed(b []byte) (field, rest []byte) {
	if len(b) > 1 && b[0] < 0x80 { // a length under 128: one byte
		if n := int(b[0]); n > 0 && n < len(b) {
			return b[1 : 1+n], b[1+n:]
		}
		return nil, b
	}
	n, w := binary.Uvarint(b)
	if w <= 0 || n == 0 || n > uint64(len(b)-w) {
		return nil, b
	}
	return b[w : w+int(n)], b[w+int(n):]
}

// unsafeString views b as a string, as easyproto's String does: b is part
// of the request body, which outlives every use of the string.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// scanLabelsGeneric is [scanLabels] for label fields in any valid encoding.
func scanLabelsGeneric(raw []byte, addr string) (dev string, sp splice, ok bool) {
	device, instance := "", ""
	haveCut, haveIns := false, false
	var fc, lf easyproto.FieldContext
	src := raw
	for len(src) > 0 {
		start := len(raw) - len(src)
		var err error
		if src, err = fc.NextField(src); err != nil {
			return "", sp, false
		}
		data, _ := fc.MessageData() // a label: decode checked
		name, value := "", ""
		for len(data) > 0 {
			if data, err = lf.NextField(data); err != nil {
				return "", sp, false
			}
			switch lf.FieldNum {
			case 1:
				if name, ok = lf.String(); !ok {
					return "", sp, false
				}
			case 2:
				if value, ok = lf.String(); !ok {
					return "", sp, false
				}
			}
		}
		switch {
		case name == StoreLabel:
			if haveCut || !utf8.ValidString(value) {
				return "", sp, false
			}
			sp.cut0, sp.cut1, haveCut = uint32(start), uint32(len(raw)-len(src)), true
			continue
		case name == "device":
			device = value
		case name == "instance":
			instance = value
		}
		if !haveIns && name > StoreLabel {
			sp.ins, haveIns = uint32(start), true
		}
	}
	if !haveIns {
		sp.ins = uint32(len(raw))
	}
	if !haveCut {
		sp.cut0, sp.cut1 = sp.ins, sp.ins
	}
	switch {
	case device != "":
		return device, sp, true
	case instance != "":
		return instance, sp, true
	}
	return addr, sp, true
}

// splice says how to turn a series' raw label fields into the ones the
// inbox gets: drop the client's store label field, raw[cut0:cut1] (empty if
// none), and insert the relay's at ins, which is outside the cut. Offsets
// are relative to the raw label fields.
type splice struct{ cut0, cut1, ins uint32 }

// spliceOf returns how to stamp the store label into raw, the label fields
// of ls, and whether raw is exactly what [appendLabel] writes for ls: only
// then may the raw bytes stand in for the labels. scratch is a buffer to
// reuse; it is returned.
func spliceOf(raw []byte, ls []prompb.Label, scratch []byte) (splice, bool, []byte) {
	sp := splice{ins: ^uint32(0)}
	haveCut := false
	off := 0
	for i := range ls {
		l := &ls[i]
		scratch = appendLabel(scratch[:0], l.Name, l.Value, labelSize(l.Name, l.Value))
		if !bytes.HasPrefix(raw[off:], scratch) {
			return splice{}, false, scratch
		}
		end := off + len(scratch)
		if l.Name == StoreLabel {
			sp.cut0, sp.cut1, haveCut = uint32(off), uint32(end), true
		} else if sp.ins == ^uint32(0) && l.Name > StoreLabel {
			sp.ins = uint32(off)
		}
		off = end
	}
	if off != len(raw) {
		return splice{}, false, scratch
	}
	if sp.ins == ^uint32(0) {
		sp.ins = uint32(len(raw))
	}
	if !haveCut {
		sp.cut0, sp.cut1 = sp.ins, sp.ins
	}
	return sp, true, scratch
}
