package ingester

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"tillpipe/internal/remotewrite"
)

// backend writes remote-write requests with retries and tells the workers
// whether to fetch: while it fails with a recoverable error, the gate is shut
// and workers without a batch in hand wait instead of pulling more messages
// into memory. It is safe for concurrent use.
type backend struct {
	client   *remotewrite.Client
	m        *metrics
	log      *slog.Logger
	minRetry time.Duration
	maxRetry time.Duration

	mu       sync.Mutex
	up       chan struct{} // closed while the backend answers
	lastWarn time.Time     // throttles the retry warning
}

func newBackend(c *remotewrite.Client, m *metrics, log *slog.Logger, minRetry, maxRetry time.Duration) *backend {
	b := &backend{client: c, m: m, log: log, minRetry: minRetry, maxRetry: maxRetry, up: make(chan struct{})}
	close(b.up)
	return b
}

// waitUp blocks while the backend is failing.
func (b *backend) waitUp(ctx context.Context) error {
	b.mu.Lock()
	up := b.up
	b.mu.Unlock()
	select {
	case <-up:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *backend) setUp(ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.up:
		if !ok {
			b.up = make(chan struct{})
			b.m.backendUp.Set(0)
		}
	default:
		if ok {
			close(b.up)
			b.m.backendUp.Set(1)
			b.log.Info("backend answers again, resuming fetch")
		}
	}
}

// send makes one request and records its answer.
func (b *backend) send(ctx context.Context, body []byte) error {
	start := time.Now()
	err := b.client.Send(ctx, body)
	b.m.backendLatency.Observe(time.Since(start).Seconds())
	var (
		re *remotewrite.RecoverableError
		se *remotewrite.StatusError
	)
	switch {
	case err == nil:
		b.m.backendRequests.WithLabelValues("2xx").Inc()
	case errors.As(err, &se):
		b.m.backendRequests.WithLabelValues(strconv.Itoa(se.StatusCode)).Inc()
	case errors.As(err, &re):
		b.m.backendRequests.WithLabelValues("network").Inc()
	}
	return err
}

// RetryAbandonedError is returned by write when ctx ended while the backend
// was failing. Delay is the back-off the next attempt would have waited,
// suitable for NakWithDelay.
type RetryAbandonedError struct {
	Delay time.Duration
	Err   error // the last recoverable error
}

func (e *RetryAbandonedError) Error() string {
	return fmt.Sprintf("abandon backend retry (next in %s): %v", e.Delay, e.Err)
}
func (e *RetryAbandonedError) Unwrap() error { return e.Err }

// write sends body until the backend answers. Recoverable failures (no
// answer, 5xx, 429) shut the gate and are retried after an exponential
// back-off that is at least the server's Retry-After; hold is called before
// each wait. Requests run under hard, so one already started at shutdown can
// finish; the waits between them end with ctx, returning a
// *RetryAbandonedError. Any other answer is returned as is (a
// *remotewrite.StatusError for a 4xx).
func (b *backend) write(ctx, hard context.Context, body []byte) error {
	delay := b.minRetry
	for {
		err := b.send(hard, body)
		var re *remotewrite.RecoverableError
		if !errors.As(err, &re) {
			if err == nil || hard.Err() == nil {
				b.setUp(true)
			}
			return err
		}
		b.setUp(false)
		wait := max(delay, min(re.RetryAfter, 10*b.maxRetry))
		b.warn(err, re.StatusCode, wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return &RetryAbandonedError{Delay: wait, Err: err}
		case <-t.C:
		}
		delay = min(2*delay, b.maxRetry)
	}
}

// warn logs a failed write at most every 10 s.
func (b *backend) warn(err error, code int, retryIn time.Duration) {
	b.mu.Lock()
	now := time.Now()
	if now.Sub(b.lastWarn) < 10*time.Second {
		b.mu.Unlock()
		return
	}
	b.lastWarn = now
	b.mu.Unlock()
	b.log.Warn("backend write failed, fetching paused", "code", code, "retry_in", retryIn, "err", err)
}
