package ingester

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tillpipe/internal/remotewrite"
	"tillpipe/internal/stream"
	"tillpipe/internal/wire"
)

// worker is one consumer loop of one class: fetch, verify and decode, write,
// ack. It owns its decoder and buffers and is not safe for concurrent use.
type worker struct {
	in    *Ingester
	class wire.Class
	cons  jetstream.Consumer
	log   *slog.Logger
	dec   *wire.Decoder

	fetched    []jetstream.Msg
	pend       pending
	avgSamples float64   // moving average of samples per message, sizes fetches
	lastWarn   time.Time // throttles fetch warnings
}

// pending is the next backend request: the marshaled WriteRequests of whole
// messages, concatenated (concatenated protobuf messages merge, so the body
// is one WriteRequest holding every series).
type pending struct {
	body    []byte
	msgs    []jetstream.Msg
	ends    []int   // body offset where each message's request ends
	samples []int   // samples of each message
	newest  []int64 // newest sample of each message, ms
	total   int
}

func (p *pending) reset() {
	p.body = p.body[:0]
	clear(p.msgs)
	p.msgs, p.ends, p.samples, p.newest = p.msgs[:0], p.ends[:0], p.samples[:0], p.newest[:0]
	p.total = 0
}

func newWorker(in *Ingester, c wire.Class, cons jetstream.Consumer) *worker {
	return &worker{in: in, class: c, cons: cons, log: in.log.With("class", c.String()), dec: wire.NewDecoder(in.opts.Decoder)}
}

// run fetches and processes until ctx is done. Messages fetched when ctx ends
// are finished under hard or handed back.
func (w *worker) run(ctx, hard context.Context) {
	for ctx.Err() == nil {
		if err := w.in.backend.waitUp(ctx); err != nil {
			return
		}
		msgs, err := w.fetch()
		if err != nil {
			w.in.m.fetchErrors.WithLabelValues(w.class.String()).Inc()
			if now := time.Now(); now.Sub(w.lastWarn) > 10*time.Second {
				w.lastWarn = now
				w.log.Warn("fetch failed", "consumer", ConsumerName(w.class), "err", err)
			}
		}
		if len(msgs) > 0 {
			w.process(ctx, hard, msgs)
			clear(msgs)
			continue
		}
		if err != nil {
			t := time.NewTimer(time.Second)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// fetch pulls about two backend requests' worth of messages, waiting at most
// FetchMaxWait for them.
func (w *worker) fetch() ([]jetstream.Msg, error) {
	n := 8
	if w.avgSamples > 0 {
		n = int(math.Ceil(2 * float64(w.in.opts.BatchMaxSamples) / w.avgSamples))
	}
	n = min(max(n, 1), w.in.opts.MaxFetch)
	batch, err := w.cons.Fetch(n, jetstream.FetchMaxWait(w.in.opts.FetchMaxWait))
	if err != nil {
		return nil, fmt.Errorf("fetch from %s: %w", ConsumerName(w.class), err)
	}
	msgs := w.fetched[:0]
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	w.fetched = msgs
	if err := batch.Error(); err != nil {
		return msgs, fmt.Errorf("fetch from %s: %w", ConsumerName(w.class), err)
	}
	return msgs, nil
}

// process writes msgs, flushing whenever BatchMaxSamples is reached. Once ctx
// is done it naks what it has not started on.
func (w *worker) process(ctx, hard context.Context, msgs []jetstream.Msg) {
	stop := w.keepAlive(msgs)
	defer stop()
	for i, msg := range msgs {
		if ctx.Err() != nil {
			w.nak(hard, msgs[i:], 0)
			break
		}
		w.add(hard, msg)
		if w.pend.total >= w.in.opts.BatchMaxSamples && !w.flush(ctx, hard) {
			w.nak(hard, msgs[i+1:], 0)
			return
		}
	}
	w.flush(ctx, hard)
}

// keepAlive sends in-progress signals for msgs every AckWait/3 until stop is
// called, so a slow or failing backend does not cause redeliveries.
func (w *worker) keepAlive(msgs []jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(w.in.opts.Consumer.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress() // ErrMsgAlreadyAckd for those done
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// add verifies and decodes msg and appends it to the pending request, or
// dead-letters it.
func (w *worker) add(hard context.Context, msg jetstream.Msg) {
	store, class, err := stream.ParseSubject(msg.Subject())
	if err != nil {
		w.poison(hard, msg, &PoisonError{Reason: ReasonBadSubject, Err: err})
		return
	}
	// DecodeRaw verifies the frame (sizes, CRC, version) and decompresses it
	// without unmarshaling: the remote-write bytes go to the backend as they
	// are, and the header's counts describe them. A payload that passed its
	// CRC but is not valid protobuf (a relay bug) is refused by the backend
	// with a 4xx and dead-lettered as backend_4xx.
	b, err := w.dec.DecodeRaw(msg.Data())
	if err != nil {
		w.poison(hard, msg, &PoisonError{Reason: decodeReason(err), Err: err})
		return
	}
	h := &b.Header
	if h.Store != store {
		w.poison(hard, msg, &PoisonError{Reason: ReasonStoreMismatch,
			Err: fmt.Errorf("batch seq %d names store %q, subject %s", h.Seq, h.Store, msg.Subject())})
		return
	}
	if h.Class.String() != class {
		w.poison(hard, msg, &PoisonError{Reason: ReasonClassMismatch,
			Err: fmt.Errorf("batch seq %d of store %s has class %s, subject %s", h.Seq, h.Store, h.Class, msg.Subject())})
		return
	}
	samples := int(h.Samples)
	p := &w.pend
	p.body = append(p.body, b.Raw...)
	p.msgs = append(p.msgs, msg)
	p.ends = append(p.ends, len(p.body))
	p.samples = append(p.samples, samples)
	p.newest = append(p.newest, h.MaxTime)
	p.total += samples
	if w.avgSamples == 0 {
		w.avgSamples = float64(max(samples, 1))
	} else {
		w.avgSamples = 0.8*w.avgSamples + 0.2*float64(max(samples, 1))
	}
}

// flush writes the pending request and acks its messages. It returns false
// when shutdown interrupted it; the messages are then handed back.
func (w *worker) flush(ctx, hard context.Context) bool {
	p := &w.pend
	if len(p.msgs) == 0 {
		return true
	}
	defer p.reset()
	if len(p.body) == 0 { // only empty requests
		w.acked(hard, p.msgs, 0, 0)
		return true
	}
	err := w.in.backend.write(ctx, hard, p.body)
	if err == nil {
		newest := int64(0)
		for _, t := range p.newest {
			newest = max(newest, t)
		}
		w.acked(hard, p.msgs, p.total, newest)
		return true
	}
	return w.failed(ctx, hard, err, 0)
}

// failed handles a write of the pending messages from index from on that did
// not succeed. A refused request of several messages is split, so only the
// messages the backend refuses on their own are dead-lettered.
func (w *worker) failed(ctx, hard context.Context, err error, from int) bool {
	p := &w.pend
	var (
		ra *RetryAbandonedError
		se *remotewrite.StatusError
	)
	switch {
	case errors.As(err, &ra):
		w.nak(hard, p.msgs[from:], ra.Delay)
		return false
	case errors.As(err, &se) && len(p.msgs)-from == 1:
		w.poison(hard, p.msgs[from], &PoisonError{Reason: ReasonBackend4xx, Err: err})
		return true
	case errors.As(err, &se):
		for i := from; i < len(p.msgs); i++ {
			start := 0
			if i > 0 {
				start = p.ends[i-1]
			}
			err := w.in.backend.write(ctx, hard, p.body[start:p.ends[i]])
			switch {
			case err == nil:
				w.acked(hard, p.msgs[i:i+1], p.samples[i], p.newest[i])
			case errors.As(err, &se):
				w.poison(hard, p.msgs[i], &PoisonError{Reason: ReasonBackend4xx, Err: err})
			default:
				return w.failed(ctx, hard, err, i)
			}
		}
		return true
	default: // hard deadline passed mid-request
		w.log.Warn("backend write cancelled at shutdown", "batches", len(p.msgs)-from, "err", err)
		w.nak(hard, p.msgs[from:], 0)
		return false
	}
}

// acked acks msgs after their samples were written: plain acks, then a
// double ack of the last, which JetStream answers only after processing the
// acks before it. So on return the acks are recorded unless ack_errors_total
// counted them.
func (w *worker) acked(hard context.Context, msgs []jetstream.Msg, samples int, newest int64) {
	c := w.class.String()
	failed := 0
	for i, m := range msgs {
		var err error
		if i < len(msgs)-1 {
			err = m.Ack()
		} else {
			err = m.DoubleAck(hard)
		}
		if err != nil {
			failed++
			w.log.Warn("ack after write failed: the batch may be written again", "subject", m.Subject(), "err", err)
		}
	}
	w.in.m.ackErrors.WithLabelValues(c).Add(float64(failed))
	w.in.m.batches.WithLabelValues(c, resultWritten).Add(float64(len(msgs)))
	if samples > 0 {
		w.in.m.written(w.class, samples, newest)
	}
}

// nak hands msgs back for redelivery after delay. A message on its last
// delivery would be dropped by JetStream instead, so it is dead-lettered.
func (w *worker) nak(hard context.Context, msgs []jetstream.Msg, delay time.Duration) {
	for _, m := range msgs {
		if md, err := m.Metadata(); err == nil && md.NumDelivered >= uint64(w.in.opts.Consumer.MaxDeliver) {
			w.poison(hard, m, &PoisonError{Reason: ReasonMaxDeliveries,
				Err: fmt.Errorf("delivery %d of %d handed back unwritten", md.NumDelivered, w.in.opts.Consumer.MaxDeliver)})
			continue
		}
		var err error
		if delay > 0 {
			err = m.NakWithDelay(delay)
		} else {
			err = m.Nak()
		}
		if err != nil {
			w.log.Debug("nak failed; the message is redelivered after the ack wait", "subject", m.Subject(), "err", err)
		}
		w.in.m.batches.WithLabelValues(w.class.String(), resultNak).Inc()
	}
}

// poison dead-letters msg and counts it; if that fails, msg is handed back.
func (w *worker) poison(hard context.Context, msg jetstream.Msg, perr *PoisonError) {
	if err := deadLetter(hard, w.in.opts.JetStream, msg, w.class, perr); err != nil {
		w.log.Error("dead-letter failed, handing the batch back", "subject", msg.Subject(), "reason", perr.Reason, "err", err)
		_ = msg.NakWithDelay(5 * time.Second)
		w.in.m.batches.WithLabelValues(w.class.String(), resultNak).Inc()
		return
	}
	w.in.m.deadLetter.WithLabelValues(perr.Reason).Inc()
	w.in.m.batches.WithLabelValues(w.class.String(), resultDeadLetter).Inc()
	w.log.Warn("batch dead-lettered", "subject", msg.Subject(), "reason", perr.Reason, "err", perr.Err)
}
