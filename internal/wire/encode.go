package wire

import (
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"sync"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"
	"github.com/klauspost/compress/zstd"
)

// Level is how hard [CodecZstd] compresses. It changes the bytes written and
// the CPU spent, never the frame format: every level decodes the same way.
// The zero value is [LevelDefault].
type Level uint8

// The zstd levels.
const (
	// LevelDefault is zstd's SpeedDefault (about zstd -3), what [AppendBatch]
	// and [AppendFrame] use; the golden vectors are encoded with it.
	LevelDefault Level = iota
	// LevelFastest is zstd's SpeedFastest (about zstd -1): see doc.go for
	// what it costs in bytes and saves in CPU.
	LevelFastest
)

// zstdEncoders, by Level, are shared by every goroutine: EncodeAll is safe
// for concurrent use. Their configuration is part of the golden vectors in
// testdata/golden (LevelDefault): changing it changes the bytes written
// (though not what decoders accept). The frame carries no zstd checksum, as
// the header's CRC-32C covers the payload. LevelFastest skips Huffman
// coding of literals (see doc.go).
var zstdEncoders = [...]*zstd.Encoder{
	LevelDefault: mustZstdEncoder(zstd.SpeedDefault),
	LevelFastest: mustZstdEncoder(zstd.SpeedFastest, zstd.WithNoEntropyCompression(true)),
}

func mustZstdEncoder(level zstd.EncoderLevel, opts ...zstd.EOption) *zstd.Encoder {
	enc, err := zstd.NewWriter(nil, append([]zstd.EOption{
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderCRC(false),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(1 << 20),
	}, opts...)...)
	if err != nil {
		panic(fmt.Sprintf("BUG: build zstd encoder: %v", err))
	}
	return enc
}

// rawPool holds scratch buffers for marshaled payloads on their way to a codec.
var rawPool = sync.Pool{New: func() any { return new([]byte) }}

// AppendBatch marshals wr as a [PayloadRemoteWriteV1] payload, compresses it
// with h.Codec, fills h's derived fields (Version, Payload, MinTime, MaxTime,
// Series, Samples, RawLen, PayloadLen, CRC) and appends the frame to dst.
// The caller sets Codec, Class, Store, Relay, Seq, FirstRecord and LastRecord.
// MinTime and MaxTime are 0 when wr has no samples.
//
// AppendBatch is safe for concurrent use. On error it returns dst unchanged.
func AppendBatch(dst []byte, h *Header, wr *prompb.WriteRequest) ([]byte, error) {
	h.Payload = PayloadRemoteWriteV1
	if err := h.validate(); err != nil {
		return dst, fmt.Errorf("encode batch seq %d: %w", h.Seq, err)
	}
	if len(wr.Timeseries) > math.MaxUint32 {
		return dst, fmt.Errorf("encode batch seq %d: %d series: %w", h.Seq, len(wr.Timeseries), ErrTooLarge)
	}
	var samples uint64
	minT, maxT := int64(math.MaxInt64), int64(math.MinInt64)
	for i := range wr.Timeseries {
		ss := wr.Timeseries[i].Samples
		samples += uint64(len(ss))
		for j := range ss {
			t := ss[j].Timestamp
			minT = min(minT, t)
			maxT = max(maxT, t)
		}
	}
	if samples > math.MaxUint32 {
		return dst, fmt.Errorf("encode batch seq %d: %d samples: %w", h.Seq, samples, ErrTooLarge)
	}
	if samples == 0 {
		minT, maxT = 0, 0
	}
	h.MinTime, h.MaxTime = minT, maxT
	h.Series, h.Samples = uint32(len(wr.Timeseries)), uint32(samples)

	if h.Codec == CodecNone {
		// Marshal straight into dst behind a header-sized gap.
		start := len(dst)
		hlen := h.encodedLen()
		dst = slices.Grow(dst, hlen)[:start+hlen]
		dst = wr.MarshalProtobuf(dst)
		return finishFrame(dst, start, hlen, h, len(dst)-start-hlen)
	}
	bp := rawPool.Get().(*[]byte)
	raw := wr.MarshalProtobuf((*bp)[:0])
	dst, err := AppendFrame(dst, h, raw)
	*bp = raw
	rawPool.Put(bp)
	return dst, err
}

// AppendFrame is the lower-level form of [AppendBatch]: raw is an
// already-marshaled payload in format h.Payload, and the caller sets every
// field but the derived Version, RawLen, PayloadLen and CRC, which
// AppendFrame fills. It compresses raw with h.Codec and appends the frame to dst.
//
// AppendFrame is safe for concurrent use. On error it returns dst unchanged.
func AppendFrame(dst []byte, h *Header, raw []byte) ([]byte, error) {
	return AppendFrameLevel(dst, h, raw, LevelDefault)
}

// AppendFrameLevel is [AppendFrame] compressing [CodecZstd] payloads at
// level; other codecs ignore it. An unknown level is [LevelDefault].
func AppendFrameLevel(dst []byte, h *Header, raw []byte, level Level) ([]byte, error) {
	if err := h.validate(); err != nil {
		return dst, fmt.Errorf("encode batch seq %d: %w", h.Seq, err)
	}
	if uint64(len(raw)) > math.MaxUint32 {
		return dst, fmt.Errorf("encode batch seq %d: payload of %d bytes: %w", h.Seq, len(raw), ErrTooLarge)
	}
	start := len(dst)
	hlen := h.encodedLen()
	switch h.Codec {
	case CodecNone:
		dst = slices.Grow(dst, hlen+len(raw))[:start+hlen]
		dst = append(dst, raw...)
	case CodecSnappy:
		n := snappy.MaxEncodedLen(len(raw))
		if n < 0 {
			return dst, fmt.Errorf("encode batch seq %d: payload of %d bytes for snappy: %w", h.Seq, len(raw), ErrTooLarge)
		}
		dst = slices.Grow(dst, hlen+n)
		enc := snappy.Encode(dst[start+hlen:start+hlen+n], raw)
		dst = dst[:start+hlen+len(enc)]
	case CodecZstd:
		// Reserve about what the payload compresses to, so EncodeAll rarely grows dst.
		dst = slices.Grow(dst, hlen+len(raw)/4+64)[:start+hlen]
		if int(level) >= len(zstdEncoders) {
			level = LevelDefault
		}
		dst = zstdEncoders[level].EncodeAll(raw, dst)
	}
	return finishFrame(dst, start, hlen, h, len(raw))
}

// finishFrame fills h's lengths and CRC from the payload at dst[start+hlen:]
// and writes the header into dst[start:start+hlen].
func finishFrame(dst []byte, start, hlen int, h *Header, rawLen int) ([]byte, error) {
	payload := dst[start+hlen:]
	if uint64(len(payload)) > math.MaxUint32 || uint64(rawLen) > math.MaxUint32 {
		return dst[:start], fmt.Errorf("encode batch seq %d: payload of %d bytes: %w", h.Seq, len(payload), ErrTooLarge)
	}
	h.Version = Version
	h.RawLen = uint32(rawLen)
	h.PayloadLen = uint32(len(payload))
	h.CRC = crc32.Checksum(payload, castagnoli)
	putHeader(dst[start:start+hlen], h)
	return dst, nil
}
