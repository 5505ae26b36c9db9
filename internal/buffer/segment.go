package buffer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
)

// A queue directory holds segment files and one cursor file:
//
//	0000000000000000   segment: records with indices [0x0, next segment's first)
//	00000000000004d2   segment: first record has index 0x4d2 (1234)
//	cursor             the committed index (see cursor.go)
//
// A segment file is named with 16 lower-case hex digits of the index of its
// first record and holds nothing but frames, back to back, with no header.
// Indices are contiguous across segments: a segment's first index is the
// previous segment's last index + 1. Frames are little-endian:
//
//	offset size field
//	0      4    payload length n (bytes)
//	4      4    CRC-32C (Castagnoli) of bytes [0,4) and [8, 24+n)
//	8      8    append wall-clock time, Unix nanoseconds
//	16     4    caller-supplied sample count
//	20     1    kind: 1 = record, 2 = gap
//	21     3    zero
//	24     n    payload
//
// A record frame holds one record and takes one index. A gap frame's payload
// is a uint64 count of indices it stands for; Repair writes gap frames where
// records were lost, so the next segment's name still follows on. Only
// segments the queue owns are ever appended to; a crash can leave a torn
// frame only at the end of the last segment.
const (
	frameHeaderSize = 24
	frameRecord     = 1
	frameGap        = 2
	// sparseEvery is the distance in bytes between entries of a segment's
	// in-memory offset index; a Read scans at most this many bytes of frame
	// headers to find a record.
	sparseEvery = 64 << 10
	// segmentNameLen is the length of a segment file name.
	segmentNameLen = 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// segmentName returns the file name of the segment whose first index is first.
func segmentName(first uint64) string { return fmt.Sprintf("%016x", first) }

// parseSegmentName returns the first index named by a segment file name.
func parseSegmentName(name string) (uint64, bool) {
	if len(name) != segmentNameLen {
		return 0, false
	}
	v, err := strconv.ParseUint(name, 16, 64)
	if err != nil || segmentName(v) != name {
		return 0, false
	}
	return v, true
}

// frameHeader is a decoded frame header.
type frameHeader struct {
	length  uint32
	crc     uint32
	time    int64
	samples uint32
	kind    byte
}

func (h frameHeader) size() int64 { return frameHeaderSize + int64(h.length) }

// appendFrame appends a frame of the given kind to dst and returns it.
func appendFrame(dst []byte, kind byte, unixNano int64, samples uint32, payload []byte) []byte {
	start := len(dst)
	var hdr [frameHeaderSize]byte
	binary.LittleEndian.PutUint32(hdr[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint64(hdr[8:16], uint64(unixNano))
	binary.LittleEndian.PutUint32(hdr[16:20], samples)
	hdr[20] = kind
	dst = append(dst, hdr[:]...)
	dst = append(dst, payload...)
	crc := crc32.Checksum(dst[start:start+4], castagnoli)
	crc = crc32.Update(crc, castagnoli, dst[start+8:])
	binary.LittleEndian.PutUint32(dst[start+4:start+8], crc)
	return dst
}

// appendGapFrame appends a gap frame standing for count indices.
func appendGapFrame(dst []byte, unixNano int64, count uint64) []byte {
	var p [8]byte
	binary.LittleEndian.PutUint64(p[:], count)
	return appendFrame(dst, frameGap, unixNano, 0, p[:])
}

// decodeHeader decodes and sanity-checks a frame header. It does not check
// the CRC, which covers the payload.
func decodeHeader(b []byte) (frameHeader, error) {
	if len(b) < frameHeaderSize {
		return frameHeader{}, io.ErrUnexpectedEOF
	}
	h := frameHeader{
		length:  binary.LittleEndian.Uint32(b[0:4]),
		crc:     binary.LittleEndian.Uint32(b[4:8]),
		time:    int64(binary.LittleEndian.Uint64(b[8:16])),
		samples: binary.LittleEndian.Uint32(b[16:20]),
		kind:    b[20],
	}
	switch {
	case b[21] != 0 || b[22] != 0 || b[23] != 0:
		return h, fmt.Errorf("%w: reserved bytes set", ErrBadFrame)
	case h.kind == frameRecord && h.length > maxFrameBytes:
		return h, fmt.Errorf("%w: length %d", ErrBadFrame, h.length)
	case h.kind == frameGap && h.length != 8:
		return h, fmt.Errorf("%w: gap length %d", ErrBadFrame, h.length)
	case h.kind != frameRecord && h.kind != frameGap:
		return h, fmt.Errorf("%w: kind %d", ErrBadFrame, h.kind)
	}
	return h, nil
}

// checkFrame verifies the CRC of a frame given its header bytes and payload.
func checkFrame(hdr, payload []byte) error {
	crc := crc32.Checksum(hdr[0:4], castagnoli)
	crc = crc32.Update(crc, castagnoli, hdr[8:frameHeaderSize])
	crc = crc32.Update(crc, castagnoli, payload)
	if crc != binary.LittleEndian.Uint32(hdr[4:8]) {
		return ErrBadChecksum
	}
	if hdr[20] == frameGap && binary.LittleEndian.Uint64(payload) == 0 {
		return fmt.Errorf("%w: empty gap", ErrBadFrame)
	}
	return nil
}

// indices returns how many indices a verified frame takes.
func (h frameHeader) indices(payload []byte) uint64 {
	if h.kind == frameGap {
		return binary.LittleEndian.Uint64(payload)
	}
	return 1
}

// segmentFile is the seam between a queue and its segment files. *os.File
// implements it; tests wrap it to inject short writes, ENOSPC and failed
// fsyncs.
type segmentFile interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Close() error
}

var _ segmentFile = (*os.File)(nil)

func openOSFile(path string, flag int, perm os.FileMode) (segmentFile, error) {
	f, err := os.OpenFile(path, flag, perm)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// syncDir fsyncs a directory so that creates, renames and removes in it are
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// position is where a frame starts in a segment, with the totals of the
// record frames before it.
type position struct {
	idx     uint64 // first index the frame stands for
	off     int64
	records int64
	samples int64
}

// segment is one segment file and what the queue knows about it. Fields
// other than removed are guarded by the owning Queue's mu.
type segment struct {
	first   uint64 // from the file name
	end     uint64 // index after the last frame
	path    string
	f       segmentFile
	size    int64 // bytes of complete frames
	records int64 // record frames
	samples int64
	minTime int64 // append time of the first record frame, Unix ns; 0 if none
	maxTime int64 // newest append time of any record frame
	sparse  []position
	removed atomic.Bool
}

func (s *segment) name() string { return filepath.Base(s.path) }

// account adds a frame written (or found) at off to the segment totals.
func (s *segment) account(off int64, h frameHeader, n uint64) {
	if len(s.sparse) == 0 || off-s.sparse[len(s.sparse)-1].off >= sparseEvery {
		s.sparse = append(s.sparse, position{idx: s.end, off: off, records: s.records, samples: s.samples})
	}
	s.end += n
	s.size = off + h.size()
	if h.kind == frameRecord {
		s.records++
		s.samples += int64(h.samples)
		if s.minTime == 0 {
			s.minTime = h.time
		}
		s.maxTime = max(s.maxTime, h.time)
	}
}

// scanResult is what scanSegment found.
type scanResult struct {
	// err is the problem with the frame at s.size, nil if every byte of the
	// file is a valid frame.
	err error
	// torn says the problem looks like an interrupted append: the frame is
	// cut short by the end of the file, the bytes from s.size on are all
	// zero, or only the final frame fails its checksum.
	torn bool
}

// scanSegment reads every frame of s.f (fileSize bytes long), verifying
// checksums and filling in s's totals and offset index. s.size ends at the
// last valid frame.
func scanSegment(s *segment, fileSize int64) (scanResult, error) {
	br := bufio.NewReaderSize(io.NewSectionReader(s.f, 0, fileSize), 1<<20)
	var hdr [frameHeaderSize]byte
	var payload []byte
	off := int64(0)
	for off < fileSize {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return scanResult{err: ErrTruncatedFrame, torn: true}, nil
			}
			return scanResult{}, fmt.Errorf("read segment %s at offset %d: %w", s.path, off, err)
		}
		h, err := decodeHeader(hdr[:])
		if err != nil {
			return scanResult{err: err, torn: allZero(s.f, off, fileSize)}, nil
		}
		if off+h.size() > fileSize {
			return scanResult{err: ErrTruncatedFrame, torn: true}, nil
		}
		if cap(payload) < int(h.length) {
			payload = make([]byte, h.length)
		}
		payload = payload[:h.length]
		if _, err := io.ReadFull(br, payload); err != nil {
			return scanResult{}, fmt.Errorf("read segment %s at offset %d: %w", s.path, off, err)
		}
		if err := checkFrame(hdr[:], payload); err != nil {
			last := off+h.size() == fileSize
			return scanResult{err: err, torn: last || allZero(s.f, off, fileSize)}, nil
		}
		s.account(off, h, h.indices(payload))
		off = s.size
	}
	return scanResult{}, nil
}

// allZero reports whether bytes [from, to) of f are all zero, the mark of a
// tail the file system extended but the crashed writer never filled.
func allZero(f io.ReaderAt, from, to int64) bool {
	buf := make([]byte, 64<<10)
	for from < to {
		n := int64(len(buf))
		if to-from < n {
			n = to - from
		}
		m, err := f.ReadAt(buf[:n], from)
		for _, c := range buf[:m] {
			if c != 0 {
				return false
			}
		}
		if err != nil && m < int(n) {
			return false
		}
		from += int64(m)
	}
	return true
}

// readFrameHeader reads the frame header at off and, for a gap frame, the
// number of indices it stands for.
func readFrameHeader(f io.ReaderAt, off int64, hdr []byte) (frameHeader, uint64, error) {
	if _, err := f.ReadAt(hdr[:frameHeaderSize], off); err != nil {
		return frameHeader{}, 0, err
	}
	h, err := decodeHeader(hdr[:frameHeaderSize])
	if err != nil {
		return h, 0, err
	}
	if h.kind == frameRecord {
		return h, 1, nil
	}
	var p [8]byte
	if _, err := f.ReadAt(p[:], off+frameHeaderSize); err != nil {
		return h, 0, err
	}
	if err := checkFrame(hdr[:frameHeaderSize], p[:]); err != nil {
		return h, 0, err
	}
	return h, binary.LittleEndian.Uint64(p[:]), nil
}
