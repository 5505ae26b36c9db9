package seal

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tillpipe/internal/buffer"
	"tillpipe/internal/wire"
)

// ClassNames are the queue names of the inbox and outbox groups, highest
// priority first: "critical", "normal", "bulk".
var ClassNames = func() []string {
	names := make([]string, len(wire.Classes))
	for i, c := range wire.Classes {
		names[i] = c.String()
	}
	return names
}()

// Queue returns g's queue of class c.
func Queue(g *buffer.Group, c wire.Class) *buffer.Queue { return g.Queue(c.String()) }

// inboxQueue is the name of the inbox's only queue.
const inboxQueue = "requests"

// InboxQueue returns the inbox's queue, which holds one record per request
// (see record.go).
func InboxQueue(g *buffer.Group) *buffer.Queue { return g.Queue(inboxQueue) }

// ErrLegacyInbox is returned by [OpenInbox] for a data directory written by a
// relay that kept one inbox queue per class.
var ErrLegacyInbox = errors.New("inbox has per-class queues of an older relay")

// InboxOptions configure [OpenInbox]. The zero value means the defaults.
type InboxOptions struct {
	// MaxRecordBytes bounds one record: one request (default 16 MiB).
	MaxRecordBytes int
	// SegmentBytes is the inbox segment size (default 4 MiB, at least
	// MaxRecordBytes). Sealed records are deleted a segment at a time.
	SegmentBytes int64
	Logger       *slog.Logger
}

// OpenInbox opens the inbox: one queue under dir/requests holding one record
// per request, fsync on every append (group commit), no cap (the intake
// applies back-pressure on [buffer.Group.Bytes] instead, so the inbox never
// drops). It refuses, with [ErrLegacyInbox], a directory that still holds the
// per-class queues (dir/critical, ...) of an older relay: their records are
// acknowledged but unsealed, and this version cannot read them.
func OpenInbox(dir string, opts InboxOptions) (*buffer.Group, error) {
	for _, c := range ClassNames {
		if _, err := os.Stat(filepath.Join(dir, c)); err == nil {
			return nil, fmt.Errorf("open inbox %s: %s: seal it with the previous relay version or remove it: %w", dir, c, ErrLegacyInbox)
		}
	}
	if opts.MaxRecordBytes <= 0 {
		opts.MaxRecordBytes = buffer.DefaultMaxRecordBytes
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 4 << 20
	}
	g, err := buffer.OpenGroup(dir, []string{inboxQueue}, buffer.GroupOptions{
		Queue: buffer.Options{
			SegmentBytes:   opts.SegmentBytes,
			MaxRecordBytes: opts.MaxRecordBytes,
			Sync:           buffer.SyncAlways,
			Repair:         true,
			Logger:         opts.Logger,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("open inbox %s: %w", dir, err)
	}
	return g, nil
}

// Outbox is the outbox group with the limits it was opened with, which the
// [Stage] needs to know when an append may drop a batch (see guard.go).
type Outbox struct {
	*buffer.Group
	maxBytes int64
	maxAge   time.Duration
}

// OutboxOptions configure [OpenOutbox]. The zero value means the defaults.
type OutboxOptions struct {
	// MaxBytes caps the outbox on disk (0: no cap). Over it, whole segments
	// are dropped: bulk first, then normal, critical last.
	MaxBytes int64
	// MaxAge drops sealed batches older than this (0: no limit).
	MaxAge time.Duration
	// MaxRecordBytes bounds one sealed batch (default 16 MiB).
	MaxRecordBytes int
	// SegmentBytes is the outbox segment size, the unit of drops (default
	// MaxBytes/32, at least MaxRecordBytes, at most 64 MiB).
	SegmentBytes int64
	Logger       *slog.Logger
	// Registerer receives samples_dropped_total{class,reason}; nil: none.
	Registerer prometheus.Registerer
}

// OpenOutbox opens the outbox: one queue per class under dir holding sealed
// wire frames, sharing a byte cap and a max age, every dropped sample
// counted in samples_dropped_total{class,reason}.
func OpenOutbox(dir string, opts OutboxOptions) (*Outbox, error) {
	if opts.MaxRecordBytes <= 0 {
		opts.MaxRecordBytes = buffer.DefaultMaxRecordBytes
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 64 << 20
		if opts.MaxBytes > 0 {
			opts.SegmentBytes = min(max(opts.MaxBytes/32, int64(opts.MaxRecordBytes)), 64<<20)
		}
	}
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "samples_dropped_total",
		Help: "Samples sealed but dropped from the outbox before they were sent, by class and reason (cap: the buffer is full; age: older than the buffer's max age).",
	}, []string{"class", "reason"})
	for _, c := range ClassNames {
		for _, r := range []string{buffer.ReasonCap, buffer.ReasonAge} {
			dropped.WithLabelValues(c, r)
		}
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(dropped); err != nil {
			return nil, fmt.Errorf("register outbox metrics: %w", err)
		}
	}
	g, err := buffer.OpenGroup(dir, ClassNames, buffer.GroupOptions{
		MaxBytes: opts.MaxBytes,
		MaxAge:   opts.MaxAge,
		Queue: buffer.Options{
			SegmentBytes:   opts.SegmentBytes,
			MaxRecordBytes: opts.MaxRecordBytes,
			Sync:           buffer.SyncAlways,
			Repair:         true,
			Logger:         opts.Logger,
		},
		OnDrop: func(queue, reason string, records, bytes, samples int64) {
			dropped.WithLabelValues(queue, reason).Add(float64(samples))
			if opts.Logger != nil {
				opts.Logger.Warn("outbox dropped batches", "class", queue, "reason", reason, "batches", records, "bytes", bytes, "samples", samples)
			}
		},
	})
	if err != nil {
		if opts.Registerer != nil {
			opts.Registerer.Unregister(dropped)
		}
		return nil, fmt.Errorf("open outbox %s: %w", dir, err)
	}
	return &Outbox{Group: g, maxBytes: opts.MaxBytes, maxAge: opts.MaxAge}, nil
}
