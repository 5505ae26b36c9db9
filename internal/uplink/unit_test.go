package uplink

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestSpans(t *testing.T) {
	type op struct {
		add    bool
		lo, hi uint64
	}
	for _, tc := range []struct {
		name string
		ops  []op
		want spans
	}{
		{"adjacent_ranges_merge", []op{{true, 0, 5}, {true, 5, 9}}, spans{{0, 9}}},
		{"out_of_order_acks_merge_when_gap_fills", []op{{true, 3, 4}, {true, 1, 2}, {true, 2, 3}}, spans{{1, 4}}},
		{"overlap_swallows_several", []op{{true, 0, 2}, {true, 4, 6}, {true, 8, 10}, {true, 1, 9}}, spans{{0, 10}}},
		{"remove_splits_a_range", []op{{true, 0, 10}, {false, 3, 5}}, spans{{0, 3}, {5, 10}}},
		{"remove_across_ranges", []op{{true, 0, 3}, {true, 5, 8}, {true, 10, 12}, {false, 2, 11}}, spans{{0, 2}, {11, 12}}},
		{"remove_outside_is_noop", []op{{true, 5, 8}, {false, 0, 5}, {false, 8, 9}}, spans{{5, 8}}},
		{"empty_range_ignored", []op{{true, 4, 4}, {false, 1, 1}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s spans
			for _, o := range tc.ops {
				if o.add {
					s.add(o.lo, o.hi)
				} else {
					s.remove(o.lo, o.hi)
				}
			}
			if !slices.Equal(s, tc.want) {
				t.Fatalf("got %v, want %v", s, tc.want)
			}
		})
	}
}

func TestSpans_TakePrefix(t *testing.T) {
	for _, tc := range []struct {
		name      string
		set       spans
		base      uint64
		want      uint64
		wantAfter spans
	}{
		{"gap_at_base_blocks_commit", spans{{5, 9}}, 3, 3, spans{{5, 9}}},
		{"acked_run_from_base_commits", spans{{3, 9}, {12, 14}}, 3, 9, spans{{12, 14}}},
		{"run_below_base_is_dropped", spans{{0, 2}, {2, 7}}, 4, 7, spans{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := slices.Clone(tc.set)
			if got := s.takePrefix(tc.base); got != tc.want || !slices.Equal(s, tc.wantAfter) {
				t.Fatalf("takePrefix(%d) = %d leaving %v, want %d leaving %v", tc.base, got, s, tc.want, tc.wantAfter)
			}
		})
	}
}

func TestBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name  string
		rate  int64
		spend int           // taken at t0 after the initial burst check
		n     int           // then a batch of n bytes asks
		at    time.Duration // after t0
		want  time.Duration
	}{
		{"unlimited_never_waits", 0, 1 << 30, 1 << 20, 0, 0},
		{"full_bucket_sends_at_once", 100_000, 0, 50_000, 0, 0},
		{"empty_bucket_waits_for_the_batch", 100_000, 100_000, 10_000, 0, 100 * time.Millisecond},
		{"debt_is_repaid_first", 100_000, 300_000, 10_000, time.Second, 1100 * time.Millisecond},
		{"batch_over_burst_waits_only_for_a_full_bucket", 10_000, 10_000, 1 << 20, 0, time.Second},
		{"tokens_accrue", 100_000, 100_000, 10_000, 100 * time.Millisecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBucket(tc.rate, t0)
			b.take(tc.spend, t0)
			got := b.wait(tc.n, t0.Add(tc.at))
			if math.Abs(float64(got-tc.want)) > float64(time.Millisecond) {
				t.Fatalf("wait = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestBucket_RateOverTime drives the limiter with real timers in a synctest
// bubble: a minute of fake time, batches of uneven size, a rate change half
// way. The long-run rate must match the limit closely; the windows are long
// (fake time costs nothing) so that the one big batch a window may end on
// weighs little.
func TestBucket_RateOverTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rate1, rate2 = 200_000, 50_000
		b := newBucket(rate1, time.Now())
		sizes := []int{16 << 10, 1 << 10, 300 << 10, 4 << 10} // one bigger than the burst
		send := func(d time.Duration) float64 {
			start, sent := time.Now(), 0
			for i := 0; time.Since(start) < d; i++ {
				n := sizes[i%len(sizes)]
				for {
					w := b.wait(n, time.Now())
					if w == 0 {
						break
					}
					tm := time.NewTimer(w)
					<-tm.C
				}
				b.take(n, time.Now())
				sent += n
			}
			return float64(sent) / time.Since(start).Seconds()
		}
		send(5 * time.Second) // burn the initial burst
		if got := send(300 * time.Second); math.Abs(got/rate1-1) > 0.02 {
			t.Errorf("rate %0.f, want %d ± 2%%", got, rate1)
		}
		b.setRate(rate2, time.Now())
		send(10 * time.Second) // repay the debt of the big batch
		if got := send(1200 * time.Second); math.Abs(got/rate2-1) > 0.02 {
			t.Errorf("after SetRate: rate %0.f, want %d ± 2%%", got, rate2)
		}
	})
}

func TestReasonOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"ack_timeout", jetstream.ErrAsyncPublishTimeout, ReasonTimeout},
		{"link_dropped_with_ack_pending", nats.ErrDisconnected, ReasonDisconnected},
		{"publish_while_reconnecting", fmt.Errorf("publish: %w", nats.ErrReconnectBufExceeded), ReasonDisconnected},
		{"no_stream_responders", jetstream.ErrNoStreamResponse, ReasonNoStream},
		{"stream_not_found_api_error", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamNotFound, Code: 404}, ReasonNoStream},
		{"permissions_violation", fmt.Errorf("%w: x", nats.ErrPermissionViolation), ReasonPermission},
		{"stream_full", &jetstream.APIError{ErrorCode: 10077, Code: 503, Description: "maximum messages exceeded"}, ReasonOther},
		{"anything_else", errors.New("boom"), ReasonOther},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := reasonOf(tc.err); got != tc.want {
				t.Fatalf("reasonOf(%v) = %s, want %s", tc.err, got, tc.want)
			}
		})
	}
}

func TestDeniedPublishSubject(t *testing.T) {
	for _, tc := range []struct{ msg, want string }{
		{`nats: permissions violation: Permissions Violation for Publish to "telemetry.s1.critical"`, "telemetry.s1.critical"},
		{`nats: permissions violation: Permissions Violation for Subscription to "_INBOX.x"`, ""},
		{`nats: permissions violation: Permissions Violation for Publish to "unterminated`, ""},
	} {
		if got := deniedPublishSubject(tc.msg); got != tc.want {
			t.Errorf("deniedPublishSubject(%q) = %q, want %q", tc.msg, got, tc.want)
		}
	}
}
