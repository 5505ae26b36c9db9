package uplink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tillpipe/internal/buffer"
	"tillpipe/internal/stream"
	"tillpipe/internal/wire"
)

// lane is the send state of one class's outbox queue. Every index at or
// above base is in exactly one of: done, backlog, retry, in flight, or
// unread (at or above cursor).
type lane struct {
	class     wire.Class
	name      string
	subject   string
	q         *buffer.Queue
	committed uint64 // last index given to q.Commit
	base      uint64 // every index below it is acknowledged or gone
	done      spans  // acknowledged or gone, above base
	backlog   spans  // unsent (or failed) below live
	retry     spans  // failed at or above live; sent before unread live batches
	live      uint64 // the live pointer
	cursor    uint64 // next live index never read
}

// source says where a candidate came from.
type source int

const (
	fromCursor source = iota
	fromRetry
	fromBacklog
)

type candidate struct {
	lane *lane
	src  source
	e    buffer.Entry
	id   string
}

type flight struct {
	lane    *lane
	idx     uint64
	bytes   int64
	samples int
	sent    time.Time
}

// sender is the state of one Run. Everything here belongs to Run's
// goroutine.
type sender struct {
	u     *Uplink
	opts  *Options
	lanes []*lane

	bucket        *bucket
	inflight      map[*nats.Msg]*flight
	inflightBytes int64
	connected     bool
	probe         bool // one batch in flight until the next ack
	backoff       time.Duration
	holdUntil     time.Time
	cache         *buffer.Entry // the last candidate read, often waiting for tokens
	cacheLane     *lane
	denied        map[string]time.Time // subjects refused for permissions, when
	lastCommit    time.Time
	logged        map[string]time.Time // throttle for repeating logs
	evs           []event
}

const logEvery = time.Minute

func newSender(u *Uplink) *sender {
	now := u.opts.Now()
	s := &sender{
		u:         u,
		opts:      &u.opts,
		bucket:    newBucket(u.Rate(), now),
		inflight:  make(map[*nats.Msg]*flight),
		connected: u.opts.Conn.IsConnected(),
		probe:     true,
		denied:    make(map[string]time.Time),
		logged:    make(map[string]time.Time),
	}
	for _, c := range wire.Classes {
		q := u.opts.Outbox.Queue(c.String())
		committed, next := q.Committed(), q.NextIndex()
		l := &lane{
			class: c, name: c.String(), subject: stream.Subject(u.opts.Store, c.String()), q: q,
			committed: committed, base: committed, live: next, cursor: next,
		}
		// What is pending at start is backlog: the relay was down or
		// restarting, so what comes in from now on goes first.
		l.backlog.add(committed, next)
		s.lanes = append(s.lanes, l)
	}
	return s
}

func (s *sender) run(ctx context.Context, status <-chan nats.Status) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var notify [3]<-chan struct{}
	for {
		for i, l := range s.lanes {
			notify[i] = l.q.Notify()
		}
	drain:
		for {
			select {
			case st := <-status:
				if err := s.onStatus(st); err != nil {
					s.shutdown()
					return err
				}
			default:
				break drain
			}
		}
		s.handleEvents()
		if ctx.Err() != nil {
			s.shutdown()
			return nil
		}
		now := s.opts.Now()
		if r := s.u.Rate(); r != s.bucket.rate {
			s.bucket.setRate(r, now)
		}
		wake, err := s.pump(now)
		if err != nil {
			s.shutdown()
			return err
		}
		wake = earliest(wake, s.commit(now, false))
		if wake.IsZero() && !s.connected {
			wake = now.Add(time.Second) // belt and braces: status events can be dropped
		}
		if !wake.IsZero() {
			timer.Reset(max(wake.Sub(now), 0))
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
		case st := <-status:
			if err := s.onStatus(st); err != nil {
				s.shutdown()
				return err
			}
		case <-s.u.evSig:
		case <-s.u.rateSig:
		case <-notify[0]:
		case <-notify[1]:
		case <-notify[2]:
		case <-timer.C:
		}
	}
}

func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

func (s *sender) onStatus(st nats.Status) error {
	switch st {
	case nats.CLOSED:
		return ErrConnClosed
	case nats.RECONNECTING, nats.DISCONNECTED:
		if s.connected {
			s.u.log.Warn("uplink disconnected; batches stay in the outbox", "in_flight", len(s.inflight))
		}
		s.connected = false
	case nats.CONNECTED:
		if !s.connected {
			s.connected = true
			s.onReconnect(s.opts.Now())
		}
	}
	return nil
}

// onReconnect moves every live pointer to the tail, so what arrives from now
// on goes before the backlog, and holds the first publish for a random
// jitter.
func (s *sender) onReconnect(now time.Time) {
	var backlog uint64
	for _, l := range s.lanes {
		s.moveLive(l)
		backlog += l.backlog.count()
	}
	s.probe = true
	s.backoff = 0
	var jitter time.Duration
	if j := s.opts.ReconnectJitter; j > 0 {
		jitter = rand.N(j)
	}
	s.holdUntil = now.Add(jitter)
	s.u.log.Info("uplink connected", "backlog_batches", backlog, "jitter", jitter)
	if h := s.u.testHookReconnected; h != nil {
		h()
	}
}

// moveLive makes everything below the queue's tail backlog.
func (s *sender) moveLive(l *lane) {
	next := l.q.NextIndex()
	if next < l.cursor {
		next = l.cursor
	}
	l.backlog.add(l.cursor, next)
	for _, r := range l.retry {
		l.backlog.add(r.lo, r.hi)
	}
	l.retry = l.retry[:0]
	l.cursor, l.live = next, next
}

// pump publishes while the link, the window and the rate allow, and returns
// when it next needs to look (zero: only when something happens).
func (s *sender) pump(now time.Time) (time.Time, error) {
	for {
		if !s.connected {
			return time.Time{}, nil // the CONNECTED status wakes us
		}
		if !s.opts.Conn.IsConnected() {
			return now.Add(s.opts.RetryBackoff / 10), nil // its status is on the way
		}
		if now.Before(s.holdUntil) {
			return s.holdUntil, nil
		}
		window := s.opts.MaxInflight
		if s.probe {
			window = 1
		}
		if len(s.inflight) >= window || (len(s.inflight) > 0 && s.inflightBytes >= s.opts.MaxInflightBytes) {
			return time.Time{}, nil
		}
		c, err := s.next(now)
		if err != nil || c == nil {
			return time.Time{}, err
		}
		cost := wireCost(c)
		if d := s.bucket.wait(cost, now); d > 0 {
			return now.Add(d), nil
		}
		s.publish(c, cost, now)
	}
}

// wireCost approximates the bytes a batch puts on the link: the frame, the
// HPUB line with subject and reply inbox, and the Nats-Msg-Id header.
func wireCost(c *candidate) int {
	const overhead = 64 // HPUB, reply subject, NATS/1.0 header line, CRLFs
	return len(c.e.Data) + len(c.lane.subject) + len(jetstream.MsgIDHeader) + len(c.id) + overhead
}

// next returns the batch to send next by the order in the package comment,
// nil if there is none.
func (s *sender) next(now time.Time) (*candidate, error) {
	for {
		var c *candidate
		var err error
	tiers:
		for _, live := range []bool{true, false} {
			for _, l := range s.lanes {
				if live {
					c, err = s.liveCandidate(l, now)
				} else {
					c, err = s.backlogCandidate(l)
				}
				if err != nil || c != nil {
					break tiers
				}
			}
		}
		if err != nil || c == nil {
			return nil, err
		}
		h, herr := wire.ParseHeader(c.e.Data)
		if herr != nil {
			// The sealer wrote something that is not a frame; central would
			// refuse it too. Skip it rather than block the class forever.
			s.take(c)
			s.gone(c.lane, c.e.Index, c.e.Index+1)
			s.u.m.errors.WithLabelValues(ReasonInvalid).Inc()
			s.u.log.Error("skip outbox record that is not a wire frame", "class", c.lane.name, "index", c.e.Index, "err", herr)
			continue
		}
		c.id = stream.MsgID(s.opts.Store, c.lane.name, h.Seq)
		return c, nil
	}
}

func (s *sender) liveCandidate(l *lane, now time.Time) (*candidate, error) {
	moved := false
	for {
		idx, ok := l.retry.first()
		src := fromRetry
		if !ok {
			idx, src = l.cursor, fromCursor
		}
		e, err := s.read(l, idx)
		if errors.Is(err, io.EOF) {
			return nil, nil // nothing new yet (or not yet durable)
		}
		if err != nil {
			return nil, err
		}
		if e.Index > idx {
			s.gone(l, idx, e.Index)
		}
		if src == fromRetry && !l.retry.contains(e.Index) {
			continue
		}
		if src == fromCursor {
			l.cursor = e.Index
		}
		if !moved && now.Sub(e.Time) > s.opts.LiveWindow {
			// Falling behind: the newest batches go first from now on.
			s.moveLive(l)
			moved = true
			s.u.log.Info("uplink behind live window; older batches become backlog",
				"class", l.name, "oldest", e.Time, "live_window", s.opts.LiveWindow, "backlog_batches", l.backlog.count())
			continue
		}
		return &candidate{lane: l, src: src, e: e}, nil
	}
}

func (s *sender) backlogCandidate(l *lane) (*candidate, error) {
	for {
		idx, ok := l.backlog.first()
		if !ok {
			return nil, nil
		}
		e, err := s.read(l, idx)
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if e.Index > idx {
			s.gone(l, idx, e.Index)
		}
		if !l.backlog.contains(e.Index) {
			continue
		}
		return &candidate{lane: l, src: fromBacklog, e: e}, nil
	}
}

// read returns the record at idx or the first surviving one above it,
// from the cache when it was the last one read.
func (s *sender) read(l *lane, idx uint64) (buffer.Entry, error) {
	if s.cache != nil && s.cacheLane == l && s.cache.Index == idx {
		return *s.cache, nil
	}
	e, err := l.q.ReadEntry(idx, nil)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return e, err
		}
		return e, fmt.Errorf("read %s outbox at index %d: %w", l.name, idx, err)
	}
	s.cache, s.cacheLane = &e, l
	return e, nil
}

// gone records that the outbox no longer holds [lo, hi) (dropped for space
// or age, or lost to repair): nothing there to send or wait for.
func (s *sender) gone(l *lane, lo, hi uint64) {
	l.done.add(lo, hi)
	l.backlog.remove(lo, hi)
	l.retry.remove(lo, hi)
	if l.cursor >= lo && l.cursor < hi {
		l.cursor = hi
	}
}

// take removes c from where it was waiting.
func (s *sender) take(c *candidate) {
	l, idx := c.lane, c.e.Index
	switch c.src {
	case fromCursor:
		l.cursor = idx + 1
	case fromRetry:
		l.retry.remove(idx, idx+1)
	case fromBacklog:
		l.backlog.remove(idx, idx+1)
	}
	if s.cache != nil && s.cacheLane == l && s.cache.Index == idx {
		s.cache, s.cacheLane = nil, nil
	}
}

// requeue puts a failed batch back into its tier.
func (s *sender) requeue(l *lane, idx uint64) {
	switch {
	case idx < l.base || l.done.contains(idx):
	case idx >= l.live:
		l.retry.add(idx, idx+1)
	default:
		l.backlog.add(idx, idx+1)
	}
}

func (s *sender) publish(c *candidate, cost int, now time.Time) {
	s.take(c)
	s.bucket.take(cost, now)
	l := c.lane
	msg := &nats.Msg{Subject: l.subject, Data: c.e.Data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, c.id)
	f := &flight{lane: l, idx: c.e.Index, bytes: int64(len(c.e.Data)), samples: c.e.Samples, sent: now}
	s.inflight[msg] = f
	s.inflightBytes += f.bytes
	s.u.attempts.Add(1)
	s.u.m.bytes.WithLabelValues(l.name).Add(float64(cost))
	if _, err := s.u.js.PublishMsgAsync(msg); err != nil {
		s.land(msg)
		s.requeue(l, f.idx)
		s.failed(err, l.subject, now)
	}
}

// land removes msg from the in-flight set and returns its flight, nil if
// it is not (a callback after its Run ended).
func (s *sender) land(msg *nats.Msg) *flight {
	f := s.inflight[msg]
	if f != nil {
		delete(s.inflight, msg)
		s.inflightBytes -= f.bytes
	}
	return f
}

func (s *sender) handleEvents() {
	s.evs = s.u.takeEvents(s.evs)
	if len(s.evs) == 0 {
		return
	}
	now := s.opts.Now()
	for _, e := range s.evs {
		if e.denied != "" {
			s.onDenied(e.denied, now)
			continue
		}
		f := s.land(e.msg)
		if f == nil {
			continue
		}
		if e.err != nil {
			s.requeue(f.lane, f.idx)
			s.failed(e.err, f.lane.subject, now)
			continue
		}
		if f.idx >= f.lane.base {
			f.lane.done.add(f.idx, f.idx+1)
		}
		s.u.m.batches.WithLabelValues(f.lane.name).Inc()
		s.u.m.samples.WithLabelValues(f.lane.name).Add(float64(f.samples))
		s.u.m.latency.Observe(now.Sub(f.sent).Seconds())
		s.probe = false
		s.backoff = 0
	}
	clear(s.evs)
}

func (s *sender) onDenied(subject string, now time.Time) {
	s.u.m.errors.WithLabelValues(ReasonPermission).Inc()
	s.denied[subject] = now
	s.probe = true
	s.hold(now.Add(s.opts.PermissionBackoff))
	if s.allowLog("permission", now) {
		s.u.log.Error("central refused publish: permissions violation; check this store's NATS credentials",
			"subject", subject, "retry_in", s.opts.PermissionBackoff)
	}
}

func (s *sender) hold(until time.Time) {
	if until.After(s.holdUntil) {
		s.holdUntil = until
	}
}

// failed reacts to a publish that did not get its PubAck.
func (s *sender) failed(err error, subject string, now time.Time) {
	reason := reasonOf(err)
	if reason == ReasonDisconnected {
		// Wait for the link; onReconnect releases the batches. The short
		// hold stops a spin if nats.go has not reported the drop yet.
		s.u.m.errors.WithLabelValues(reason).Inc()
		s.hold(now.Add(s.opts.RetryBackoff / 10))
		return
	}
	if t, ok := s.denied[subject]; ok && now.Sub(t) < 2*s.opts.AckTimeout+s.opts.PermissionBackoff {
		// The timeout of a publish the server refused: counted as permission.
		return
	}
	s.u.m.errors.WithLabelValues(reason).Inc()
	s.probe = true
	s.backoff = min(max(2*s.backoff, s.opts.RetryBackoff/10), s.opts.RetryBackoff)
	s.hold(now.Add(s.backoff))
	if s.allowLog(reason, now) {
		msg := "publish failed; retrying"
		if reason == ReasonNoStream {
			msg = "no stream for subject; retrying until central creates it"
		}
		s.u.log.Warn(msg, "reason", reason, "subject", subject, "err", err, "retry_in", s.backoff)
	}
}

func (s *sender) allowLog(key string, now time.Time) bool {
	if t, ok := s.logged[key]; ok && now.Sub(t) < logEvery {
		return false
	}
	s.logged[key] = now
	return true
}

func reasonOf(err error) string {
	switch {
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return ReasonTimeout
	case errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrConnectionDraining):
		return ReasonDisconnected
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrStreamNotFound):
		return ReasonNoStream
	case errors.Is(err, nats.ErrPermissionViolation):
		return ReasonPermission
	}
	return ReasonOther
}

// commit advances each queue's committed index over the acknowledged
// prefix, at most every CommitInterval unless force. It returns when it
// wants to run again (zero: nothing waiting).
func (s *sender) commit(now time.Time, force bool) time.Time {
	pending := false
	for _, l := range s.lanes {
		l.base = l.done.takePrefix(l.base)
		if first := l.q.FirstIndex(); first > l.base {
			// The outbox dropped everything below first.
			l.base = first
			l.done.remove(0, first)
			l.backlog.remove(0, first)
			l.retry.remove(0, first)
			l.base = l.done.takePrefix(l.base)
		}
		pending = pending || l.base > l.committed
	}
	if !pending {
		return time.Time{}
	}
	if !force && now.Sub(s.lastCommit) < s.opts.CommitInterval {
		return s.lastCommit.Add(s.opts.CommitInterval)
	}
	s.lastCommit = now
	var retry bool
	for _, l := range s.lanes {
		if l.base <= l.committed {
			continue
		}
		if err := l.q.Commit(l.base); err != nil {
			retry = true
			if s.allowLog("commit", now) {
				s.u.log.Error("commit outbox", "class", l.name, "index", l.base, "err", err)
			}
			continue
		}
		l.committed = l.base
	}
	if retry {
		return now.Add(s.opts.CommitInterval)
	}
	return time.Time{}
}

// shutdown waits up to ShutdownGrace for outstanding acks and commits.
func (s *sender) shutdown() {
	if len(s.inflight) > 0 {
		t := time.NewTimer(s.opts.ShutdownGrace)
		defer t.Stop()
	wait:
		for len(s.inflight) > 0 {
			select {
			case <-s.u.evSig:
				s.handleEvents()
			case <-t.C:
				break wait
			}
		}
	}
	s.commit(s.opts.Now(), true)
	if n := len(s.inflight); n > 0 {
		s.u.log.Info("uplink stopped with batches unacknowledged; they stay in the outbox", "in_flight", n)
	}
}
