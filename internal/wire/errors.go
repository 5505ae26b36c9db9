package wire

import (
	"errors"
	"fmt"
)

// Sentinel errors returned, wrapped with context, by the encoder and decoder.
// Test for them with [errors.Is]. A frame failing with any of them other than
// [ErrTooLarge] is poison: retrying it cannot succeed.
var (
	// ErrBadMagic means the frame does not start with the batch magic.
	ErrBadMagic = errors.New("bad magic")
	// ErrTruncated means the frame is shorter than its header, or than its
	// header plus the payload length the header declares.
	ErrTruncated = errors.New("truncated frame")
	// ErrTooLarge means the frame, or the uncompressed payload it declares, is
	// over the decoder's limit, or a count does not fit its header field.
	ErrTooLarge = errors.New("too large")
	// ErrChecksum means the CRC-32C of the header or of the payload does not match.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrCorruptPayload means the payload failed to decompress or unmarshal,
	// or its uncompressed length is not the declared one.
	ErrCorruptPayload = errors.New("corrupt payload")
	// ErrUnknownPayload means the payload format is not one this package knows.
	ErrUnknownPayload = errors.New("unknown payload format")
	// ErrUnknownCodec means the codec is not one this package knows.
	ErrUnknownCodec = errors.New("unknown codec")
	// ErrUnknownClass means the priority class is not one of [Classes].
	ErrUnknownClass = errors.New("unknown class")
	// ErrInvalidHeader means a header field is malformed: a bad store or relay
	// id, a header length that contradicts its contents, or bytes after the payload.
	ErrInvalidHeader = errors.New("invalid header")
)

// VersionError is returned for a frame whose major version this package does
// not know. Frames of a known major version and a newer minor version decode.
type VersionError struct {
	Major, Minor uint8
}

// Error implements error.
func (e *VersionError) Error() string {
	return fmt.Sprintf("unsupported batch version %d.%d (this decoder reads %d.x)", e.Major, e.Minor, versionMajor)
}
