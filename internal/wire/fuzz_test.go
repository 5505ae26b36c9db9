package wire

import (
	"encoding/binary"
	"errors"
	"testing"
)

var sentinels = []error{ErrBadMagic, ErrTruncated, ErrTooLarge, ErrChecksum, ErrCorruptPayload,
	ErrUnknownPayload, ErrUnknownCodec, ErrUnknownClass, ErrInvalidHeader}

// FuzzDecode feeds arbitrary frames to the decoder. It must not panic, every
// error must be one of this package's, ParseHeader must agree with Decode on
// the header, and a frame that decodes must survive a re-encode: encoding the
// decoded request with the same header settings decodes to equal content.
// Seeds: testdata/fuzz/FuzzDecode (seed_* from TestWriteFuzzSeeds -update).
// Most random mutations die at the header CRC, so the seeds include frames
// that get past it and fail later.
func FuzzDecode(f *testing.F) {
	for _, c := range codecs {
		frame, _ := encode(f, fixedHeader(c), tinyRequest())
		f.Add(frame)
	}
	d := NewDecoder(DecoderOptions{MaxRawLen: 4 << 20, MaxFrameLen: 1 << 20})
	f.Fuzz(func(t *testing.T, frame []byte) {
		checkDecode(t, d, frame)
		// Random bytes rarely get past the two CRCs. Decode a copy with its
		// lengths and CRCs made consistent too, so the mutations reach the
		// decompressors and the protobuf parser.
		if fixed := resealCopy(frame); fixed != nil {
			checkDecode(t, d, fixed)
		}
	})
}

func checkDecode(t *testing.T, d *Decoder, frame []byte) {
	b, err := d.Decode(frame)
	if err != nil {
		var ve *VersionError
		known := errors.As(err, &ve)
		for _, s := range sentinels {
			known = known || errors.Is(err, s)
		}
		if !known {
			t.Fatalf("Decode error %v is none of the package's", err)
		}
		return
	}
	h, err := ParseHeader(frame)
	if err != nil || h != b.Header {
		t.Fatalf("ParseHeader = %+v, %v; Decode header %+v", h, err, b.Header)
	}
	re := Header{Codec: h.Codec, Class: h.Class, Store: h.Store, Relay: h.Relay,
		Seq: h.Seq, FirstRecord: h.FirstRecord, LastRecord: h.LastRecord}
	frame2, err := AppendBatch(nil, &re, b.Request)
	if err != nil {
		t.Fatalf("re-encode: %v", err)
	}
	b2, err := NewDecoder(DecoderOptions{}).Decode(frame2)
	if err != nil {
		t.Fatalf("decode re-encoded frame: %v", err)
	}
	if b2.Header != re {
		t.Fatalf("re-encoded header %+v, want %+v", b2.Header, re)
	}
	requireEqualRequest(t, b2.Request, b.Request)
	if raw1, raw2 := b.Request.MarshalProtobuf(nil), b2.Request.MarshalProtobuf(nil); string(raw1) != string(raw2) {
		t.Fatal("re-encoded request marshals differently")
	}
}

// resealCopy returns a copy of frame with its payload length, payload CRC and
// header CRC recomputed, or nil if frame has no header length to go by.
func resealCopy(frame []byte) []byte {
	if len(frame) < minHeaderLen || string(frame[:len(magic)]) != magic {
		return nil
	}
	hlen := int(binary.LittleEndian.Uint16(frame[offHeaderLen:]))
	if hlen < minHeaderLen || hlen > len(frame) {
		return nil
	}
	return resealAll(append([]byte(nil), frame...))
}
