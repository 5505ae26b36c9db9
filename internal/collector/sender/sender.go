// Package sender delivers the collector's remote-write requests to the
// store relay, holding them in a bounded in-memory buffer while the relay is
// unreachable.
//
// The buffer is in memory on purpose: a till that reboots during a relay
// outage loses at most the buffered minutes, and the relay is the durable
// tier. Requests are enqueued snappy-compressed, as they go on the wire, so
// the default 8 MiB holds hours of a till's requests (see the package
// collector's doc for the measured figures) and a request is compressed
// once however often it is retried. When a new request does not fit, the
// oldest are dropped first and counted.
//
// Delivery follows the remote-write spec: a network error, 5xx or 429 is
// retried with exponential backoff and jitter (or the server's Retry-After
// when longer) while sampling continues, and the backlog goes out oldest
// first once the relay answers; any other answer (4xx) drops that request,
// counts it, and is logged at most once a minute.
package sender

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"

	"tillpipe/internal/clock"
	"tillpipe/internal/remotewrite"
)

// ErrInvalidOption is wrapped by every error about a bad [Options] field.
var ErrInvalidOption = errors.New("invalid option")

// Client sends one snappy-compressed WriteRequest. *remotewrite.Client
// implements it; its errors are classified with errors.As against
// *remotewrite.RecoverableError.
type Client interface {
	SendSnappy(ctx context.Context, compressed []byte) error
}

var _ Client = (*remotewrite.Client)(nil)

// Options configures a [Sender]. The zero value of each field means its
// default.
type Options struct {
	// MaxBytes bounds the buffer (compressed bytes); default 8 MiB.
	MaxBytes int
	// MinBackoff is the first retry delay; default 1s. Each failure doubles
	// it up to MaxBackoff (default 1 min); the wait is drawn uniformly from
	// [d/2, d).
	MinBackoff, MaxBackoff time.Duration
	// MaxRetryAfter caps a server's Retry-After; default 5 min.
	MaxRetryAfter time.Duration
	// LogEvery throttles repeated failure logs; default 1 min.
	LogEvery time.Duration
	// Logger nil discards.
	Logger *slog.Logger
	// Registerer receives the sender's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

// Drop reasons, the values of the reason label.
const (
	ReasonBufferFull = "buffer_full" // the oldest request made room for a newer one
	ReasonRejected   = "rejected"    // the relay answered 4xx
	ReasonShutdown   = "shutdown"    // still buffered when the collector stopped
)

type entry struct {
	data    []byte // snappy
	samples int
	packed  bool // data went through pack
}

// Sender owns the buffer and the send loop. Enqueue is safe for concurrent
// use with Run; Run must be called once.
type Sender struct {
	client Client
	opts   Options
	log    *slog.Logger

	mu    sync.Mutex
	queue []entry // oldest first
	bytes int
	wake  chan struct{}

	free [][]byte // buffers of sent entries, for reuse; s.mu

	lastRejectLog, lastRetryLog time.Time
	suppressedRejects           int

	sentRequests, sentSamples prometheus.Counter
	retries                   prometheus.Counter
	droppedRequests           *prometheus.CounterVec
	droppedSamples            *prometheus.CounterVec
	bufferBytes, bufferReqs   prometheus.Gauge
}

// New returns a sender delivering through client.
func New(client Client, opts Options) (*Sender, error) {
	if client == nil {
		return nil, fmt.Errorf("client is nil: %w", ErrInvalidOption)
	}
	if opts.MaxBytes < 0 || opts.MinBackoff < 0 || opts.MaxBackoff < 0 {
		return nil, fmt.Errorf("negative MaxBytes or backoff: %w", ErrInvalidOption)
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = 8 << 20
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = time.Minute
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.MaxRetryAfter == 0 {
		opts.MaxRetryAfter = 5 * time.Minute
	}
	if opts.LogEvery == 0 {
		opts.LogEvery = time.Minute
	}
	s := &Sender{client: client, opts: opts, log: opts.Logger, wake: make(chan struct{}, 1)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "sender")
	s.sentRequests = prometheus.NewCounter(prometheus.CounterOpts{Name: "sent_requests_total", Help: "Remote-write requests the relay accepted."})
	s.sentSamples = prometheus.NewCounter(prometheus.CounterOpts{Name: "sent_samples_total", Help: "Samples the relay accepted."})
	s.retries = prometheus.NewCounter(prometheus.CounterOpts{Name: "send_retries_total", Help: "Send attempts that failed recoverably (no connection, 5xx, 429) and will be retried."})
	s.droppedRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dropped_requests_total", Help: "Remote-write requests dropped, by reason."}, []string{"reason"})
	s.droppedSamples = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dropped_samples_total", Help: "Samples dropped, by reason."}, []string{"reason"})
	s.bufferBytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "buffer_bytes", Help: "Bytes held in the send buffer."})
	s.bufferReqs = prometheus.NewGauge(prometheus.GaugeOpts{Name: "buffer_requests", Help: "Requests held in the send buffer."})
	for _, r := range []string{ReasonBufferFull, ReasonRejected, ReasonShutdown} {
		s.droppedRequests.WithLabelValues(r)
		s.droppedSamples.WithLabelValues(r)
	}
	if opts.Registerer != nil {
		for _, m := range []prometheus.Collector{s.sentRequests, s.sentSamples, s.retries, s.droppedRequests, s.droppedSamples, s.bufferBytes, s.bufferReqs} {
			if err := opts.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("register sender metrics: %w", err)
			}
		}
	}
	return s, nil
}

// maxFree bounds the buffers of sent entries kept for reuse: while the
// relay answers, one is being sent and one enqueued.
const maxFree = 2

// Enqueue copies compressed, a WriteRequest holding samples samples in
// snappy's block format (as remote-write sends it), into the buffer,
// dropping the oldest requests if it does not fit. The copy goes into the
// buffer of an earlier, sent request when there is one large enough. When
// requests are already waiting, it is packed first (see pack).
func (s *Sender) Enqueue(compressed []byte, samples int) {
	s.mu.Lock()
	var buf []byte
	for i := len(s.free) - 1; i >= 0; i-- {
		if cap(s.free[i]) >= len(compressed) {
			buf = s.free[i]
			s.free = append(s.free[:i], s.free[i+1:]...)
			break
		}
	}
	held := len(s.queue) > 0 // the relay is behind or down
	if held {
		if packed, ok := pack(compressed); ok {
			compressed = packed
		}
	}
	e := entry{data: append(buf[:0], compressed...), samples: samples, packed: held}
	s.makeRoom(len(e.data))
	if len(e.data) <= s.opts.MaxBytes {
		s.queue = append(s.queue, e)
		s.bytes += len(e.data)
	} else {
		s.drop(ReasonBufferFull, e.samples)
	}
	s.updateGauges()
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// release keeps e's buffer for a later Enqueue once e is done with.
func (s *Sender) release(e entry) {
	s.mu.Lock()
	if len(s.free) < maxFree {
		s.free = append(s.free, e.data)
	}
	s.mu.Unlock()
}

// makeRoom drops the oldest entries until n more bytes fit. s.mu is held.
func (s *Sender) makeRoom(n int) {
	for len(s.queue) > 0 && s.bytes+n > s.opts.MaxBytes {
		old := s.queue[0]
		s.queue[0] = entry{}
		s.queue = s.queue[1:]
		s.bytes -= len(old.data)
		s.drop(ReasonBufferFull, old.samples)
	}
}

func (s *Sender) drop(reason string, samples int) {
	s.droppedRequests.WithLabelValues(reason).Inc()
	s.droppedSamples.WithLabelValues(reason).Add(float64(samples))
}

func (s *Sender) updateGauges() {
	s.bufferBytes.Set(float64(s.bytes))
	s.bufferReqs.Set(float64(len(s.queue)))
}

// pop takes the oldest entry.
func (s *Sender) pop() (entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return entry{}, false
	}
	e := s.queue[0]
	s.queue[0] = entry{}
	s.queue = s.queue[1:]
	s.bytes -= len(e.data)
	s.updateGauges()
	return e, true
}

// requeue puts e back at the head after a recoverable failure, unless
// newer requests filled its room meanwhile (then it is the oldest and is
// dropped).
func (s *Sender) requeue(e entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !e.packed {
		if packed, ok := pack(e.data); ok {
			e.data = append(e.data[:0], packed...) // shorter: it fits
		}
		e.packed = true
	}
	if s.bytes+len(e.data) > s.opts.MaxBytes {
		s.drop(ReasonBufferFull, e.samples)
		return
	}
	s.queue = append(s.queue, entry{})
	copy(s.queue[1:], s.queue)
	s.queue[0] = e
	s.bytes += len(e.data)
	s.updateGauges()
}

// pack returns compressed encoded again by snappy's own encoder when that
// is smaller. The collector encodes its requests with package snapblock,
// which keeps the sample fields as literals so that the next cycle's
// request is the last one patched: cheap to make, about twice snappy's
// size. A request that is sent at once goes as it is; one held in the
// buffer (the relay down or behind) is packed, so that the buffer holds as
// many cycles as with snappy's encoding. A request that does not decode is
// left as it is: the relay will refuse it, as it would have anyway.
func pack(compressed []byte) ([]byte, bool) {
	body, err := snappy.Decode(nil, compressed)
	if err != nil {
		return nil, false
	}
	packed := snappy.Encode(nil, body)
	if len(packed) >= len(compressed) {
		return nil, false
	}
	return packed, true
}

// Len is the number of buffered requests.
func (s *Sender) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// Run sends buffered requests, oldest first, until ctx is done. It returns
// nil then; what is still buffered stays for [Sender.Flush].
func (s *Sender) Run(ctx context.Context) error {
	attempt := 0
	for {
		e, ok := s.pop()
		if !ok {
			select {
			case <-ctx.Done():
				return nil
			case <-s.wake:
				continue
			}
		}
		err := s.send(ctx, e)
		var re *remotewrite.RecoverableError
		switch {
		case err == nil:
			s.release(e)
			if attempt > 0 {
				s.log.Info("relay reachable again", "backlog_requests", s.Len())
			}
			attempt = 0
		case ctx.Err() != nil:
			s.requeue(e)
			return nil
		case errors.As(err, &re):
			s.requeue(e)
			s.retries.Inc()
			d := s.backoff(attempt, re.RetryAfter)
			attempt++
			s.logRetry(err, d)
			if clock.Sleep(ctx, d) != nil {
				return nil
			}
		default:
			s.release(e)
			s.drop(ReasonRejected, e.samples)
			s.logReject(err, e.samples)
		}
	}
}

func (s *Sender) send(ctx context.Context, e entry) error {
	if err := s.client.SendSnappy(ctx, e.data); err != nil {
		return err
	}
	s.sentRequests.Inc()
	s.sentSamples.Add(float64(e.samples))
	return nil
}

// backoff is the wait before retry attempt+1: MinBackoff doubled per
// attempt up to MaxBackoff, jittered over [d/2, d), or retryAfter (capped)
// when the server asked for longer.
func (s *Sender) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := s.opts.MinBackoff
	for i := 0; i < attempt && d < s.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.opts.MaxBackoff)
	d = d/2 + rand.N(d/2+1)
	if ra := min(retryAfter, s.opts.MaxRetryAfter); ra > d {
		d = ra
	}
	return d
}

func (s *Sender) logRetry(err error, wait time.Duration) {
	now := time.Now()
	if now.Sub(s.lastRetryLog) < s.opts.LogEvery {
		return
	}
	s.lastRetryLog = now
	s.log.Warn("relay unreachable, buffering", "err", err, "retry_in", wait, "backlog_requests", s.Len())
}

func (s *Sender) logReject(err error, samples int) {
	now := time.Now()
	if now.Sub(s.lastRejectLog) < s.opts.LogEvery {
		s.suppressedRejects++
		return
	}
	s.lastRejectLog = now
	s.log.Error("relay rejected request, dropped", "err", err, "samples", samples, "suppressed_since_last_log", s.suppressedRejects)
	s.suppressedRejects = 0
}

// Flush tries once to send what is buffered, oldest first, without
// backoff, until ctx is done or a send fails; the rest is dropped and
// counted with reason "shutdown". Call it after Run returned.
func (s *Sender) Flush(ctx context.Context) {
	for {
		if ctx.Err() != nil {
			break
		}
		e, ok := s.pop()
		if !ok {
			return
		}
		err := s.send(ctx, e)
		if err == nil {
			continue
		}
		if remotewrite.IsRecoverable(err) || ctx.Err() != nil {
			s.drop(ReasonShutdown, e.samples)
			break
		}
		s.drop(ReasonRejected, e.samples)
		s.logReject(err, e.samples)
	}
	s.mu.Lock()
	n, samples := len(s.queue), 0
	for _, e := range s.queue {
		samples += e.samples
		s.drop(ReasonShutdown, e.samples)
	}
	s.queue, s.bytes = nil, 0
	s.updateGauges()
	s.mu.Unlock()
	if n > 0 {
		s.log.Warn("dropped buffered requests at shutdown", "requests", n, "samples", samples)
	}
}
