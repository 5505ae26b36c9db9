package seal

import (
	"encoding/binary"
	"errors"
	"fmt"

	"tillpipe/internal/wire"
)

// An inbox record is what the intake appends for one request: a fixed header
// with one section per class, followed by each class's series as the body of
// a Prometheus remote-write v1 WriteRequest (repeated field 1, TimeSeries),
// critical, normal and bulk back to back. A sealer builds a batch payload by
// concatenating its class's bodies, without unmarshaling them. One record per
// request means one fsync per request, whatever the classes it holds.
// Little-endian:
//
//	offset   size field
//	0        1    record version (2)
//	1        3    zero
//	4+32*k   32   section of class k+1 (critical, normal, bulk):
//	               +0  4  series
//	               +4  4  samples
//	               +8  8  min sample timestamp, ms (0 when the section is empty)
//	               +16 8  max sample timestamp, ms
//	               +24 4  body length in bytes
//	               +28 4  zero
//	100      n    bodies, critical first; n is the sum of the body lengths
//
// The buffer frame's sample count (Append's samples argument) is the total
// over the classes. Version 1 (one record per class and queue) is no longer
// read; see [OpenInbox].
const (
	// RecordHeaderLen is the length of an inbox record header.
	RecordHeaderLen = 4 + sectionLen*len(wire.Classes)
	recordVersion   = 2
	sectionLen      = 32
)

// ErrBadRecord is wrapped by ParseRecord for a record it cannot read.
var ErrBadRecord = errors.New("bad inbox record")

// RecordSection describes one class's part of an inbox record.
type RecordSection struct {
	Series, Samples  uint32
	MinTime, MaxTime int64
	Len              uint32 // body bytes
}

// RecordHeader is the header of an inbox record: one section per class.
type RecordHeader struct {
	Sections [len(wire.Classes)]RecordSection // index: class - 1
}

// Section returns class c's section; c must be valid.
func (h *RecordHeader) Section(c wire.Class) *RecordSection { return &h.Sections[c-1] }

// PutRecordHeader writes h into rec[:RecordHeaderLen], which the caller
// reserved before appending the bodies.
func PutRecordHeader(rec []byte, h *RecordHeader) {
	_ = rec[RecordHeaderLen-1]
	rec[0], rec[1], rec[2], rec[3] = recordVersion, 0, 0, 0
	le := binary.LittleEndian
	for k := range h.Sections {
		s, b := &h.Sections[k], rec[4+sectionLen*k:4+sectionLen*(k+1)]
		le.PutUint32(b[0:], s.Series)
		le.PutUint32(b[4:], s.Samples)
		le.PutUint64(b[8:], uint64(s.MinTime))
		le.PutUint64(b[16:], uint64(s.MaxTime))
		le.PutUint32(b[24:], s.Len)
		le.PutUint32(b[28:], 0)
	}
}

// ParseRecordHeader reads rec's header and checks that the bodies add up to
// the rest of rec.
func ParseRecordHeader(rec []byte) (RecordHeader, error) {
	var h RecordHeader
	if len(rec) < RecordHeaderLen {
		return h, fmt.Errorf("record of %d bytes: %w", len(rec), ErrBadRecord)
	}
	if rec[0] != recordVersion {
		return h, fmt.Errorf("record version %d: %w", rec[0], ErrBadRecord)
	}
	le := binary.LittleEndian
	total := uint64(0)
	for k := range h.Sections {
		b := rec[4+sectionLen*k:]
		h.Sections[k] = RecordSection{
			Series:  le.Uint32(b[0:]),
			Samples: le.Uint32(b[4:]),
			MinTime: int64(le.Uint64(b[8:])),
			MaxTime: int64(le.Uint64(b[16:])),
			Len:     le.Uint32(b[24:]),
		}
		total += uint64(h.Sections[k].Len)
	}
	if total != uint64(len(rec)-RecordHeaderLen) {
		return RecordHeader{}, fmt.Errorf("record of %d bytes, sections of %d: %w", len(rec), total, ErrBadRecord)
	}
	return h, nil
}

// ParseRecord returns class c's section of rec and its body (a sub-slice of rec).
func ParseRecord(rec []byte, c wire.Class) (RecordSection, []byte, error) {
	h, err := ParseRecordHeader(rec)
	if err != nil {
		return RecordSection{}, nil, err
	}
	off := RecordHeaderLen
	for k := 0; k < int(c)-1; k++ {
		off += int(h.Sections[k].Len)
	}
	s := h.Sections[c-1]
	return s, rec[off : off+int(s.Len)], nil
}
