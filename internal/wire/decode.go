package wire

import (
	"errors"
	"fmt"
	"hash/crc32"
	"math"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"
	"github.com/klauspost/compress/zstd"
)

// Default limits of a [Decoder].
const (
	DefaultMaxRawLen   = 64 << 20
	DefaultMaxFrameLen = 32 << 20
)

// zstdDecoder is shared by every [Decoder]: DecodeAll is safe for concurrent
// use. WithDecodeAllCapLimit makes DecodeAll stop at cap(dst), and Decode
// passes a dst whose capacity is the declared RawLen, already checked against
// the Decoder's limit; so a payload that inflates past its declared length
// fails after at most one zstd block (128 KiB) of excess, whatever its zstd
// frame header claims.
var zstdDecoder = mustZstdDecoder()

func mustZstdDecoder() *zstd.Decoder {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(math.MaxUint32),
		zstd.WithDecoderMaxWindow(math.MaxUint32),
	)
	if err != nil {
		panic(fmt.Sprintf("BUG: build zstd decoder: %v", err))
	}
	return dec
}

// DecoderOptions bounds what a [Decoder] accepts. The zero value means the defaults.
type DecoderOptions struct {
	// MaxRawLen is the largest uncompressed payload accepted, checked against
	// the header before anything is allocated. Default [DefaultMaxRawLen].
	MaxRawLen int
	// MaxFrameLen is the largest frame accepted. Default [DefaultMaxFrameLen].
	MaxFrameLen int
}

// Batch is one decoded frame. It belongs to the [Decoder] that returned it
// and is valid until that Decoder's next Decode.
type Batch struct {
	Header Header
	// Request is the payload. Its strings point into the Decoder's buffer.
	// It is nil after [Decoder.DecodeRaw].
	Request *prompb.WriteRequest
	// Raw is the verified, decompressed payload in format Header.Payload.
	// A remote-write v1 Raw is a marshaled WriteRequest, so Raws of several
	// batches concatenated are one valid WriteRequest (repeated fields).
	Raw []byte
}

// Decoder verifies and decodes frames, reusing its buffers from call to call,
// so that a warmed-up Decoder allocates nothing per frame.
//
// A Decoder is not safe for concurrent use; give each goroutine its own.
type Decoder struct {
	maxRawLen   int
	maxFrameLen int
	raw         []byte
	wru         prompb.WriteRequestUnmarshaler
	batch       Batch
}

// NewDecoder returns a Decoder with the given limits.
func NewDecoder(opts DecoderOptions) *Decoder {
	d := &Decoder{maxRawLen: opts.MaxRawLen, maxFrameLen: opts.MaxFrameLen}
	if d.maxRawLen <= 0 {
		d.maxRawLen = DefaultMaxRawLen
	}
	if d.maxFrameLen <= 0 {
		d.maxFrameLen = DefaultMaxFrameLen
	}
	return d
}

// Decode verifies frame (size limits, magic, major version, lengths, header
// and payload CRC), decompresses the payload into a reused buffer and
// unmarshals it. Frames of a newer minor version decode; fields they add to
// the header are skipped.
//
// The returned Batch and its Request are valid until the next call to Decode;
// they do not refer to frame, which the caller may reuse at once. Errors wrap
// the sentinel errors of this package or are a *[VersionError]; nothing is
// allocated in proportion to what a hostile header claims.
func (d *Decoder) Decode(frame []byte) (*Batch, error) {
	return d.decode(frame, true)
}

// DecodeRaw verifies a frame exactly as [Decoder.Decode] does (magic,
// version, sizes, CRC, decompressed length) and decompresses it, but does
// not unmarshal the payload: Batch.Request is nil and Batch.Raw holds the
// payload. A forwarder that passes remote-write bytes on unchanged (the
// ingester) saves the unmarshal and re-marshal this way; the header's
// counts and times describe the payload.
func (d *Decoder) DecodeRaw(frame []byte) (*Batch, error) {
	return d.decode(frame, false)
}

func (d *Decoder) decode(frame []byte, unmarshal bool) (*Batch, error) {
	d.batch.Request = nil
	d.batch.Raw = nil
	if len(frame) > d.maxFrameLen {
		return nil, fmt.Errorf("decode batch: frame of %d bytes, limit %d: %w", len(frame), d.maxFrameLen, ErrTooLarge)
	}
	h := &d.batch.Header
	hlen, err := parseHeader(frame, h)
	if err != nil {
		return nil, fmt.Errorf("decode batch: %w", err)
	}
	if err := d.decodePayload(h, frame[hlen:], unmarshal); err != nil {
		return nil, fmt.Errorf("decode batch %s/%s seq %d: %w", h.Store, h.Class, h.Seq, err)
	}
	return &d.batch, nil
}

// maxInflation bounds the uncompressed length of n payload bytes in codec c.
// Snappy's densest element is a 3-byte copy of 64 bytes. Zstd's is an RLE
// block: a 3-byte block header and one byte for up to 128 KiB.
func maxInflation(c Codec, n int) uint64 {
	switch c {
	case CodecNone:
		return uint64(n)
	case CodecSnappy:
		return uint64(n)/3*64 + 64
	default:
		return uint64(n)/4*(128<<10) + 128<<10
	}
}

func (d *Decoder) decodePayload(h *Header, payload []byte, unmarshal bool) error {
	if uint64(h.RawLen) > uint64(d.maxRawLen) {
		return fmt.Errorf("raw payload of %d bytes, limit %d: %w", h.RawLen, d.maxRawLen, ErrTooLarge)
	}
	if got := crc32.Checksum(payload, castagnoli); got != h.CRC {
		return fmt.Errorf("payload crc %08x, want %08x: %w", got, h.CRC, ErrChecksum)
	}
	rawLen := int(h.RawLen)
	// Refuse a RawLen the payload cannot possibly inflate to before
	// allocating for it, so a small frame cannot make d.raw grow to MaxRawLen.
	if maxRaw := maxInflation(h.Codec, len(payload)); uint64(rawLen) > maxRaw {
		return fmt.Errorf("%s payload of %d bytes cannot inflate to %d: %w", h.Codec, len(payload), rawLen, ErrCorruptPayload)
	}
	if cap(d.raw) < rawLen {
		d.raw = make([]byte, rawLen)
	}
	var raw []byte
	switch h.Codec {
	case CodecNone:
		if len(payload) != rawLen {
			return fmt.Errorf("uncompressed payload of %d bytes, header says %d: %w", len(payload), rawLen, ErrCorruptPayload)
		}
		raw = d.raw[:copy(d.raw[:rawLen], payload)]
	case CodecSnappy:
		n, err := snappy.DecodedLen(payload)
		if err != nil {
			return fmt.Errorf("snappy: %w: %w", ErrCorruptPayload, err)
		}
		if n != rawLen {
			return fmt.Errorf("snappy payload decodes to %d bytes, header says %d: %w", n, rawLen, ErrCorruptPayload)
		}
		raw, err = snappy.Decode(d.raw[:rawLen], payload)
		if err != nil {
			return fmt.Errorf("snappy: %w: %w", ErrCorruptPayload, err)
		}
	case CodecZstd:
		var err error
		raw, err = zstdDecoder.DecodeAll(payload, d.raw[:0:rawLen])
		if err != nil {
			if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
				return fmt.Errorf("zstd payload decodes past %d bytes: %w: %w", rawLen, ErrCorruptPayload, err)
			}
			return fmt.Errorf("zstd: %w: %w", ErrCorruptPayload, err)
		}
		if len(raw) != rawLen {
			return fmt.Errorf("zstd payload decodes to %d bytes, header says %d: %w", len(raw), rawLen, ErrCorruptPayload)
		}
	default:
		// parseHeader already refused it; kept so a new codec cannot slip through.
		return fmt.Errorf("codec %d: %w", h.Codec, ErrUnknownCodec)
	}
	d.batch.Raw = raw
	switch h.Payload {
	case PayloadRemoteWriteV1:
		if !unmarshal {
			return nil
		}
		wr, err := d.wru.UnmarshalProtobuf(raw)
		if err != nil {
			return fmt.Errorf("unmarshal write request: %w: %w", ErrCorruptPayload, err)
		}
		d.batch.Request = wr
	default:
		return fmt.Errorf("payload format %d: %w", h.Payload, ErrUnknownPayload)
	}
	return nil
}
