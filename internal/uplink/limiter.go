package uplink

import (
	"math"
	"time"
)

// bucket is a token bucket on uplink bytes. Tokens accrue at rate bytes/s
// up to burst (one second's worth, at least minBurst). A batch may go when
// the bucket holds its cost or, for a batch larger than the burst, when the
// bucket is full; the cost is then taken even if that drives the balance
// negative (debt), which later batches wait out. So the long-run rate is
// exactly the limit and no batch, however large, waits forever.
//
// rate 0 means unlimited. The clock is passed in, so the bucket is pure
// arithmetic. It is not safe for concurrent use (the send loop owns it).
type bucket struct {
	rate   int64   // bytes/s; 0 = unlimited
	burst  float64 // bytes
	tokens float64 // may be negative (debt)
	last   time.Time
}

// minBurst keeps tiny limits usable: below it a batch would always be in debt.
const minBurst = 4 << 10

func newBucket(rate int64, now time.Time) *bucket {
	b := &bucket{last: now}
	b.setRate(rate, now)
	b.tokens = b.burst // start full: one second of burst after start
	return b
}

// setRate changes the limit from now on. Tokens earned at the old rate are
// kept up to the new burst; debt is kept.
func (b *bucket) setRate(rate int64, now time.Time) {
	b.refill(now)
	b.rate = max(rate, 0)
	b.burst = math.Max(float64(b.rate), minBurst)
	b.tokens = math.Min(b.tokens, b.burst)
}

func (b *bucket) refill(now time.Time) {
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens = math.Min(b.burst, b.tokens+float64(b.rate)*dt.Seconds())
		b.last = now
	}
}

// wait returns how long a batch costing n bytes must wait; 0 means it may
// go now (call take).
func (b *bucket) wait(n int, now time.Time) time.Duration {
	if b.rate == 0 {
		return 0
	}
	b.refill(now)
	need := math.Min(float64(n), b.burst)
	if b.tokens >= need {
		return 0
	}
	d := time.Duration((need - b.tokens) / float64(b.rate) * float64(time.Second))
	return max(d, time.Millisecond)
}

// take spends n bytes of tokens.
func (b *bucket) take(n int, now time.Time) {
	if b.rate == 0 {
		return
	}
	b.refill(now)
	b.tokens -= float64(n)
}
