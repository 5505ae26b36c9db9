package seal

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The state files (state.go) exist for one case: a class's outbox tail frame,
// which records its last seal, is gone while the inbox still holds records
// that class sealed. A tail frame disappears only when the outbox drops
// segments: by its byte cap or its max age, inside an outbox Append or
// [buffer.Group.DropExpired] (a Commit by the uplink keeps the head segment,
// and so the tail). The stage is the only writer of the outbox and the only
// caller of DropExpired, so it knows every moment a drop can happen, and
// writes the state files then instead of after every seal:
//
//   - An append takes the fast path (shared lock, no state write) only when it
//     cannot drop anything: the outbox bytes plus every append in flight stay
//     under the cap (reservations), and no class whose state file is behind
//     its tail appended longer than half the max age ago (so that no tail a
//     state file does not cover is old enough to expire).
//   - Otherwise it takes the slow path: the exclusive lock (no other append in
//     flight), write the state file of every class whose file is behind its
//     last appended frame, then append. DropExpired runs the same way.
//
// So, whenever a tail frame is dropped, the state file of its class already
// holds that frame's seq and last record (or a newer one's), and recovery
// (newest of tail and state file) is exact, as before. A failed append also
// forces the slow path until the state files are written, as a second line
// of defence: the buffer may have started a new, empty head segment, and
// buffer's Commit and Open keep the newest segment holding frames for
// exactly that case (buffer TestCommit_KeepsTailSegmentAfterFailedAppend).
type guard struct {
	mu        sync.RWMutex
	reserved  atomic.Int64 // bytes of fast-path appends in flight
	forceSlow atomic.Bool
}

// appendSlack covers the buffer's frame header per append.
const appendSlack = 256

// appendBatch appends cs's sealed frame to its outbox queue, writing state
// files first when the append may drop a batch; see guard.
func (s *Stage) appendBatch(ctx context.Context, cs *sealer, frame []byte, samples int, seq, last uint64) error {
	g := &s.guard
	need := int64(len(frame)) + appendSlack
	g.mu.RLock()
	r := g.reserved.Add(need)
	if s.mayAppendFast(r) {
		now := s.opts.Now()
		_, err := cs.out.Append(ctx, frame, samples)
		if err == nil {
			cs.appended(seq, last, now)
		} else {
			g.forceSlow.Store(true)
		}
		g.reserved.Add(-need)
		g.mu.RUnlock()
		return err
	}
	g.reserved.Add(-need)
	g.mu.RUnlock()

	g.mu.Lock()
	defer g.mu.Unlock()
	if err := s.saveStates(); err != nil {
		return err
	}
	now := s.opts.Now()
	if _, err := cs.out.Append(ctx, frame, samples); err != nil {
		g.forceSlow.Store(true)
		return err
	}
	cs.appended(seq, last, now)
	return nil
}

// mayAppendFast reports whether an append can drop nothing while appends
// of reserved bytes (its own included) are in flight. Caller holds guard.mu shared.
func (s *Stage) mayAppendFast(reserved int64) bool {
	if s.guard.forceSlow.Load() {
		return false
	}
	if s.outbox.maxBytes > 0 && s.outbox.Bytes()+reserved > s.outbox.maxBytes {
		return false
	}
	if s.outbox.maxAge > 0 {
		risky := s.opts.Now().Add(-s.outbox.maxAge / 2).UnixNano()
		for _, cs := range s.classes {
			if cs.unsaved.Load() && cs.appendedAt.Load() < risky {
				return false
			}
		}
	}
	return true
}

// dropExpired enforces the outbox's limits with the state files current.
func (s *Stage) dropExpired() error {
	if s.outbox.maxAge <= 0 && s.outbox.maxBytes <= 0 {
		return nil
	}
	s.guard.mu.Lock()
	defer s.guard.mu.Unlock()
	if err := s.saveStates(); err != nil {
		return err
	}
	return s.outbox.DropExpired()
}

// saveStates writes the state file of every class whose file is behind its
// last appended frame. Caller holds guard.mu exclusively, so no append is in
// flight.
func (s *Stage) saveStates() error {
	for _, cs := range s.classes {
		if !cs.unsaved.Load() {
			continue
		}
		cs.dmu.Lock()
		st := cs.durable
		cs.dmu.Unlock()
		if err := writeState(cs.statePath, st); err != nil {
			return fmt.Errorf("seal %s: %w", cs.class, err)
		}
		s.m.stateWrites.WithLabelValues(cs.class.String()).Inc()
		cs.unsaved.Store(false)
	}
	s.guard.forceSlow.Store(false)
	return nil
}

// appended records that the frame (seq, last) is in the outbox, appended at
// now. Caller holds guard.mu (either way).
func (cs *sealer) appended(seq, last uint64, now time.Time) {
	cs.dmu.Lock()
	cs.durable = sealState{Seq: seq, LastRecord: last}
	cs.dmu.Unlock()
	cs.appendedAt.Store(now.UnixNano())
	cs.unsaved.Store(true)
}
