package seal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"tillpipe/internal/buffer"
	"tillpipe/internal/wire"
)

// sealer is one class's loop. Only its goroutine touches the batch; mu
// guards pos and seq for [Stage.Position]; safe, durable, unsaved and
// appendedAt are read by the other classes' sealers and the committer.
type sealer struct {
	stage     *Stage
	class     wire.Class
	in, out   *buffer.Queue // in: the inbox's queue, shared by every class
	limits    Limits
	statePath string
	log       *slog.Logger

	mu        sync.Mutex
	pos       uint64    // next inbox record to read
	seq       uint64    // seq of the last sealed batch
	openBytes int       // len(raw), for the backlog metric
	openSince time.Time // oldest of the open batch; zero when empty

	safe atomic.Uint64 // every record below it is sealed or holds nothing of this class

	dmu        sync.Mutex
	durable    sealState    // the newest frame in the outbox (guarded by dmu)
	unsaved    atomic.Bool  // the state file is behind durable
	appendedAt atomic.Int64 // unix nanos durable was appended

	// the batch being built
	raw        []byte
	first      uint64
	last       uint64
	records    int
	series     uint64
	samples    uint64
	minT, maxT int64
	oldest     time.Time // append time of the batch's first record

	rec   []byte // read buffer
	frame []byte // encode buffer
}

// maxKeptRecordBytes bounds the read buffer a sealer keeps between records.
const maxKeptRecordBytes = 1 << 20

func (cs *sealer) run(ctx context.Context) error {
	draining := false
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		notify := cs.in.Notify()
		e, err := cs.in.ReadEntry(cs.pos, cs.rec[:0])
		if err == nil {
			cs.rec = e.Data
			if cap(cs.rec) > maxKeptRecordBytes {
				cs.rec = nil // one huge request must not pin its buffer in three sealers
			}
			if err := cs.add(ctx, e); err != nil {
				return err
			}
			continue
		}
		if !errors.Is(err, io.EOF) {
			return fmt.Errorf("seal %s: read inbox record %d: %w", cs.class, cs.pos, err)
		}
		if draining {
			return cs.seal(ctx)
		}
		var fire <-chan time.Time
		if cs.records > 0 {
			wait := cs.oldest.Add(cs.limits.MaxAge).Sub(cs.stage.opts.Now())
			if wait <= 0 {
				if err := cs.seal(ctx); err != nil {
					return err
				}
				continue
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			fire = timer.C
		}
		select {
		case <-notify:
		case <-fire:
		case <-ctx.Done():
			draining = true
		}
	}
}

// add puts class cs's section of inbox entry e into the batch, sealing
// before it if it would overflow the byte limit and after it if the batch is
// full, or early if the batch holds back the commit of a full inbox.
func (cs *sealer) add(ctx context.Context, e buffer.Entry) error {
	h, err := ParseRecordHeader(e.Data)
	if err != nil {
		cs.skip(e, err)
		return nil
	}
	sec := *h.Section(cs.class)
	if sec.Len == 0 {
		// Nothing of this class: an empty batch moves the safe point on; an
		// open one covers the record.
		cs.skip(e, nil)
		return nil
	}
	if cs.records > 0 && len(cs.raw)+int(sec.Len) > cs.limits.MaxBytes {
		if err := cs.seal(ctx); err != nil {
			return err
		}
	}
	if cs.records == 0 {
		cs.raw = cs.raw[:0]
	}
	if _, cs.raw, err = h.AppendBody(cs.raw, e.Data, cs.class); err != nil {
		cs.skip(e, err)
		return nil
	}
	if cs.records == 0 {
		cs.first, cs.oldest = e.Index, e.Time
		cs.minT, cs.maxT = math.MaxInt64, math.MinInt64
	}
	cs.last = e.Index
	cs.records++
	cs.series += uint64(sec.Series)
	cs.samples += uint64(sec.Samples)
	if sec.Samples > 0 {
		cs.minT, cs.maxT = min(cs.minT, sec.MinTime), max(cs.maxT, sec.MaxTime)
	}
	cs.setPos(e.Next)
	if len(cs.raw) >= cs.limits.MaxBytes || cs.pressed() {
		return cs.seal(ctx)
	}
	return nil
}

// skip passes over inbox entry e, which holds nothing of this class or,
// when err is set, nothing readable (which cannot happen unless the disk
// lies past the buffer's CRC).
func (cs *sealer) skip(e buffer.Entry, err error) {
	if err != nil {
		cs.log.Error("skip unreadable inbox record", "record", e.Index, "err", err)
		cs.stage.m.errors.WithLabelValues(cs.class.String()).Inc()
	}
	if cs.records == 0 {
		cs.setPos(e.Next)
		cs.safe.Store(e.Next)
		return
	}
	cs.last = e.Index
	cs.setPos(e.Next)
}

// pressed reports whether the inbox is over its pressure limit and this
// class's open batch is what holds back its commit.
func (cs *sealer) pressed() bool {
	s := cs.stage
	if s.inbox.Bytes() <= s.opts.InboxPressureBytes || cs.first > s.minSafe() {
		return false
	}
	s.m.pressureSeals.WithLabelValues(cs.class.String()).Inc()
	return true
}

func (cs *sealer) setPos(p uint64) {
	cs.mu.Lock()
	cs.pos = p
	cs.openBytes, cs.openSince = len(cs.raw), time.Time{}
	if cs.records > 0 {
		cs.openSince = cs.oldest
	}
	cs.mu.Unlock()
}

// seal writes the batch to the outbox (and the state files first, when the
// append may drop a batch: guard.go) and moves the class's safe point on; the
// inbox is committed by [Stage.background]. A failure is retried with
// backoff until it succeeds or ctx ends; the batch stays in the inbox
// meanwhile.
func (cs *sealer) seal(ctx context.Context) error {
	if cs.records == 0 {
		return nil
	}
	backoff := 100 * time.Millisecond
	for {
		err := cs.trySeal(ctx)
		if err == nil {
			return nil
		}
		cs.stage.m.errors.WithLabelValues(cs.class.String()).Inc()
		cs.log.Error("seal batch", "seq", cs.seq+1, "first_record", cs.first, "last_record", cs.last, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			// Shutting down: the batch stays in the inbox and is sealed on
			// the next start.
			t.Stop()
			return fmt.Errorf("seal %s batch seq %d: %w", cs.class, cs.seq+1, err)
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (cs *sealer) trySeal(ctx context.Context) error {
	if cs.series > math.MaxUint32 || cs.samples > math.MaxUint32 {
		return fmt.Errorf("batch of %d series, %d samples: %w", cs.series, cs.samples, wire.ErrTooLarge)
	}
	minT, maxT := cs.minT, cs.maxT
	if cs.samples == 0 {
		minT, maxT = 0, 0
	}
	h := wire.Header{
		Codec:       wire.CodecZstd,
		Payload:     wire.PayloadRemoteWriteV1,
		Class:       cs.class,
		Store:       cs.stage.opts.Store,
		Relay:       cs.stage.opts.Relay,
		Seq:         cs.seq + 1,
		FirstRecord: cs.first,
		LastRecord:  cs.last,
		MinTime:     minT,
		MaxTime:     maxT,
		Series:      uint32(cs.series),
		Samples:     uint32(cs.samples),
	}
	frame, err := wire.AppendFrameLevel(cs.frame[:0], &h, cs.raw, cs.stage.opts.level(cs.class))
	if err != nil {
		return err
	}
	cs.frame = frame
	// The append must finish even on shutdown: a half-done seal only costs
	// a re-seal, but there is no reason to abandon it.
	wctx := context.WithoutCancel(ctx)
	if err := cs.stage.appendBatch(wctx, cs, frame, int(cs.samples), h.Seq, h.LastRecord); err != nil {
		return fmt.Errorf("append batch to outbox: %w", err)
	}
	cs.records, cs.series, cs.samples = 0, 0, 0
	cs.raw = cs.raw[:0]
	cs.mu.Lock()
	cs.seq = h.Seq
	cs.openBytes, cs.openSince = 0, time.Time{}
	cs.mu.Unlock()
	heldBack := cs.safe.Load() <= cs.stage.minSafe()
	cs.safe.Store(cs.pos)
	if heldBack && cs.stage.inbox.Bytes() > cs.stage.opts.InboxPressureBytes {
		select { // this class held back the commit of a full inbox: commit now
		case cs.stage.commit <- struct{}{}:
		default:
		}
	}
	m := cs.stage.m
	cl := cs.class.String()
	m.batches.WithLabelValues(cl).Inc()
	m.samples.WithLabelValues(cl).Add(float64(h.Samples))
	m.rawBytes.WithLabelValues(cl).Add(float64(h.RawLen))
	m.bytes.WithLabelValues(cl).Add(float64(len(frame)))
	if cap(cs.frame) > 2*cs.limits.MaxBytes {
		cs.frame = nil
	}
	return nil
}
