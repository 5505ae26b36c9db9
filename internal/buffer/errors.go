package buffer

import (
	"errors"
	"fmt"
	"syscall"
)

// Sentinel errors. Compare with [errors.Is].
var (
	// ErrInvalidOption is wrapped by every error about a bad [Options] or
	// [GroupOptions] field.
	ErrInvalidOption = errors.New("buffer: invalid option")
	// ErrDiskFull is wrapped by Append, Commit and Open when the file system
	// reports ENOSPC. The syscall error is wrapped too, so
	// errors.Is(err, syscall.ENOSPC) also holds. A partially written record is
	// truncated away before the error is returned; appending works again once
	// space is free.
	ErrDiskFull = errors.New("buffer: disk full")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("buffer: queue closed")
	// ErrRecordTooLarge is returned by Append for a record longer than
	// Options.MaxRecordBytes.
	ErrRecordTooLarge = errors.New("buffer: record too large")
	// ErrInvalidIndex is returned by Commit for an index beyond NextIndex.
	ErrInvalidIndex = errors.New("buffer: invalid index")
	// ErrBadChecksum is the Err of a [CorruptionError] for a frame whose
	// CRC-32C does not match.
	ErrBadChecksum = errors.New("checksum mismatch")
	// ErrBadFrame is the Err of a [CorruptionError] for a frame header that
	// cannot be valid (unknown kind, reserved bits set, impossible length).
	ErrBadFrame = errors.New("invalid frame header")
	// ErrTruncatedFrame is the Err of a [CorruptionError] for a frame that
	// extends past the end of a segment that is not the last one.
	ErrTruncatedFrame = errors.New("frame extends past end of segment")
	// ErrMissingSegment is the Err of a [CorruptionError] when the indices of
	// two neighbouring segments do not meet: a segment in the middle is gone.
	ErrMissingSegment = errors.New("missing segment")
	// ErrSegmentOverlap is the Err of a [CorruptionError] when two segments
	// claim the same index. Repair cannot fix it; an operator must look.
	ErrSegmentOverlap = errors.New("segments overlap")
	// ErrCursorCorrupt is the Err of a [CorruptionError] for a cursor file
	// that fails its checksum or has the wrong size or magic.
	ErrCursorCorrupt = errors.New("cursor file corrupt")
)

// CorruptionError reports damaged data on disk: which file and at which byte
// offset. Open returns it unless Options.Repair is set; [Repair] (or Open with
// Options.Repair) fixes it by truncating the segment at Offset and recording
// a gap for the indices lost, counting them in [Stats].Repair.
//
// Segment is the segment file name (16 hex digits), the name a missing
// segment would have had, or [CursorFile] for the cursor.
type CorruptionError struct {
	Dir     string
	Segment string
	Offset  int64
	Err     error
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("corruption in %s segment %s at offset %d: %v", e.Dir, e.Segment, e.Offset, e.Err)
}

func (e *CorruptionError) Unwrap() error { return e.Err }

// diskError wraps err with ErrDiskFull when it is ENOSPC (or EDQUOT, which
// an operator fixes the same way).
func diskError(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	}
	return err
}
