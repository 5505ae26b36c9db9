package buffer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Queue is a durable, segmented, append-only log of records addressed by a
// dense uint64 index, with one committed position. See segment.go for the
// segment and frame format and cursor.go for the cursor file.
//
// All methods are safe for concurrent use. Append may be called from many
// goroutines; under SyncAlways their fsyncs are shared (group commit).
// Readers see a record once Append may return for it: under SyncAlways
// only after its fsync, under SyncInterval after its write.
//
// Memory is bounded: records live on disk; per segment the queue keeps its
// totals and an offset index with one entry per 64 KiB. Each segment keeps
// one open file descriptor.
type Queue struct {
	dir   string
	name  string // the queue's name in its Group; "" if standalone
	opts  Options
	log   *slog.Logger
	group *Group

	// mu guards the fields below it and the files' contents and sizes.
	// Reads take it shared for the duration of their pread.
	mu        sync.RWMutex
	segs      []*segment // ascending by first; the last is the head, appended to
	next      uint64     // index the next record gets
	committed uint64
	closed    bool
	bytes     int64 // sum of segment sizes
	wbuf      []byte
	dropped   [numReasons]DropCounts
	repair    RepairStats
	inflight  sync.WaitGroup // Appends past their write, waiting for fsync

	failed atomic.Pointer[error] // a sticky failure: fsync or truncate failed

	readable atomic.Uint64 // records below it may be read
	nmu      sync.Mutex
	notify   chan struct{} // closed and replaced when readable grows

	smu     sync.Mutex    // guards synced and syncing
	synced  uint64        // records below it are durable
	syncing chan struct{} // non-nil while a leader fsyncs; closed when done

	cmu       sync.Mutex // serialises cursor writes
	persisted uint64     // index in the cursor file

	hmu      sync.Mutex
	hints    [4]hint // recent read positions, for sequential readers
	hintNext int

	appends atomic.Uint64
	fsyncs  atomic.Uint64

	stop chan struct{} // stops the SyncInterval goroutine
	wg   sync.WaitGroup
}

// hint is a known frame start in segment seg.
type hint struct {
	seg uint64
	pos position
	ok  bool
}

// Entry is one record returned by [Queue.ReadEntry].
type Entry struct {
	Index   uint64    // index of this record
	Next    uint64    // index to read next (Index+1)
	Skipped uint64    // indices between the requested one and Index that are gone (dropped, lost to repair)
	Samples int       // sample count given to Append
	Time    time.Time // when it was appended
	Data    []byte    // dst with the record appended
}

// Open opens (creating if needed) the standalone queue in dir, recovering
// from a crash: a torn final record is truncated. Any other damage is
// returned as a *CorruptionError unless opts.Repair is set.
func Open(dir string, opts Options) (*Queue, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return openQueue(dir, opts, nil, "")
}

// Append writes rec with its sample count and returns its index. Under
// SyncAlways it returns once the record is on stable storage; under
// SyncInterval once it is written. A full disk gives an error wrapping
// [ErrDiskFull] and leaves the queue usable. If ctx ends while Append waits
// for its fsync, the error is ctx's and the record may or may not survive a
// crash.
func (q *Queue) Append(ctx context.Context, rec []byte, samples int) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(rec) > q.opts.MaxRecordBytes {
		return 0, fmt.Errorf("append record of %d bytes (max %d): %w", len(rec), q.opts.MaxRecordBytes, ErrRecordTooLarge)
	}
	if samples < 0 || samples > math.MaxUint32 {
		return 0, fmt.Errorf("append record with %d samples: %w", samples, ErrInvalidOption)
	}
	var idx uint64
	var err error
	if g := q.group; g != nil {
		idx, err = g.append(q, rec, samples)
	} else {
		idx, err = q.write(rec, samples)
	}
	if err != nil {
		return 0, err
	}
	defer q.inflight.Done()
	if q.opts.Sync == SyncAlways {
		if err := q.waitDurable(ctx, idx+1); err != nil {
			return 0, fmt.Errorf("wait for fsync of record %d: %w", idx, err)
		}
	}
	return idx, nil
}

// write appends one record frame to the head segment, starting a new
// segment first if the head is full. On success the caller must call
// q.inflight.Done.
func (q *Queue) write(rec []byte, samples int) (uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return 0, ErrClosed
	}
	if p := q.failed.Load(); p != nil {
		return 0, fmt.Errorf("append to %s after earlier failure: %w", q.dir, *p)
	}
	size := frameHeaderSize + int64(len(rec))
	if head := q.head(); head.size > 0 && head.size+size > q.opts.SegmentBytes {
		if err := q.cut(); err != nil {
			return 0, err
		}
	}
	q.wbuf = appendFrame(q.wbuf[:0], frameRecord, q.opts.Now().UnixNano(), uint32(samples), rec)
	err := q.writeFrame(q.head(), q.wbuf, 1)
	if cap(q.wbuf) > 1<<20 {
		q.wbuf = nil
	}
	if err != nil {
		return 0, err
	}
	idx := q.next
	q.next = q.head().end
	q.appends.Add(1)
	q.inflight.Add(1)
	if q.opts.Sync == SyncInterval {
		q.publish(q.next)
	}
	return idx, nil
}

// writeFrame writes an encoded frame standing for n indices at the end of
// s. A failed write is truncated away. Caller holds q.mu.
func (q *Queue) writeFrame(s *segment, frame []byte, n uint64) error {
	off := s.size
	if _, err := s.f.WriteAt(frame, off); err != nil {
		werr := fmt.Errorf("write frame to segment %s at offset %d: %w", s.path, off, diskError(err))
		if terr := s.f.Truncate(off); terr != nil {
			q.fail(fmt.Errorf("truncate segment %s to %d after failed write: %w", s.path, off, terr))
			return errors.Join(werr, terr)
		}
		return werr
	}
	h, err := decodeHeader(frame)
	if err != nil {
		panic(fmt.Sprintf("buffer: encoded an invalid frame: %v", err)) // a bug, not I/O
	}
	s.account(off, h, n)
	q.addBytes(h.size())
	return nil
}

// cut seals the head segment (fsync) and starts a new one at q.next. An
// empty head is kept. Caller holds q.mu.
func (q *Queue) cut() error {
	old := q.head()
	if old.size == 0 {
		return nil
	}
	q.fsyncs.Add(1)
	if err := old.f.Sync(); err != nil {
		err = fmt.Errorf("fsync segment %s: %w", old.path, err)
		q.fail(err)
		return err
	}
	s, err := q.createSegment(q.next)
	if err != nil {
		return err
	}
	q.segs = append(q.segs, s)
	return nil
}

// createSegment creates an empty segment file whose first index is first
// and makes its directory entry durable.
func (q *Queue) createSegment(first uint64) (*segment, error) {
	path := filepath.Join(q.dir, segmentName(first))
	f, err := q.opts.openFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create segment %s: %w", path, diskError(err))
	}
	if err := syncDir(q.dir); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return nil, diskError(err)
	}
	return &segment{first: first, end: first, path: path, f: f}, nil
}

func (q *Queue) head() *segment { return q.segs[len(q.segs)-1] }

func (q *Queue) addBytes(n int64) {
	q.bytes += n
	if q.group != nil {
		q.group.bytes.Add(n)
	}
}

// fail records a failure after which the queue refuses appends: after a
// failed fsync the kernel may have dropped dirty pages, so nothing written
// since the last good fsync can be trusted until the queue is reopened.
func (q *Queue) fail(err error) {
	if q.failed.CompareAndSwap(nil, &err) {
		q.log.Error("queue failed; reopen it to recover", "err", err)
	}
}

// waitDurable returns once every record below target is durable. The first
// waiter to find no fsync running becomes the leader and fsyncs the head
// segment; everyone whose write the fsync covers returns with it.
func (q *Queue) waitDurable(ctx context.Context, target uint64) error {
	q.smu.Lock()
	for {
		if q.synced >= target {
			q.smu.Unlock()
			return nil
		}
		if p := q.failed.Load(); p != nil {
			q.smu.Unlock()
			return *p
		}
		if ch := q.syncing; ch != nil {
			q.smu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
			q.smu.Lock()
			continue
		}
		ch := make(chan struct{})
		q.syncing = ch
		q.smu.Unlock()
		upto, err := q.syncHead()
		q.smu.Lock()
		q.syncing = nil
		close(ch)
		if err != nil {
			q.fail(err)
			continue
		}
		if upto > q.synced {
			q.synced = upto
			q.publish(upto)
		}
	}
}

// syncHead fsyncs the head segment and returns the index below which every
// record is now durable. Sealed segments were fsynced by cut.
func (q *Queue) syncHead() (uint64, error) {
	q.mu.RLock()
	upto := q.next
	s := q.head()
	q.mu.RUnlock()
	q.fsyncs.Add(1)
	if err := s.f.Sync(); err != nil {
		if s.removed.Load() { // dropped meanwhile: nothing left to make durable
			return upto, nil
		}
		return 0, fmt.Errorf("fsync segment %s: %w", s.path, err)
	}
	return upto, nil
}

// runSyncer fsyncs the head every SyncInterval until q.stop is closed.
func (q *Queue) runSyncer() {
	defer q.wg.Done()
	t := time.NewTicker(q.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-q.stop:
			return
		case <-t.C:
		}
		q.syncIfDirty()
	}
}

func (q *Queue) syncIfDirty() {
	if q.failed.Load() != nil {
		return
	}
	q.mu.RLock()
	next := q.next
	q.mu.RUnlock()
	q.smu.Lock()
	defer q.smu.Unlock()
	if next <= q.synced {
		return
	}
	upto, err := q.syncHead()
	if err != nil {
		q.fail(err)
		return
	}
	q.synced = max(q.synced, upto)
}

// publish makes records below upto readable and wakes waiting readers.
func (q *Queue) publish(upto uint64) {
	for {
		cur := q.readable.Load()
		if upto <= cur {
			return
		}
		if q.readable.CompareAndSwap(cur, upto) {
			break
		}
	}
	q.nmu.Lock()
	close(q.notify)
	q.notify = make(chan struct{})
	q.nmu.Unlock()
}

// Notify returns a channel that is closed when more records become
// readable (or the queue closes). Take it before the Read that returns
// io.EOF, then wait on it.
func (q *Queue) Notify() <-chan struct{} {
	q.nmu.Lock()
	defer q.nmu.Unlock()
	return q.notify
}

// Wait blocks until a record at or above idx may be readable, ctx ends or
// the queue closes. Records may have been dropped meanwhile; Read says.
func (q *Queue) Wait(ctx context.Context, idx uint64) error {
	for {
		ch := q.Notify()
		if q.readable.Load() > idx {
			return nil
		}
		q.mu.RLock()
		closed := q.closed
		q.mu.RUnlock()
		if closed {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Read appends the record at idx to dst and returns the extended slice and
// the index to read next. If idx was dropped (or lost to repair) it returns
// the first surviving record above idx; the record's index is next-1. At the
// tail it returns io.EOF. Records below Committed can still be read while
// their segment exists.
func (q *Queue) Read(idx uint64, dst []byte) (rec []byte, next uint64, err error) {
	e, err := q.ReadEntry(idx, dst)
	if err != nil {
		return dst, idx, err
	}
	return e.Data, e.Next, nil
}

// ReadEntry is Read returning the record's metadata as well.
func (q *Queue) ReadEntry(idx uint64, dst []byte) (Entry, error) {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return Entry{}, ErrClosed
	}
	want := idx
	limit := q.readable.Load()
	for {
		if idx >= limit {
			return Entry{}, io.EOF
		}
		i := sort.Search(len(q.segs), func(i int) bool { return q.segs[i].end > idx })
		if i == len(q.segs) {
			return Entry{}, io.EOF
		}
		s := q.segs[i]
		if idx < s.first {
			idx = s.first
			continue
		}
		f, err := q.seek(s, idx)
		if err != nil {
			return Entry{}, err
		}
		if f.pos.off >= s.size {
			return Entry{}, q.corruption(s, f.pos.off, fmt.Errorf("%w: index %d not found", ErrTruncatedFrame, idx))
		}
		if f.h.kind == frameGap {
			idx = f.pos.idx + f.n
			continue
		}
		start := len(dst)
		dst = slices.Grow(dst, int(f.h.length))[:start+int(f.h.length)]
		if _, err := s.f.ReadAt(dst[start:], f.pos.off+frameHeaderSize); err != nil {
			return Entry{}, fmt.Errorf("read segment %s at offset %d: %w", s.path, f.pos.off, err)
		}
		if err := checkFrame(f.hdr[:], dst[start:]); err != nil {
			return Entry{}, q.corruption(s, f.pos.off, err)
		}
		next := f.pos
		next.idx, next.off = idx+1, f.pos.off+f.h.size()
		next.records++
		next.samples += int64(f.h.samples)
		q.setHint(s.first, f.pos.idx, next)
		return Entry{
			Index:   idx,
			Next:    idx + 1,
			Skipped: idx - want,
			Samples: int(f.h.samples),
			Time:    time.Unix(0, f.h.time),
			Data:    dst,
		}, nil
	}
}

// found is a frame located by seek.
type found struct {
	pos position
	h   frameHeader
	hdr [frameHeaderSize]byte
	n   uint64 // indices the frame stands for
}

// seek finds the frame of s that holds idx, or returns pos.off == s.size if
// idx >= s.end. Caller holds q.mu (shared is enough).
func (q *Queue) seek(s *segment, idx uint64) (found, error) {
	var f found
	f.pos = position{idx: s.first}
	if i := sort.Search(len(s.sparse), func(i int) bool { return s.sparse[i].idx > idx }); i > 0 {
		f.pos = s.sparse[i-1]
	}
	if p, ok := q.hint(s.first, idx); ok && p.off > f.pos.off {
		f.pos = p
	}
	for f.pos.off < s.size {
		h, n, err := readFrameHeader(s.f, f.pos.off, f.hdr[:])
		if err != nil {
			return f, q.corruption(s, f.pos.off, err)
		}
		f.h, f.n = h, n
		if idx < f.pos.idx+n {
			return f, nil
		}
		f.pos.idx += n
		f.pos.off += h.size()
		if h.kind == frameRecord {
			f.pos.records++
			f.pos.samples += int64(h.samples)
		}
	}
	return f, nil
}

func (q *Queue) hint(seg, idx uint64) (position, bool) {
	q.hmu.Lock()
	defer q.hmu.Unlock()
	var best position
	ok := false
	for _, h := range q.hints {
		if h.ok && h.seg == seg && h.pos.idx <= idx && (!ok || h.pos.off > best.off) {
			best, ok = h.pos, true
		}
	}
	return best, ok
}

// setHint remembers pos, replacing the hint that pointed at from if any.
func (q *Queue) setHint(seg, from uint64, pos position) {
	q.hmu.Lock()
	defer q.hmu.Unlock()
	for i, h := range q.hints {
		if h.ok && h.seg == seg && h.pos.idx == from {
			q.hints[i].pos = pos
			return
		}
	}
	q.hints[q.hintNext] = hint{seg: seg, pos: pos, ok: true}
	q.hintNext = (q.hintNext + 1) % len(q.hints)
}

func (q *Queue) corruption(s *segment, off int64, err error) error {
	return &CorruptionError{Dir: q.dir, Segment: s.name(), Offset: off, Err: err}
}

// Commit records that every index below idx has been consumed, persists it
// (fsync) and deletes the segments wholly below it. Committing an index at
// or below Committed is a no-op.
func (q *Queue) Commit(idx uint64) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	if idx > q.next {
		next := q.next
		q.mu.Unlock()
		return fmt.Errorf("commit index %d beyond next index %d: %w", idx, next, ErrInvalidIndex)
	}
	if idx <= q.committed {
		q.mu.Unlock()
		return nil
	}
	q.committed = idx
	// Deleting first is safe: after a crash before the cursor is written the
	// reader resumes at the first surviving index, which is <= idx. It also
	// frees space for the cursor on a full disk.
	// The newest segment holding frames is kept even when committed: a
	// reader of the queue's tail (the relay's sealer resumes from its last
	// outbox frame) must find it after a restart, also when a failed append
	// left an empty head segment behind it.
	for len(q.segs) > 1 && q.segs[0].end <= idx && q.segs[1].end > q.segs[1].first {
		q.removeFirst()
	}
	q.mu.Unlock()
	return q.persistCursor(idx)
}

// persistCursor writes idx to the cursor file unless a later Commit already
// wrote a higher index.
func (q *Queue) persistCursor(idx uint64) error {
	q.cmu.Lock()
	defer q.cmu.Unlock()
	if idx <= q.persisted {
		return nil
	}
	if err := writeCursor(q.dir, idx); err != nil {
		return fmt.Errorf("commit index %d: %w", idx, err)
	}
	q.persisted = idx
	return nil
}

// removeFirst deletes the oldest segment. Caller holds q.mu; there are at
// least two segments.
func (q *Queue) removeFirst() {
	s := q.segs[0]
	q.segs[0] = nil
	q.segs = q.segs[1:]
	s.removed.Store(true)
	q.addBytes(-s.size)
	if err := s.f.Close(); err != nil {
		q.log.Warn("close segment", "segment", s.path, "err", err)
	}
	if err := os.Remove(s.path); err != nil {
		q.log.Warn("remove segment", "segment", s.path, "err", err)
	}
}

// Committed returns the committed index: everything below it is consumed.
func (q *Queue) Committed() uint64 {
	q.mu.RLock()
	defer q.mu.RUnlock()
	return q.committed
}

// FirstIndex returns the lowest index still on disk (committed or not).
func (q *Queue) FirstIndex() uint64 {
	q.mu.RLock()
	defer q.mu.RUnlock()
	return q.segs[0].first
}

// NextIndex returns the index the next Append will get.
func (q *Queue) NextIndex() uint64 {
	q.mu.RLock()
	defer q.mu.RUnlock()
	return q.next
}

// DropCounts is what a drop or a repair lost.
type DropCounts struct {
	Records int64
	Bytes   int64 // frame bytes, headers included
	Samples int64
}

func (d *DropCounts) add(o DropCounts) {
	d.Records += o.Records
	d.Bytes += o.Bytes
	d.Samples += o.Samples
}

// RepairStats is what Open repaired.
type RepairStats struct {
	// LostRecords counts indices known lost: in a corrupt segment followed by
	// another, or in a missing segment. Records cut from the tail of a
	// corrupt last segment are counted in LostBytes only.
	LostRecords int64
	LostBytes   int64
	// TornBytes were truncated from a torn final record (not an error).
	TornBytes int64
	// CursorReset says the cursor was corrupt and reset to the first index
	// on disk: records between the lost cursor and there are read again.
	CursorReset bool
}

// Stats is a snapshot of a queue. Pending means at or above Committed.
type Stats struct {
	FirstIndex, NextIndex, Committed uint64
	PendingRecords                   int64
	PendingBytes                     int64
	PendingSamples                   int64
	OldestPending                    time.Time // append time of the oldest pending record; zero if none
	Segments                         int
	DiskBytes                        int64
	// DroppedCap and DroppedAge count uncommitted data a Group dropped,
	// for reason [ReasonCap] and [ReasonAge].
	DroppedCap DropCounts
	DroppedAge DropCounts
	Repair     RepairStats
	Appends    uint64 // successful Appends since Open
	Fsyncs     uint64 // fsyncs of segment files since Open
}

// Stats returns a snapshot of the queue's counters.
func (q *Queue) Stats() Stats {
	q.mu.RLock()
	defer q.mu.RUnlock()
	st := Stats{
		FirstIndex: q.segs[0].first,
		NextIndex:  q.next,
		Committed:  q.committed,
		Segments:   len(q.segs),
		DiskBytes:  q.bytes,
		DroppedCap: q.dropped[dropCap],
		DroppedAge: q.dropped[dropAge],
		Repair:     q.repair,
		Appends:    q.appends.Load(),
		Fsyncs:     q.fsyncs.Load(),
	}
	if q.closed {
		return st
	}
	var oldest int64
	for _, s := range q.segs {
		dc, off, err := q.pending(s)
		if err != nil {
			q.log.Warn("compute pending", "segment", s.path, "err", err)
			continue
		}
		st.PendingRecords += dc.Records
		st.PendingBytes += dc.Bytes
		st.PendingSamples += dc.Samples
		if oldest == 0 && dc.Records > 0 {
			oldest = q.firstRecordTime(s, off)
		}
	}
	if oldest != 0 {
		st.OldestPending = time.Unix(0, oldest)
	}
	return st
}

// pending returns what of s is at or above the committed index, and the
// offset where that starts. Caller holds q.mu.
func (q *Queue) pending(s *segment) (DropCounts, int64, error) {
	switch {
	case q.committed >= s.end:
		return DropCounts{}, s.size, nil
	case q.committed <= s.first:
		return DropCounts{Records: s.records, Bytes: s.size, Samples: s.samples}, 0, nil
	}
	f, err := q.seek(s, q.committed)
	if err != nil {
		return DropCounts{}, 0, err
	}
	return DropCounts{
		Records: s.records - f.pos.records,
		Bytes:   s.size - f.pos.off,
		Samples: s.samples - f.pos.samples,
	}, f.pos.off, nil
}

// firstRecordTime returns the append time of the first record frame at or
// after off in s, 0 if none.
func (q *Queue) firstRecordTime(s *segment, off int64) int64 {
	var hdr [frameHeaderSize]byte
	for off < s.size {
		h, _, err := readFrameHeader(s.f, off, hdr[:])
		if err != nil {
			return 0
		}
		if h.kind == frameRecord {
			return h.time
		}
		off += h.size()
	}
	return 0
}

// Close waits for Appends in flight, fsyncs and closes the files. Further
// calls return ErrClosed (Close itself returns nil).
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()

	close(q.stop)
	q.wg.Wait()
	q.inflight.Wait()

	var errs []error
	if q.failed.Load() == nil {
		q.smu.Lock()
		if _, err := q.syncHead(); err != nil {
			errs = append(errs, err)
		}
		q.smu.Unlock()
	}
	q.mu.Lock()
	for _, s := range q.segs {
		if err := s.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close segment %s: %w", s.path, err))
		}
	}
	q.mu.Unlock()
	q.nmu.Lock()
	close(q.notify)
	q.notify = make(chan struct{})
	close(q.notify)
	q.nmu.Unlock()
	return errors.Join(errs...)
}
