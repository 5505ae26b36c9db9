// Package seal is the storerelay's second buffer stage. The intake appends
// one inbox record per request, with a section per priority class
// (record.go). One goroutine per class reads every inbox record, takes its
// class's section, packs sections into a batch until the class's byte or age
// limit, encodes and compresses the batch as one wire frame
// ([wire.AppendFrame], zstd), and appends the frame to the class's outbox
// queue.
//
// # Crash invariant
//
// Every frame carries its sequence number and the inclusive inbox range
// [FirstRecord, LastRecord] it was sealed from. A class's position is the
// (Seq, LastRecord) of its newest appended frame, kept by the outbox tail
// and, when that tail may be dropped, by the class's state file (guard.go).
// Each class also has a safe point: the first record of its open batch, or
// its read position when the batch is empty; every record before it is
// sealed or holds nothing of the class. The inbox is committed, lazily (every
// Options.CommitInterval), up to the minimum safe point over the classes.
// On start, each class resumes from the newest of its outbox tail frame and
// its state file: seq continues at Seq+1 and reading at max(inbox committed,
// LastRecord+1), skipping the sections it already sealed while other classes
// re-read theirs. So a crash at any point neither loses records nor seals
// the same records twice under different sequence numbers. A class that has
// never sealed starts its seq at the current Unix time in microseconds, so
// that a relay whose data directory was wiped does not reuse message ids
// JetStream may still deduplicate.
//
// The inbox is held until the slowest class seals (bulk: 60 s by default),
// so a class whose open batch holds back the commit while the inbox is over
// Options.InboxPressureBytes seals early.
package seal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tillpipe/internal/buffer"
	"tillpipe/internal/obs"
	"tillpipe/internal/wire"
)

// ErrInvalidOption is wrapped by every error about a bad [Options] field.
var ErrInvalidOption = errors.New("seal: invalid option")

// Limits bound one class's batches: a batch is sealed when its uncompressed
// payload reaches MaxBytes or its oldest record is MaxAge old.
type Limits struct {
	MaxBytes int
	MaxAge   time.Duration
}

// Default batch limits per class.
var (
	DefaultCritical = Limits{MaxBytes: 256 << 10, MaxAge: time.Second}
	DefaultNormal   = Limits{MaxBytes: 1 << 20, MaxAge: 10 * time.Second}
	DefaultBulk     = Limits{MaxBytes: 2 << 20, MaxAge: 60 * time.Second}
)

// Options configure a [Stage]. The zero value of every field but Store
// means its default.
type Options struct {
	// Store is stamped into every frame header (required).
	Store string
	// Relay identifies this relay instance in frame headers (default: none).
	Relay string
	// Critical, Normal and Bulk are the batch limits per class; a zero
	// field takes the value of DefaultCritical, DefaultNormal or DefaultBulk.
	Critical, Normal, Bulk Limits
	// DropInterval is how often the outbox's max age is enforced while
	// nothing is appended (default 10 s).
	DropInterval time.Duration
	Logger       *slog.Logger
	// Registerer receives the stage's metrics; nil: none.
	Registerer prometheus.Registerer
	// CommitInterval is how often the inbox is committed up to what every
	// class has sealed (default 100 ms). Commits only free disk space.
	CommitInterval time.Duration
	// InboxPressureBytes: while the inbox holds more, the class holding back
	// the inbox commit seals its batch early (default 32 MiB; set it under
	// the intake's InboxMaxBytes).
	InboxPressureBytes int64
	// Now is the clock for batch ages (default time.Now); the inbox stamps
	// records with its own clock.
	Now func() time.Time
}

// Defaults for zero [Options] fields.
const (
	DefaultCommitInterval     = 100 * time.Millisecond
	DefaultInboxPressureBytes = 32 << 20
)

// level is the zstd level of class c's batches: [wire.LevelFastest] for
// critical and normal, whose live batches it compresses both faster and a
// little smaller; [wire.LevelDefault] for bulk, whose larger batches span
// several scrapes of the same series, where it is about 13% smaller (see
// the wire package's BenchmarkEncodeLevel).
func (o Options) level(c wire.Class) wire.Level {
	if c == wire.ClassBulk {
		return wire.LevelDefault
	}
	return wire.LevelFastest
}

func (o Options) limits(c wire.Class) Limits {
	l, d := o.Normal, DefaultNormal
	switch c {
	case wire.ClassCritical:
		l, d = o.Critical, DefaultCritical
	case wire.ClassBulk:
		l, d = o.Bulk, DefaultBulk
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxAge <= 0 {
		l.MaxAge = d.MaxAge
	}
	return l
}

// Stage seals the inbox into the outbox, one goroutine per class, started
// and waited for by [Stage.Run]. Its methods are safe for concurrent use.
type Stage struct {
	inbox   *buffer.Group
	in      *buffer.Queue
	outbox  *Outbox
	guard   guard
	commit  chan struct{} // asks the committer for a commit now
	opts    Options
	log     *slog.Logger
	m       *metrics
	classes []*sealer
	dir     string
}

// New recovers each class's position from dir (state files), the outbox
// tails and the inbox cursor, and returns a stage ready to [Stage.Run].
// inbox is from [OpenInbox], outbox from [OpenOutbox].
func New(dir string, inbox *buffer.Group, outbox *Outbox, opts Options) (*Stage, error) {
	if opts.Store == "" {
		return nil, fmt.Errorf("store is empty: %w", ErrInvalidOption)
	}
	if inbox == nil || outbox == nil {
		return nil, fmt.Errorf("inbox and outbox are required: %w", ErrInvalidOption)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.DropInterval <= 0 {
		opts.DropInterval = 10 * time.Second
	}
	if opts.CommitInterval <= 0 {
		opts.CommitInterval = DefaultCommitInterval
	}
	if opts.InboxPressureBytes <= 0 {
		opts.InboxPressureBytes = DefaultInboxPressureBytes
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create seal state dir: %w", err)
	}
	in := InboxQueue(inbox)
	if in == nil {
		return nil, fmt.Errorf("inbox has no queue %q: %w", inboxQueue, ErrInvalidOption)
	}
	s := &Stage{inbox: inbox, in: in, outbox: outbox, commit: make(chan struct{}, 1), opts: opts,
		log: obs.Discard(opts.Logger).With("component", "seal"), m: newMetrics(), dir: dir}
	behind := false
	for _, c := range wire.Classes {
		cs, b, err := s.recover(c)
		if err != nil {
			return nil, err
		}
		behind = behind || b
		s.classes = append(s.classes, cs)
	}
	if behind {
		// The inbox is behind a sealed batch: it was reset or lost, and its
		// indices start over. Its records are new to every class: seal them all.
		for _, cs := range s.classes {
			cs.pos = in.Committed()
			cs.safe.Store(cs.pos)
		}
		s.log.Warn("inbox behind the last sealed batch; sealing all of it", "inbox_next", in.NextIndex())
	}
	if reg := opts.Registerer; reg != nil {
		for _, c := range append(s.m.collectors(), newBacklog(s)) {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register seal metrics: %w", err)
			}
		}
	}
	return s, nil
}

// recover finds where class c resumes (see the package comment); behind
// reports an inbox behind the class's last sealed batch.
func (s *Stage) recover(c wire.Class) (cs *sealer, behind bool, err error) {
	out := Queue(s.outbox.Group, c)
	cs = &sealer{
		stage: s, class: c, in: s.in, out: out, limits: s.opts.limits(c),
		statePath: statePath(s.dir, c.String()),
		log:       s.log.With("class", c.String()),
	}
	st, ok, err := readState(cs.statePath)
	if err != nil {
		return nil, false, err
	}
	saved := ok
	if next := out.NextIndex(); next > 0 {
		e, err := out.ReadEntry(next-1, nil)
		switch {
		case err == nil && e.Index == next-1:
			h, err := wire.ParseHeader(e.Data)
			if err != nil {
				return nil, false, fmt.Errorf("recover %s: read outbox tail %d: %w", c, next-1, err)
			}
			if !ok || h.Seq > st.Seq {
				st, ok, saved = sealState{Seq: h.Seq, LastRecord: h.LastRecord}, true, false
				cs.appendedAt.Store(e.Time.UnixNano())
			}
		case err != nil && !errors.Is(err, io.EOF):
			return nil, false, fmt.Errorf("recover %s: read outbox tail %d: %w", c, next-1, err)
		}
	}
	cs.pos = s.in.Committed()
	if !ok {
		cs.seq = uint64(s.opts.Now().UnixMicro())
		cs.safe.Store(cs.pos)
		cs.log.Info("seal from scratch", "seq", cs.seq+1, "inbox", cs.pos)
		return cs, false, nil
	}
	cs.seq = st.Seq
	cs.durable = st
	cs.unsaved.Store(!saved)
	switch resume := st.LastRecord + 1; {
	case resume > s.in.NextIndex():
		cs.log.Warn("inbox behind the last sealed batch", "last_record", st.LastRecord, "inbox_next", s.in.NextIndex())
		behind = true
	case resume > cs.pos:
		// Sealed before the inbox commit caught up (other classes lag, or
		// a crash came first): skip what this class sealed.
		cs.log.Info("skip inbox records already sealed", "from", cs.pos, "to", resume)
		cs.pos = resume
	}
	cs.safe.Store(cs.pos)
	cs.log.Info("seal resumes", "seq", cs.seq+1, "inbox", cs.pos)
	return cs, behind, nil
}

// Run seals until ctx ends, then seals whatever the inbox still holds
// (partial batches included), commits the inbox and returns. Close the
// intake first, so the inbox is final. It returns the first error that
// stopped a class.
func (s *Stage) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(s.classes))
	for i, cs := range s.classes {
		wg.Go(func() { errs[i] = cs.run(ctx) })
	}
	var bg sync.WaitGroup
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	bg.Go(func() { s.background(bgCtx) })
	wg.Wait()
	stopBg()
	bg.Wait()
	if err := s.commitInbox(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// background commits the inbox every CommitInterval (and when a sealer asks)
// and enforces the outbox's age limit every DropInterval, until ctx ends.
func (s *Stage) background(ctx context.Context) {
	commit := time.NewTicker(s.opts.CommitInterval)
	defer commit.Stop()
	drop := time.NewTicker(s.opts.DropInterval)
	defer drop.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-commit.C:
		case <-s.commit:
		case <-drop.C:
			if err := s.dropExpired(); err != nil {
				s.log.Warn("enforce outbox limits", "err", err)
			}
			continue
		}
		if err := s.commitInbox(); err != nil {
			s.log.Warn("commit inbox", "err", err)
		}
	}
}

// minSafe is the inbox index below which every class has sealed what it needs.
func (s *Stage) minSafe() uint64 {
	m := s.classes[0].safe.Load()
	for _, cs := range s.classes[1:] {
		m = min(m, cs.safe.Load())
	}
	return m
}

// commitInbox commits the inbox up to [Stage.minSafe]. Not committing is
// never unsafe: every class resumes from its own position.
func (s *Stage) commitInbox() error {
	if m := s.minSafe(); m > s.in.Committed() {
		if err := s.in.Commit(m); err != nil {
			return fmt.Errorf("commit inbox at %d: %w", m, err)
		}
	}
	return nil
}

// Position returns class c's next inbox record to read and the seq of the
// last batch sealed. For tests and diagnostics.
func (s *Stage) Position(c wire.Class) (next, seq uint64) {
	cs := s.classes[c-1]
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.pos, cs.seq
}
