package buffer

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"
)

// SyncPolicy says when Append's data reaches stable storage.
type SyncPolicy int

const (
	// SyncAlways makes Append return only after an fsync covering its record
	// (group commit: one fsync serves every Append waiting on it).
	SyncAlways SyncPolicy = iota
	// SyncInterval makes Append return after the write; a background
	// goroutine fsyncs every Options.SyncInterval. A crash can lose the
	// records of the last interval.
	SyncInterval
)

func (p SyncPolicy) String() string {
	switch p {
	case SyncAlways:
		return "always"
	case SyncInterval:
		return "interval"
	}
	return fmt.Sprintf("SyncPolicy(%d)", int(p))
}

// Defaults for zero [Options] fields.
const (
	DefaultSegmentBytes   = 64 << 20
	DefaultMaxRecordBytes = 16 << 20
	DefaultSyncInterval   = 100 * time.Millisecond
	// maxFrameBytes bounds any frame payload on disk. Open treats a longer
	// length field as corruption, whatever MaxRecordBytes is now.
	maxFrameBytes = 1 << 28
)

// Options configure a [Queue]. The zero value means the defaults.
type Options struct {
	// SegmentBytes is the size at which the head segment is sealed and a new
	// one started (default 64 MiB). A record larger than it gets a segment
	// of its own.
	SegmentBytes int64
	// MaxRecordBytes bounds one record (default 16 MiB, at most 256 MiB).
	MaxRecordBytes int
	// Sync is the durability policy (default SyncAlways).
	Sync SyncPolicy
	// SyncInterval is the fsync period under SyncInterval (default 100 ms).
	SyncInterval time.Duration
	// Repair makes Open fix what it would otherwise report as a
	// *CorruptionError, logging and counting what is lost.
	Repair bool
	// Logger receives warnings about repairs; nil discards them.
	Logger *slog.Logger
	// Now stamps records with their append time (default time.Now). Tests
	// inject a clock here.
	Now func() time.Time

	// openFile opens segment files; tests replace it to inject faults.
	openFile func(path string, flag int, perm os.FileMode) (segmentFile, error)
}

func (o Options) withDefaults() (Options, error) {
	if o.SegmentBytes < 0 {
		return o, fmt.Errorf("segment bytes %d: %w", o.SegmentBytes, ErrInvalidOption)
	}
	if o.SegmentBytes == 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.MaxRecordBytes < 0 || o.MaxRecordBytes > maxFrameBytes {
		return o, fmt.Errorf("max record bytes %d (limit %d): %w", o.MaxRecordBytes, maxFrameBytes, ErrInvalidOption)
	}
	if o.MaxRecordBytes == 0 {
		o.MaxRecordBytes = DefaultMaxRecordBytes
	}
	switch o.Sync {
	case SyncAlways, SyncInterval:
	default:
		return o, fmt.Errorf("sync policy %v: %w", o.Sync, ErrInvalidOption)
	}
	if o.SyncInterval < 0 {
		return o, fmt.Errorf("sync interval %v: %w", o.SyncInterval, ErrInvalidOption)
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = DefaultSyncInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.openFile == nil {
		o.openFile = openOSFile
	}
	return o, nil
}

// GroupOptions configure a [Group]. The zero value means no byte cap and no
// age limit.
type GroupOptions struct {
	// MaxBytes caps the segment bytes of all queues together; 0 = no cap.
	// If Queue.MaxRecordBytes is unset it defaults to at most MaxBytes
	// minus one frame header.
	// When an Append would exceed it, whole segments are dropped: the oldest
	// of the lowest-priority queue that has any, reason "cap".
	MaxBytes int64
	// MaxAge drops every segment whose newest record is older than MaxAge,
	// whatever the queue, reason "age"; 0 = no limit. It is enforced on every
	// Append to the group and by [Group.DropExpired].
	MaxAge time.Duration
	// Queue configures every queue of the group. If Queue.Now is nil, Now is
	// used.
	Queue Options
	// Now is the group's clock for MaxAge (default time.Now).
	Now func() time.Time
	// OnDrop, if set, is called after every drop with the queue name, the
	// reason ([ReasonCap] or [ReasonAge]) and what was lost that had not
	// been committed. It is called without locks held, from the goroutine
	// whose Append (or DropExpired) caused the drop.
	OnDrop func(queue string, reason string, records, bytes, samples int64)
}

func (o GroupOptions) withDefaults() (GroupOptions, error) {
	if o.MaxBytes < 0 {
		return o, fmt.Errorf("max bytes %d: %w", o.MaxBytes, ErrInvalidOption)
	}
	if o.MaxAge < 0 {
		return o, fmt.Errorf("max age %v: %w", o.MaxAge, ErrInvalidOption)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Queue.Now == nil {
		o.Queue.Now = o.Now
	}
	if o.Queue.MaxRecordBytes == 0 && o.MaxBytes > 0 {
		o.Queue.MaxRecordBytes = int(min(DefaultMaxRecordBytes, o.MaxBytes-frameHeaderSize))
		if o.Queue.MaxRecordBytes <= 0 {
			return o, fmt.Errorf("max bytes %d below one frame header: %w", o.MaxBytes, ErrInvalidOption)
		}
	}
	q, err := o.Queue.withDefaults()
	if err != nil {
		return o, err
	}
	if o.MaxBytes > 0 && int64(q.MaxRecordBytes)+frameHeaderSize > o.MaxBytes {
		return o, fmt.Errorf("max bytes %d below one record of max record bytes %d: %w", o.MaxBytes, q.MaxRecordBytes, ErrInvalidOption)
	}
	o.Queue = q
	return o, nil
}
