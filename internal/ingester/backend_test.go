package ingester

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"tillpipe/internal/remotewrite"
)

// scripted is an in-memory transport answering each request with the next
// scripted answer: a status code, or 0 for a network error.
type scripted struct {
	codes      []int
	retryAfter string
	at         []time.Time
}

func (s *scripted) RoundTrip(r *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, r.Body)
	s.at = append(s.at, time.Now())
	code := 204
	if len(s.codes) > 0 {
		code, s.codes = s.codes[0], s.codes[1:]
	}
	if code == 0 {
		return nil, errors.New("connection refused")
	}
	h := http.Header{}
	if s.retryAfter != "" {
		h.Set("Retry-After", s.retryAfter)
	}
	return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
}

func TestBackendWrite_Retries(t *testing.T) {
	cases := []struct {
		name       string
		codes      []int
		retryAfter string
		wantGaps   []time.Duration // between attempts
		wantErr    bool
	}{
		{name: "unavailable_backs_off_exponentially", codes: []int{503, 503, 503}, wantGaps: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}},
		{name: "network_error_backs_off", codes: []int{0, 0}, wantGaps: []time.Duration{time.Second, 2 * time.Second}},
		{name: "too_many_requests_honours_retry_after", codes: []int{429, 429}, retryAfter: "7", wantGaps: []time.Duration{7 * time.Second, 7 * time.Second}},
		{name: "backoff_capped", codes: []int{503, 503, 503, 503, 503}, wantGaps: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}},
		{name: "bad_request_not_retried", codes: []int{400}, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tr := &scripted{codes: tc.codes, retryAfter: tc.retryAfter}
				c, err := remotewrite.NewClient(remotewrite.ClientOptions{URL: "http://backend/api/v1/write", HTTPClient: &http.Client{Transport: tr}})
				if err != nil {
					t.Fatal(err)
				}
				b := newBackend(c, newMetrics(nil), slog.New(slog.DiscardHandler), time.Second, 5*time.Second)
				ctx := context.Background()
				err = b.write(ctx, ctx, []byte("x"))
				var se *remotewrite.StatusError
				if tc.wantErr != errors.As(err, &se) {
					t.Fatalf("write = %v, want StatusError %v", err, tc.wantErr)
				}
				var gaps []time.Duration
				for i := 1; i < len(tr.at); i++ {
					gaps = append(gaps, tr.at[i].Sub(tr.at[i-1]))
				}
				if len(gaps) != len(tc.wantGaps) {
					t.Fatalf("gaps between attempts = %v, want %v", gaps, tc.wantGaps)
				}
				for i := range gaps {
					if gaps[i] != tc.wantGaps[i] {
						t.Fatalf("gaps between attempts = %v, want %v", gaps, tc.wantGaps)
					}
				}
				if err := b.waitUp(ctx); err != nil {
					t.Fatalf("gate still shut after the backend answered: %v", err)
				}
			})
		})
	}
}

// TestBackendWrite_GateShutWhileFailing: while one write retries, waitUp
// blocks (no fetching); a shutdown abandons the retry with the next delay.
func TestBackendWrite_GateShutWhileFailing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &scripted{codes: []int{503, 503, 503, 503}}
		c, _ := remotewrite.NewClient(remotewrite.ClientOptions{URL: "http://backend/api/v1/write", HTTPClient: &http.Client{Transport: tr}})
		b := newBackend(c, newMetrics(nil), slog.New(slog.DiscardHandler), time.Second, time.Minute)
		ctx, cancel := context.WithCancel(context.Background())
		werr := make(chan error, 1)
		go func() { werr <- b.write(ctx, context.Background(), []byte("x")) }()
		synctest.Wait()
		up := make(chan error, 1)
		go func() { up <- b.waitUp(ctx) }()
		synctest.Wait()
		select {
		case <-up:
			t.Fatal("waitUp returned while the backend fails")
		default:
		}
		time.Sleep(3500 * time.Millisecond) // fake clock: attempts at 0s, 1s and 3s
		cancel()
		err := <-werr
		var ra *RetryAbandonedError
		if !errors.As(err, &ra) || ra.Delay != 4*time.Second {
			t.Fatalf("write = %v, want RetryAbandonedError with delay 4s", err)
		}
		if err := <-up; !errors.Is(err, context.Canceled) {
			t.Fatalf("waitUp = %v, want context.Canceled", err)
		}
		if got := len(tr.at); got != 3 {
			t.Fatalf("%d attempts, want 3", got)
		}
	})
}
