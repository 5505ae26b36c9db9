// Package uplink is the store relay's JetStream publisher: it sends the
// sealed batches in the relay's outbox to central and commits them only once
// central has acknowledged them.
//
// # What goes out, in which order
//
// Each outbox record is one wire frame. It is published to
// telemetry.<store>.<class> with Nats-Msg-Id <store>.<class>.<seq> (seq from
// the frame header), asynchronously, with at most Options.MaxInflight
// batches (and Options.MaxInflightBytes) awaiting their PubAck. A resend
// always carries the same id, so JetStream's duplicate window drops a batch
// that was stored but whose PubAck was lost.
//
// Each class keeps a live pointer into its queue. Batches at or above it are
// live; pending batches below it are backlog. The pointer moves to the
// queue's tail when the link comes back after an outage, when Run starts, and
// when the oldest unsent live batch of the class is older than
// Options.LiveWindow (the uplink is falling behind: the newest minute goes
// first and the rest becomes backlog). Whenever a publish slot and rate
// tokens are free, the next batch is the first that exists of:
//
//	live critical > live normal > live bulk > backlog critical > backlog normal > backlog bulk
//
// Live batches go oldest first from the pointer; the backlog of a class
// drains oldest first too. A failed batch goes back to the tier it came
// from (live if it is at or above the pointer, backlog otherwise), ahead of
// that tier's unsent batches. The rate limiter is one token bucket for all
// classes, and the choice above is made before tokens are taken, so critical
// gets tokens first.
//
// # Acknowledgements and commit
//
// A queue's committed index must be a contiguous prefix, but acks arrive out
// of order and live batches are acknowledged while older backlog is still
// unsent. Acknowledged indices (and indices the outbox dropped) are kept in
// memory as a set of ranges; the contiguous prefix is committed to the
// outbox at most every Options.CommitInterval. A PubAck marked Duplicate
// counts as delivered. After a relay restart, live batches acknowledged above
// an unacknowledged backlog are sent again; JetStream's duplicate window
// (20 min by default in package stream) absorbs that, and beyond it the
// backends drop identical samples.
//
// # Failures
//
// A dropped connection fails every pending ack (nats.go reports
// nats.ErrDisconnected); those batches are resent with the same ids once the
// link is back, after a random delay of up to Options.ReconnectJitter. A
// timeout, a missing stream ("no responders") or another refusal is retried
// after a backoff that starts at a tenth of Options.RetryBackoff and doubles
// up to it (1 s); until the next ack, only one batch is in flight (a probe),
// so a missing stream is not a hot loop. A publish refused for permissions is
// counted under reason "permission", logged (throttled) and retried after
// Options.PermissionBackoff (30 s). The uplink never creates streams.
package uplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrRunning is returned by Run while another Run of the same Uplink is active.
var ErrRunning = errors.New("uplink: already running")

// ErrConnClosed is returned by Run when the NATS connection was closed: it
// never reconnects after that, so the relay must dial again.
var ErrConnClosed = errors.New("uplink: nats connection closed")

// Uplink publishes a relay's outbox to JetStream. Run does the work; SetRate,
// Rate and Connected are safe to call from any goroutine at any time. One
// Uplink per connection: Run chains itself into the connection's async error
// handler.
type Uplink struct {
	opts Options
	log  *slog.Logger
	js   jetstream.JetStream
	m    *metrics

	rate    atomic.Int64
	rateSig chan struct{} // wakes Run after a rate change
	running atomic.Bool

	evMu  sync.Mutex
	evs   []event
	evSig chan struct{} // wakes Run when evs grows

	attempts atomic.Int64 // publishes handed to NATS; tests read it

	// testHookReconnected runs in Run's goroutine after the live pointers
	// moved on reconnection, before anything is sent.
	testHookReconnected func()
}

// event is what nats.go callbacks report to Run's goroutine.
type event struct {
	msg    *nats.Msg
	ack    *jetstream.PubAck
	err    error
	denied string // subject of a publish permissions violation
}

// New checks opts and registers the metrics. It does no I/O.
func New(opts Options) (*Uplink, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	u := &Uplink{
		opts:    opts,
		log:     opts.Logger.With("component", "uplink", "store", opts.Store),
		rateSig: make(chan struct{}, 1),
		evSig:   make(chan struct{}, 1),
	}
	u.rate.Store(opts.Rate)
	u.js, err = jetstream.New(opts.Conn,
		jetstream.WithPublishAsyncMaxPending(opts.MaxInflight),
		jetstream.WithPublishAsyncTimeout(opts.AckTimeout),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, a *jetstream.PubAck) {
			u.push(event{msg: m, ack: a})
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			u.push(event{msg: m, err: err})
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("create jetstream context: %w", err)
	}
	u.m, err = newMetrics(opts.Registerer,
		func() float64 {
			if u.Connected() {
				return 1
			}
			return 0
		},
		func() float64 { return float64(u.Rate()) })
	if err != nil {
		return nil, err
	}
	return u, nil
}

// SetRate changes the uplink limit in bytes/s (0: unlimited) from now on.
// The config bucket, when watched, overrides it on its next change.
func (u *Uplink) SetRate(bytesPerSecond int64) {
	u.rate.Store(max(bytesPerSecond, 0))
	select {
	case u.rateSig <- struct{}{}:
	default:
	}
}

// Rate returns the uplink limit in bytes/s; 0 means unlimited.
func (u *Uplink) Rate() int64 { return u.rate.Load() }

// Connected reports whether the connection to central is up.
func (u *Uplink) Connected() bool { return u.opts.Conn.IsConnected() }

// Run publishes until ctx ends, then waits up to Options.ShutdownGrace for
// outstanding acks, commits what was acknowledged and returns nil. Batches
// not acknowledged stay in the outbox for the next Run. It returns an error
// only when it cannot go on: the outbox failed or closed ([buffer.CorruptionError]
// and [buffer.ErrClosed] are wrapped) or the connection was closed
// ([ErrConnClosed]). Unless Options.DisableConfigWatch is set it runs
// [Uplink.WatchConfig] alongside.
func (u *Uplink) Run(ctx context.Context) error {
	if !u.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer u.running.Store(false)
	nc := u.opts.Conn

	status := nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)
	defer nc.RemoveStatusListener(status)
	prev := nc.ErrorHandler()
	nc.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
		u.onAsyncError(err)
		if prev != nil {
			prev(c, sub, err)
		}
	})
	defer nc.SetErrorHandler(prev)

	var wg sync.WaitGroup
	defer wg.Wait()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel() // runs before wg.Wait
	if !u.opts.DisableConfigWatch {
		wg.Go(func() { _ = u.WatchConfig(wctx) })
	}
	return newSender(u).run(ctx, status)
}

func (u *Uplink) push(e event) {
	u.evMu.Lock()
	u.evs = append(u.evs, e)
	u.evMu.Unlock()
	select {
	case u.evSig <- struct{}{}:
	default:
	}
}

func (u *Uplink) takeEvents(dst []event) []event {
	u.evMu.Lock()
	defer u.evMu.Unlock()
	dst = append(dst[:0], u.evs...)
	clear(u.evs)
	u.evs = u.evs[:0]
	return dst
}

// onAsyncError sees the connection's async errors. The server answers a
// publish the user may not make with -ERR 'Permissions Violation for Publish
// to "subject"' and no PubAck; this is where the uplink learns of it.
func (u *Uplink) onAsyncError(err error) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	subj := deniedPublishSubject(err.Error())
	if subj == "" || !strings.HasPrefix(subj, "telemetry.") {
		return
	}
	u.push(event{denied: subj})
}

// deniedPublishSubject extracts the subject from a publish permissions
// violation, "" if msg is not one.
func deniedPublishSubject(msg string) string {
	const pre = `publish to "`
	i := strings.Index(strings.ToLower(msg), pre)
	if i < 0 {
		return ""
	}
	rest := msg[i+len(pre):]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return rest[:j]
}
