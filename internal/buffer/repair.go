package buffer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// openQueue opens the queue in dir, checking every frame of every segment.
//
// What it finds and does:
//   - a torn final frame of the last segment (cut short, zero-filled tail, or
//     the last frame failing its checksum): truncated, logged, counted in
//     RepairStats.TornBytes. Only a record whose Append had not returned can
//     be torn this way.
//   - a bad frame anywhere else: *CorruptionError{Segment, Offset}. Repair
//     truncates the segment there and writes a gap frame for the indices up
//     to the next segment (RepairStats.LostRecords, LostBytes).
//   - indices of neighbouring segments that do not meet: *CorruptionError
//     with ErrMissingSegment naming the first missing segment. Repair writes
//     a gap frame. Segments missing at the front cannot be told from dropped
//     ones; readers continue at the first surviving index.
//   - overlapping segments: *CorruptionError with ErrSegmentOverlap, even
//     with Repair.
//   - a corrupt cursor: *CorruptionError with ErrCursorCorrupt and Segment
//     [CursorFile]. Repair resets it to the first index on disk: at-least-once,
//     some records are read again, none are lost (RepairStats.CursorReset).
//   - a cursor above the last record (records written under SyncInterval and
//     committed before their fsync, then lost): a gap frame up to it.
func openQueue(dir string, opts Options, g *Group, name string) (*Queue, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create dir %s: %w", dir, diskError(err))
	}
	q := &Queue{
		dir:    dir,
		name:   name,
		opts:   opts,
		log:    opts.Logger.With("component", "buffer", "dir", dir),
		group:  g,
		notify: make(chan struct{}),
		stop:   make(chan struct{}),
	}
	ok := false
	defer func() {
		if !ok {
			for _, s := range q.segs {
				if s.f != nil {
					_ = s.f.Close()
				}
			}
		}
	}()
	if err := q.load(); err != nil {
		return nil, err
	}
	ok = true
	if opts.Sync == SyncInterval {
		q.wg.Add(1)
		go q.runSyncer()
	}
	return q, nil
}

func (q *Queue) load() error {
	entries, err := os.ReadDir(q.dir)
	if err != nil {
		return fmt.Errorf("read dir %s: %w", q.dir, err)
	}
	for _, e := range entries {
		switch first, isSeg := parseSegmentName(e.Name()); {
		case isSeg && e.Type().IsRegular():
			q.segs = append(q.segs, &segment{first: first, end: first, path: filepath.Join(q.dir, e.Name())})
		case e.Name() == cursorTempFile:
			if err := os.Remove(filepath.Join(q.dir, e.Name())); err != nil {
				return fmt.Errorf("remove stale %s: %w", cursorTempFile, err)
			}
		case e.Name() != CursorFile:
			q.log.Debug("ignore unknown file", "file", e.Name())
		}
	}
	slices.SortFunc(q.segs, func(a, b *segment) int {
		if a.first < b.first {
			return -1
		}
		if a.first > b.first {
			return 1
		}
		return 0
	})

	// Frames.
	corrupt := make([]bool, len(q.segs))
	for i, s := range q.segs {
		fi, err := os.Stat(s.path)
		if err != nil {
			return fmt.Errorf("stat segment %s: %w", s.path, err)
		}
		if s.f, err = q.opts.openFile(s.path, os.O_RDWR, 0o644); err != nil {
			return fmt.Errorf("open segment %s: %w", s.path, err)
		}
		res, err := scanSegment(s, fi.Size())
		if err != nil {
			return err
		}
		if res.err == nil {
			continue
		}
		lost := fi.Size() - s.size
		if i == len(q.segs)-1 && res.torn {
			q.log.Warn("truncate torn final record", "segment", s.name(), "offset", s.size, "bytes", lost, "err", res.err)
			q.repair.TornBytes += lost
		} else {
			cerr := &CorruptionError{Dir: q.dir, Segment: s.name(), Offset: s.size, Err: res.err}
			if !q.opts.Repair {
				return cerr
			}
			q.log.Warn("repair: truncate corrupt segment", "segment", s.name(), "offset", s.size, "lost_bytes", lost, "err", res.err)
			q.repair.LostBytes += lost
			corrupt[i] = true
		}
		if err := s.f.Truncate(s.size); err != nil {
			return fmt.Errorf("truncate segment %s to %d: %w", s.path, s.size, err)
		}
		if err := q.syncFile(s); err != nil {
			return err
		}
	}

	// Segments must meet.
	for i := 0; i+1 < len(q.segs); i++ {
		s, nx := q.segs[i], q.segs[i+1]
		switch {
		case s.end > nx.first:
			return &CorruptionError{Dir: q.dir, Segment: nx.name(), Offset: 0,
				Err: fmt.Errorf("%w: segment %s ends at index %d", ErrSegmentOverlap, s.name(), s.end)}
		case s.end < nx.first:
			if !corrupt[i] {
				cerr := &CorruptionError{Dir: q.dir, Segment: segmentName(s.end), Offset: 0,
					Err: fmt.Errorf("%w: indices %d to %d", ErrMissingSegment, s.end, nx.first-1)}
				if !q.opts.Repair {
					return cerr
				}
				q.log.Warn("repair: record missing segment", "segment", segmentName(s.end), "records", nx.first-s.end)
			}
			q.repair.LostRecords += int64(nx.first - s.end)
			if err := q.writeGap(s, nx.first-s.end); err != nil {
				return err
			}
		}
	}

	// Cursor.
	committed, haveCursor, cerr := readCursor(q.dir)
	if cerr != nil {
		if !errors.Is(cerr, ErrCursorCorrupt) {
			return cerr
		}
		if !q.opts.Repair {
			return &CorruptionError{Dir: q.dir, Segment: CursorFile, Offset: 0, Err: cerr}
		}
		committed, haveCursor = 0, false
		q.repair.CursorReset = true
	}

	if len(q.segs) == 0 {
		s, err := q.createSegment(committed)
		if err != nil {
			return err
		}
		q.segs = append(q.segs, s)
	}
	if q.repair.CursorReset {
		committed = q.segs[0].first
		q.log.Warn("repair: cursor corrupt, resetting to first index on disk; records from there are delivered again", "index", committed, "err", cerr)
	}
	head := q.head()
	if committed > head.end {
		q.log.Warn("cursor beyond last record; recording a gap", "committed", committed, "next", head.end)
		if err := q.writeGap(head, committed-head.end); err != nil {
			return err
		}
	}
	q.committed = committed
	q.persisted = committed
	q.next = head.end
	for _, s := range q.segs {
		q.addBytes(s.size)
	}
	for len(q.segs) > 1 && q.segs[0].end <= committed && q.segs[1].end > q.segs[1].first {
		q.removeFirst() // but keep the newest segment holding frames, as Commit does
	}
	if q.repair.CursorReset || (haveCursor && committed < q.segs[0].first) {
		// Rewrite the cursor: a reset one must not be read as corrupt again,
		// and one below the first segment is raised to it.
		q.committed = max(committed, q.segs[0].first)
		if err := writeCursor(q.dir, q.committed); err != nil {
			return err
		}
		q.persisted = q.committed
	}
	q.synced = q.next
	q.readable.Store(q.next)
	return nil
}

// writeGap appends a gap frame for n indices to s and fsyncs it.
func (q *Queue) writeGap(s *segment, n uint64) error {
	frame := appendGapFrame(nil, q.opts.Now().UnixNano(), n)
	if err := q.writeFrame(s, frame, n); err != nil {
		return err
	}
	// writeFrame counted the bytes; load counts every segment's size once
	// at the end, so undo it here.
	q.addBytes(-int64(len(frame)))
	return q.syncFile(s)
}

func (q *Queue) syncFile(s *segment) error {
	q.fsyncs.Add(1)
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("fsync segment %s: %w", s.path, err)
	}
	return nil
}

// Repair opens the queue in dir with Options.Repair set, fixing every
// problem Open would report as a *CorruptionError except overlapping
// segments, and returns what was lost. The queue is closed again.
func Repair(dir string, opts Options) (RepairStats, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return RepairStats{}, fmt.Errorf("repair %s: %w", dir, err)
	}
	opts.Repair = true
	q, err := Open(dir, opts)
	if err != nil {
		return RepairStats{}, fmt.Errorf("repair %s: %w", dir, err)
	}
	st := q.Stats().Repair
	return st, q.Close()
}
