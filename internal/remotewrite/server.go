package remotewrite

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/golang/snappy"
	"github.com/klauspost/compress/zstd"
)

// Errors from [ReadBody]; each maps to one HTTP status a server answers with.
var (
	// ErrTooLarge: the body, compressed or not, is over the limit (413).
	ErrTooLarge = errors.New("request body too large")
	// ErrBadEncoding: the body does not decompress, or uses an encoding
	// other than snappy or zstd (400).
	ErrBadEncoding = errors.New("bad body encoding")
)

// ReadBody reads a remote-write request body, decompresses it according to
// Content-Encoding (snappy when absent, as the spec says; or zstd) and appends
// the protobuf bytes to dst. maxBytes bounds both the compressed body and
// the decompressed size; a body claiming more is refused before it is
// decompressed.
func ReadBody(r *http.Request, maxBytes int64, scratch, dst []byte) (compressed, body []byte, err error) {
	if r.ContentLength > maxBytes {
		return scratch, dst, fmt.Errorf("content-length %d over %d bytes: %w", r.ContentLength, maxBytes, ErrTooLarge)
	}
	lr := io.LimitReader(r.Body, maxBytes+1)
	buf := scratch[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, rerr := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return buf, dst, fmt.Errorf("read body: %w", rerr)
		}
	}
	if int64(len(buf)) > maxBytes {
		return buf, dst, fmt.Errorf("body over %d bytes: %w", maxBytes, ErrTooLarge)
	}
	enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
	body, err = Decompress(dst[:0], buf, enc, maxBytes)
	return buf, body, err
}

// Decompress appends src decoded with encoding ("snappy", "" meaning snappy,
// or "zstd") to dst, refusing output over maxBytes.
func Decompress(dst, src []byte, encoding string, maxBytes int64) ([]byte, error) {
	switch encoding {
	case "", "snappy":
		n, err := snappy.DecodedLen(src)
		if err != nil {
			return dst, fmt.Errorf("snappy header: %v: %w", err, ErrBadEncoding)
		}
		if int64(n) > maxBytes {
			return dst, fmt.Errorf("snappy body decodes to %d bytes, over %d: %w", n, maxBytes, ErrTooLarge)
		}
		start := len(dst)
		dst = grow(dst, n)
		out, err := snappy.Decode(dst[start:start+n], src)
		if err != nil {
			return dst[:start], fmt.Errorf("snappy: %v: %w", err, ErrBadEncoding)
		}
		return dst[:start+len(out)], nil
	case "zstd":
		if hdr := (zstd.Header{}); hdr.Decode(src) == nil && hdr.HasFCS && hdr.FrameContentSize > uint64(maxBytes) {
			return dst, fmt.Errorf("zstd body claims %d bytes, over %d: %w", hdr.FrameContentSize, maxBytes, ErrTooLarge)
		}
		start := len(dst)
		out, err := zstdDecoder.DecodeAll(src, dst)
		if err != nil {
			if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
				return dst[:start], fmt.Errorf("zstd: %v: %w", err, ErrTooLarge)
			}
			return dst[:start], fmt.Errorf("zstd: %v: %w", err, ErrBadEncoding)
		}
		if int64(len(out)-start) > maxBytes {
			return out[:start], fmt.Errorf("zstd body decodes to %d bytes, over %d: %w", len(out)-start, maxBytes, ErrTooLarge)
		}
		return out, nil
	default:
		return dst, fmt.Errorf("content-encoding %q (want snappy or zstd): %w", encoding, ErrBadEncoding)
	}
}

// zstdDecoder is shared: DecodeAll is safe for concurrent use. Its memory
// cap bounds a hostile frame that omits its content size.
var zstdDecoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(256<<20))

// StatusFor maps an error from [ReadBody] to the HTTP status a server answers.
func StatusFor(err error) int {
	switch {
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrBadEncoding):
		return http.StatusBadRequest
	default:
		return http.StatusBadRequest
	}
}
