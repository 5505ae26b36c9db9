package seal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/klauspost/compress/s2"

	"tillpipe/internal/wire"
)

// An inbox record is what the intake appends for one request: a fixed header
// with one section per class, followed by each class's series as the body of
// a Prometheus remote-write v1 WriteRequest (repeated field 1, TimeSeries),
// critical, normal and bulk back to back, each compressed on its own as an
// S2 block (github.com/klauspost/compress/s2). A sealer decompresses its
// class's body onto the batch it builds, without unmarshaling it. One record
// per request means one fsync per request, whatever the classes it holds.
// Little-endian:
//
//	offset   size field
//	0        1    record version (3)
//	1        3    zero
//	4+32*k   32   section of class k+1 (critical, normal, bulk):
//	               +0  4  series
//	               +4  4  samples
//	               +8  8  min sample timestamp, ms (0 when the section is empty)
//	               +16 8  max sample timestamp, ms
//	               +24 4  body length in bytes, uncompressed
//	               +28 4  body length in the record, compressed (0 when the body is empty)
//	100      n    bodies, critical first; n is the sum of the compressed lengths
//
// Compression is what makes the record cheap: the record is written,
// fsync'd and read back by three sealers, and a till's scrape takes 24.9
// bytes per sample in the inbox this way against 175 uncompressed
// (BenchmarkIntake's inbox-bytes/sample, framing included). Version 2 (the same with
// uncompressed bodies and +28 zero) is still read, so an inbox written by
// an older relay seals; version 1 (one record per class and queue) is not:
// see [OpenInbox]. The buffer frame's sample count (Append's samples
// argument) is the total over the classes.
const (
	// RecordHeaderLen is the length of an inbox record header.
	RecordHeaderLen = 4 + sectionLen*len(wire.Classes)
	recordVersion   = 3
	recordVersionV2 = 2
	sectionLen      = 32

	// MaxSectionLen bounds a class's body in a record, uncompressed: what a
	// reader will allocate for one. A body is at most a request body plus
	// the store label on each series, so the relay's largest request body
	// must stay under half of it.
	MaxSectionLen = 64 << 20
)

// ErrBadRecord is wrapped by the functions that read an inbox record when
// they cannot.
var ErrBadRecord = errors.New("bad inbox record")

// RecordSection describes one class's part of an inbox record.
type RecordSection struct {
	Series, Samples  uint32
	MinTime, MaxTime int64
	Len              uint32 // body bytes, uncompressed
	Stored           uint32 // body bytes in the record; set by [AppendRecord]
}

// RecordHeader is the header of an inbox record: one section per class.
type RecordHeader struct {
	Sections [len(wire.Classes)]RecordSection // index: class - 1
	version  byte
}

// Section returns class c's section; c must be valid.
func (h *RecordHeader) Section(c wire.Class) *RecordSection { return &h.Sections[c-1] }

// AppendRecord appends the inbox record of h and bodies to dst: bodies holds
// each class's body back to back, critical first, h's Len fields long. It
// compresses the bodies and sets h's Stored fields.
func AppendRecord(dst []byte, h *RecordHeader, bodies []byte) []byte {
	start := len(dst)
	room := RecordHeaderLen
	for k := range h.Sections {
		room += s2.MaxEncodedLen(int(h.Sections[k].Len))
	}
	dst = slices.Grow(dst, room)[:start+RecordHeaderLen]
	off := 0
	for k := range h.Sections {
		s := &h.Sections[k]
		body := bodies[off : off+int(s.Len)]
		off += len(body)
		n := len(dst)
		if len(body) > 0 {
			dst = append(dst, s2.Encode(dst[n:cap(dst)], body)...) // in place: room was reserved
		}
		s.Stored = uint32(len(dst) - n)
	}
	putHeader(dst[start:], h, recordVersion)
	return dst
}

func putHeader(rec []byte, h *RecordHeader, version byte) {
	_ = rec[RecordHeaderLen-1]
	rec[0], rec[1], rec[2], rec[3] = version, 0, 0, 0
	le := binary.LittleEndian
	for k := range h.Sections {
		s, b := &h.Sections[k], rec[4+sectionLen*k:4+sectionLen*(k+1)]
		le.PutUint32(b[0:], s.Series)
		le.PutUint32(b[4:], s.Samples)
		le.PutUint64(b[8:], uint64(s.MinTime))
		le.PutUint64(b[16:], uint64(s.MaxTime))
		le.PutUint32(b[24:], s.Len)
		stored := s.Stored
		if version == recordVersionV2 {
			stored = 0
		}
		le.PutUint32(b[28:], stored)
	}
}

// ParseRecordHeader reads rec's header and checks that the bodies add up to
// the rest of rec.
func ParseRecordHeader(rec []byte) (RecordHeader, error) {
	var h RecordHeader
	if len(rec) < RecordHeaderLen {
		return h, fmt.Errorf("record of %d bytes: %w", len(rec), ErrBadRecord)
	}
	h.version = rec[0]
	if h.version != recordVersion && h.version != recordVersionV2 {
		return RecordHeader{}, fmt.Errorf("record version %d: %w", rec[0], ErrBadRecord)
	}
	le := binary.LittleEndian
	total := uint64(0)
	for k := range h.Sections {
		b := rec[4+sectionLen*k:]
		s := &h.Sections[k]
		*s = RecordSection{
			Series:  le.Uint32(b[0:]),
			Samples: le.Uint32(b[4:]),
			MinTime: int64(le.Uint64(b[8:])),
			MaxTime: int64(le.Uint64(b[16:])),
			Len:     le.Uint32(b[24:]),
			Stored:  le.Uint32(b[28:]),
		}
		if h.version == recordVersionV2 {
			s.Stored = s.Len
		}
		if s.Len > MaxSectionLen {
			return RecordHeader{}, fmt.Errorf("section %d of %d bytes, over %d: %w", k+1, s.Len, MaxSectionLen, ErrBadRecord)
		}
		if (s.Len == 0) != (s.Stored == 0) {
			return RecordHeader{}, fmt.Errorf("section %d: %d bytes stored for %d: %w", k+1, s.Stored, s.Len, ErrBadRecord)
		}
		total += uint64(s.Stored)
	}
	if total != uint64(len(rec)-RecordHeaderLen) {
		return RecordHeader{}, fmt.Errorf("record of %d bytes, sections of %d: %w", len(rec), total, ErrBadRecord)
	}
	return h, nil
}

// AppendBody appends class c's body in rec, uncompressed, to dst and
// returns its section.
func AppendBody(dst, rec []byte, c wire.Class) (RecordSection, []byte, error) {
	h, err := ParseRecordHeader(rec)
	if err != nil {
		return RecordSection{}, dst, err
	}
	return h.AppendBody(dst, rec, c)
}

// AppendBody is the package's AppendBody for rec, whose header h is (as
// [ParseRecordHeader] returned it): the sealer reads the header first to
// decide whether to seal before the body.
func (h *RecordHeader) AppendBody(dst, rec []byte, c wire.Class) (RecordSection, []byte, error) {
	off := RecordHeaderLen
	for k := 0; k < int(c)-1; k++ {
		off += int(h.Sections[k].Stored)
	}
	s := h.Sections[c-1]
	stored := rec[off : off+int(s.Stored)]
	if h.version == recordVersionV2 {
		return s, append(dst, stored...), nil
	}
	if s.Len == 0 {
		return s, dst, nil
	}
	if n, err := s2.DecodedLen(stored); err != nil || n != int(s.Len) {
		return RecordSection{}, dst, fmt.Errorf("section %d: body of %d bytes decodes to %d (%v): %w", c, s.Len, n, err, ErrBadRecord)
	}
	n := len(dst)
	dst = slices.Grow(dst, int(s.Len))[:n+int(s.Len)]
	if _, err := s2.Decode(dst[n:], stored); err != nil {
		return RecordSection{}, dst[:n], fmt.Errorf("section %d: %v: %w", c, err, ErrBadRecord)
	}
	return s, dst, nil
}
