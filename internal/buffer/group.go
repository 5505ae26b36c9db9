package buffer

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
)

// Drop reasons, the values of the reason label of
// tillpipe_relay_samples_dropped_total and the reason argument of
// GroupOptions.OnDrop.
const (
	ReasonCap = "cap" // the group's MaxBytes was reached
	ReasonAge = "age" // older than the group's MaxAge
)

type dropReason int

const (
	dropCap dropReason = iota
	dropAge
	numReasons
)

func (r dropReason) String() string {
	if r == dropAge {
		return ReasonAge
	}
	return ReasonCap
}

// Group is a set of queues, one per priority class, sharing a byte cap and
// a maximum age. Each queue lives in a subdirectory named after it.
//
// Drops are at segment granularity: a drop deletes a queue's oldest whole
// segment (sealing the head first if it is the only one); the records in it
// at or above the queue's committed index are counted as dropped, per queue
// and reason, in [Stats] and through GroupOptions.OnDrop. When an Append
// would exceed MaxBytes, segments of the lowest-priority queue holding any
// data go first, then the next one up; the highest only when all others are
// empty. MaxAge drops every segment whose newest record is older than
// MaxAge, in any queue, so a record can outlive MaxAge by the time its
// segment took to fill.
//
// Group is safe for concurrent use. Appends to queues of one group are
// serialised while they write (not while they wait for fsync).
type Group struct {
	dir    string
	opts   GroupOptions
	queues []*Queue // highest priority first
	byName map[string]*Queue

	mu    sync.Mutex   // serialises writes and drops across the group
	bytes atomic.Int64 // segment bytes of all queues
}

// dropEvent is one drop, reported to OnDrop after the locks are released.
type dropEvent struct {
	queue  string
	reason dropReason
	counts DropCounts
}

// OpenGroup opens (creating if needed) one queue per name under dir, names
// listed highest priority first, and enforces the cap and age limits once.
func OpenGroup(dir string, names []string, opts GroupOptions) (*Group, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("open group %s without queues: %w", dir, ErrInvalidOption)
	}
	g := &Group{dir: dir, opts: opts, byName: make(map[string]*Queue, len(names))}
	for _, name := range names {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
			g.closeQueues()
			return nil, fmt.Errorf("queue name %q: %w", name, ErrInvalidOption)
		}
		if _, dup := g.byName[name]; dup {
			g.closeQueues()
			return nil, fmt.Errorf("duplicate queue name %q: %w", name, ErrInvalidOption)
		}
		qo := opts.Queue
		qo.Logger = qo.Logger.With("queue", name)
		q, err := openQueue(filepath.Join(dir, name), qo, g, name)
		if err != nil {
			g.closeQueues()
			return nil, fmt.Errorf("open queue %s: %w", name, err)
		}
		g.queues = append(g.queues, q)
		g.byName[name] = q
	}
	if err := g.DropExpired(); err != nil {
		g.closeQueues()
		return nil, err
	}
	return g, nil
}

// Queue returns the queue with the given name, nil if there is none.
func (g *Group) Queue(name string) *Queue { return g.byName[name] }

// Bytes returns the segment bytes of all queues.
func (g *Group) Bytes() int64 { return g.bytes.Load() }

// Stats returns every queue's Stats by name.
func (g *Group) Stats() map[string]Stats {
	m := make(map[string]Stats, len(g.queues))
	for _, q := range g.queues {
		m[q.name] = q.Stats()
	}
	return m
}

// DropExpired enforces MaxAge and MaxBytes now. Append does this too; call
// it periodically so that age limits hold while nothing is appended.
func (g *Group) DropExpired() error {
	g.mu.Lock()
	events, err := g.makeRoom(0)
	g.mu.Unlock()
	g.report(events)
	return err
}

// Close closes every queue.
func (g *Group) Close() error {
	return g.closeQueues()
}

func (g *Group) closeQueues() error {
	var errs []error
	for _, q := range g.queues {
		if err := q.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close queue %s: %w", q.name, err))
		}
	}
	return errors.Join(errs...)
}

// append makes room for rec in the group, then writes it to q.
func (g *Group) append(q *Queue, rec []byte, samples int) (uint64, error) {
	g.mu.Lock()
	events, err := g.makeRoom(frameHeaderSize + int64(len(rec)))
	if err != nil {
		q.log.Warn("make room in group", "err", err)
	}
	idx, err := q.write(rec, samples)
	g.mu.Unlock()
	g.report(events)
	return idx, err
}

// makeRoom drops expired segments, then drops segments until need more
// bytes fit under MaxBytes. Caller holds g.mu.
func (g *Group) makeRoom(need int64) ([]dropEvent, error) {
	var events []dropEvent
	var errs []error
	if g.opts.MaxAge > 0 {
		cutoff := g.opts.Now().Add(-g.opts.MaxAge).UnixNano()
		for _, q := range g.queues {
			for {
				dc, ok, err := q.dropOldestIf(dropAge, func(s *segment) bool { return s.maxTime < cutoff })
				if err != nil {
					errs = append(errs, err)
				}
				if !ok {
					break
				}
				events = append(events, dropEvent{q.name, dropAge, dc})
			}
		}
	}
	if g.opts.MaxBytes > 0 {
	victims:
		for g.bytes.Load()+need > g.opts.MaxBytes {
			for i := len(g.queues) - 1; i >= 0; i-- {
				q := g.queues[i]
				dc, ok, err := q.dropOldestIf(dropCap, nil)
				if err != nil {
					errs = append(errs, err)
				}
				if ok {
					events = append(events, dropEvent{q.name, dropCap, dc})
					continue victims
				}
			}
			break // nothing left to drop
		}
	}
	return events, errors.Join(errs...)
}

func (g *Group) report(events []dropEvent) {
	if g.opts.OnDrop == nil {
		return
	}
	for _, e := range events {
		g.opts.OnDrop(e.queue, e.reason.String(), e.counts.Records, e.counts.Bytes, e.counts.Samples)
	}
}

// dropOldestIf deletes q's oldest segment if it holds any frames and cond
// (nil = always) holds for it, sealing the head first if it is the only
// segment. It returns what was dropped that had not been committed.
func (q *Queue) dropOldestIf(reason dropReason, cond func(*segment) bool) (DropCounts, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return DropCounts{}, false, nil
	}
	for len(q.segs) > 1 && q.segs[0].size == 0 {
		q.removeFirst()
	}
	s := q.segs[0]
	if s.size == 0 || (cond != nil && !cond(s)) {
		return DropCounts{}, false, nil
	}
	if len(q.segs) == 1 {
		if err := q.cut(); err != nil {
			return DropCounts{}, false, err
		}
	}
	dc, _, err := q.pending(s)
	if err != nil {
		// Unreadable: count it all; better over than under.
		dc = DropCounts{Records: s.records, Bytes: s.size, Samples: s.samples}
	}
	q.removeFirst()
	q.dropped[reason].add(dc)
	q.log.Debug("drop segment", "segment", s.name(), "reason", reason.String(), "records", dc.Records, "samples", dc.Samples)
	return dc, true, nil
}
