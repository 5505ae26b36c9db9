package wire

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// A frame is one header followed by one payload, and is the whole body of one
// JetStream message. All integers are little-endian and fixed-width; offsets
// are in bytes from the start of the frame. Version 1.0:
//
//	off   size  field
//	  0      4  magic "TPWB" (tillpipe wire batch)
//	  4      1  major version (1); a decoder refuses a major it does not know
//	  5      1  minor version (0); a newer minor only appends header fields
//	  6      2  header length H: bytes from offset 0 through the header CRC
//	  8      1  codec          (Codec)
//	  9      1  payload format (PayloadFormat)
//	 10      1  class          (Class)
//	 11      1  store id length S, 1..255
//	 12      1  relay id length R, 0..255
//	 13      3  reserved: zero when written, ignored when read
//	 16      8  seq
//	 24      8  first record (inclusive)
//	 32      8  last record (inclusive)
//	 40      8  min sample timestamp, ms (int64)
//	 48      8  max sample timestamp, ms (int64)
//	 56      4  series
//	 60      4  samples
//	 64      4  raw (uncompressed) payload length
//	 68      4  payload length P as it follows the header
//	 72      4  payload CRC-32C (Castagnoli) over the P payload bytes
//	 76      S  store id, [A-Za-z0-9_-]
//	 76+S    R  relay id, printable ASCII without space
//	 76+S+R  …  fields added by later minor versions; skipped by older decoders
//	 H-4     4  header CRC-32C over bytes [0, H-4)
//	 H       P  payload, compressed with the codec
//
// The frame ends exactly at H+P; trailing bytes are an error. A 1.0 header is
// therefore 80+S+R bytes. The two CRCs let a reader trust the header (the
// ingester compares its store with the message subject) without touching the
// payload, and the payload without decompressing it.
const (
	magic = "TPWB"

	versionMajor = 1
	versionMinor = 0
	// Version is the version this package writes, major<<8 | minor.
	Version = versionMajor<<8 | versionMinor

	offMajor       = 4
	offMinor       = 5
	offHeaderLen   = 6
	offCodec       = 8
	offPayload     = 9
	offClass       = 10
	offStoreLen    = 11
	offRelayLen    = 12
	offSeq         = 16
	offFirstRecord = 24
	offLastRecord  = 32
	offMinTime     = 40
	offMaxTime     = 48
	offSeries      = 56
	offSamples     = 60
	offRawLen      = 64
	offPayloadLen  = 68
	offCRC         = 72
	offStrings     = 76

	// minHeaderLen is a 1.0 header with an empty store and relay: the least a
	// header of major version 1 can be.
	minHeaderLen = offStrings + crcLen
	crcLen       = 4
	maxIDLen     = 255
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header describes one batch. The encoder fills the fields marked derived; the
// caller fills the rest.
type Header struct {
	Version     uint16        // derived: major<<8 | minor; the encoder writes [Version]
	Codec       Codec         // compression of the payload
	Payload     PayloadFormat // derived by [AppendBatch]; set by the caller for [AppendFrame]
	Class       Class         // priority class
	Store       string        // store id, 1..255 bytes of [A-Za-z0-9_-]
	Relay       string        // relay instance id, 0..255 bytes of printable ASCII without space
	Seq         uint64        // batch sequence number per (store, class)
	FirstRecord uint64        // inclusive buffer record range the batch was sealed from
	LastRecord  uint64
	MinTime     int64  // derived by AppendBatch: min sample timestamp, ms; 0 without samples
	MaxTime     int64  // derived by AppendBatch: max sample timestamp, ms; 0 without samples
	Series      uint32 // derived by AppendBatch
	Samples     uint32 // derived by AppendBatch
	RawLen      uint32 // derived: uncompressed payload length
	PayloadLen  uint32 // derived: compressed payload length as it follows the header
	CRC         uint32 // derived: CRC-32C (Castagnoli) of the compressed payload bytes
}

// encodedLen is the length of h's header as this package writes it.
func (h *Header) encodedLen() int {
	return offStrings + len(h.Store) + len(h.Relay) + crcLen
}

// validate checks the fields the caller sets before encoding.
func (h *Header) validate() error {
	if !h.Codec.Valid() {
		return fmt.Errorf("codec %d: %w", h.Codec, ErrUnknownCodec)
	}
	if !h.Payload.Valid() {
		return fmt.Errorf("payload format %d: %w", h.Payload, ErrUnknownPayload)
	}
	if !h.Class.Valid() {
		return fmt.Errorf("class %d: %w", h.Class, ErrUnknownClass)
	}
	if !validStore(h.Store) {
		return fmt.Errorf("store id %q: want 1..255 bytes of [A-Za-z0-9_-]: %w", h.Store, ErrInvalidHeader)
	}
	if !validRelay(h.Relay) {
		return fmt.Errorf("relay id %q: want 0..255 bytes of printable ASCII: %w", h.Relay, ErrInvalidHeader)
	}
	return nil
}

// putHeader writes h into b, which must be exactly h.encodedLen() bytes, with
// the current version and the header CRC.
func putHeader(b []byte, h *Header) {
	le := binary.LittleEndian
	copy(b, magic)
	b[offMajor] = versionMajor
	b[offMinor] = versionMinor
	le.PutUint16(b[offHeaderLen:], uint16(len(b)))
	b[offCodec] = byte(h.Codec)
	b[offPayload] = byte(h.Payload)
	b[offClass] = byte(h.Class)
	b[offStoreLen] = byte(len(h.Store))
	b[offRelayLen] = byte(len(h.Relay))
	b[13], b[14], b[15] = 0, 0, 0
	le.PutUint64(b[offSeq:], h.Seq)
	le.PutUint64(b[offFirstRecord:], h.FirstRecord)
	le.PutUint64(b[offLastRecord:], h.LastRecord)
	le.PutUint64(b[offMinTime:], uint64(h.MinTime))
	le.PutUint64(b[offMaxTime:], uint64(h.MaxTime))
	le.PutUint32(b[offSeries:], h.Series)
	le.PutUint32(b[offSamples:], h.Samples)
	le.PutUint32(b[offRawLen:], h.RawLen)
	le.PutUint32(b[offPayloadLen:], h.PayloadLen)
	le.PutUint32(b[offCRC:], h.CRC)
	n := copy(b[offStrings:], h.Store)
	copy(b[offStrings+n:], h.Relay)
	crcOff := len(b) - crcLen
	le.PutUint32(b[crcOff:], crc32.Checksum(b[:crcOff], castagnoli))
}

// ParseHeader reads and validates the header of frame: magic, version, header
// length and header CRC, the lengths against the size of frame, the store and
// relay ids, and that codec, payload format and class are known. It does not
// decompress the payload or check the payload CRC; [Decoder.Decode] does.
// The returned Header is the zero Header when err is not nil.
func ParseHeader(frame []byte) (Header, error) {
	var h Header
	if _, err := parseHeader(frame, &h); err != nil {
		return Header{}, err
	}
	return h, nil
}

// parseHeader is [ParseHeader] into h, returning the header length. It keeps
// h.Store and h.Relay when they already hold the frame's ids, so a [Decoder]
// decoding batch after batch of one store allocates nothing for them.
func parseHeader(frame []byte, h *Header) (int, error) {
	if len(frame) < len(magic) {
		if string(frame) == magic[:len(frame)] {
			return 0, fmt.Errorf("frame of %d bytes, want at least %d: %w", len(frame), minHeaderLen, ErrTruncated)
		}
		return 0, fmt.Errorf("frame starts %q, want %q: %w", frame, magic, ErrBadMagic)
	}
	if string(frame[:len(magic)]) != magic {
		return 0, fmt.Errorf("frame starts %q, want %q: %w", frame[:len(magic)], magic, ErrBadMagic)
	}
	if len(frame) < offHeaderLen {
		return 0, fmt.Errorf("frame of %d bytes, want at least %d: %w", len(frame), minHeaderLen, ErrTruncated)
	}
	if major := frame[offMajor]; major != versionMajor {
		return 0, &VersionError{Major: major, Minor: frame[offMinor]}
	}
	if len(frame) < minHeaderLen {
		return 0, fmt.Errorf("frame of %d bytes, want at least %d: %w", len(frame), minHeaderLen, ErrTruncated)
	}
	le := binary.LittleEndian
	hlen := int(le.Uint16(frame[offHeaderLen:]))
	storeLen, relayLen := int(frame[offStoreLen]), int(frame[offRelayLen])
	if want := offStrings + storeLen + relayLen + crcLen; hlen < want {
		return 0, fmt.Errorf("header length %d, want at least %d for its ids: %w", hlen, want, ErrInvalidHeader)
	}
	if len(frame) < hlen {
		return 0, fmt.Errorf("frame of %d bytes, header of %d: %w", len(frame), hlen, ErrTruncated)
	}
	crcOff := hlen - crcLen
	if got, want := crc32.Checksum(frame[:crcOff], castagnoli), le.Uint32(frame[crcOff:]); got != want {
		return 0, fmt.Errorf("header crc %08x, want %08x: %w", got, want, ErrChecksum)
	}
	payloadLen := le.Uint32(frame[offPayloadLen:])
	if total := uint64(hlen) + uint64(payloadLen); uint64(len(frame)) != total {
		if uint64(len(frame)) < total {
			return 0, fmt.Errorf("frame of %d bytes, header %d + payload %d: %w", len(frame), hlen, payloadLen, ErrTruncated)
		}
		return 0, fmt.Errorf("%d bytes after header %d + payload %d: %w", uint64(len(frame))-total, hlen, payloadLen, ErrInvalidHeader)
	}
	store := frame[offStrings : offStrings+storeLen]
	relay := frame[offStrings+storeLen : offStrings+storeLen+relayLen]
	if !validStore(string(store)) {
		return 0, fmt.Errorf("store id %q: %w", store, ErrInvalidHeader)
	}
	if !validRelay(string(relay)) {
		return 0, fmt.Errorf("relay id %q: %w", relay, ErrInvalidHeader)
	}
	if string(store) != h.Store {
		h.Store = string(store)
	}
	if string(relay) != h.Relay {
		h.Relay = string(relay)
	}
	h.Version = uint16(frame[offMajor])<<8 | uint16(frame[offMinor])
	h.Codec = Codec(frame[offCodec])
	h.Payload = PayloadFormat(frame[offPayload])
	h.Class = Class(frame[offClass])
	h.Seq = le.Uint64(frame[offSeq:])
	h.FirstRecord = le.Uint64(frame[offFirstRecord:])
	h.LastRecord = le.Uint64(frame[offLastRecord:])
	h.MinTime = int64(le.Uint64(frame[offMinTime:]))
	h.MaxTime = int64(le.Uint64(frame[offMaxTime:]))
	h.Series = le.Uint32(frame[offSeries:])
	h.Samples = le.Uint32(frame[offSamples:])
	h.RawLen = le.Uint32(frame[offRawLen:])
	h.PayloadLen = payloadLen
	h.CRC = le.Uint32(frame[offCRC:])
	if !h.Codec.Valid() {
		return 0, fmt.Errorf("batch %s seq %d: codec %d: %w", h.Store, h.Seq, h.Codec, ErrUnknownCodec)
	}
	if !h.Payload.Valid() {
		return 0, fmt.Errorf("batch %s seq %d: payload format %d: %w", h.Store, h.Seq, h.Payload, ErrUnknownPayload)
	}
	if !h.Class.Valid() {
		return 0, fmt.Errorf("batch %s seq %d: class %d: %w", h.Store, h.Seq, h.Class, ErrUnknownClass)
	}
	return hlen, nil
}

func validStore(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validRelay(s string) bool {
	if len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}
