package fleet

import (
	"sync"
	"time"
)

// Clock maps real time to simulated time: sim(t) = anchorSim +
// (t - anchorReal) * accel. The factor can change while the fleet runs (an
// outage at 1440x, then real time again). It is safe for concurrent use.
type Clock struct {
	mu         sync.Mutex
	anchorReal time.Time
	anchorSim  time.Time
	accel      float64
	changed    chan struct{}
}

// NewClock starts simulated time at simStart, now, running accel times
// faster than real time.
func NewClock(simStart time.Time, accel float64) *Clock {
	if accel <= 0 {
		accel = 1
	}
	return &Clock{anchorReal: time.Now(), anchorSim: simStart, accel: accel, changed: make(chan struct{})}
}

// Now is the current simulated time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.simAt(time.Now())
}

func (c *Clock) simAt(real time.Time) time.Time {
	return c.anchorSim.Add(time.Duration(float64(real.Sub(c.anchorReal)) * c.accel))
}

// Accel is the current acceleration factor.
func (c *Clock) Accel() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.accel
}

// RealAt is the real time at which simulated time reaches sim under the
// current factor, and a channel closed when the factor changes (so a waiter
// recomputes).
func (c *Clock) RealAt(sim time.Time) (time.Time, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.anchorReal.Add(time.Duration(float64(sim.Sub(c.anchorSim)) / c.accel)), c.changed
}

// SetAccel changes the factor from now on, keeping simulated time continuous.
func (c *Clock) SetAccel(accel float64) {
	if accel <= 0 {
		accel = 1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.anchorSim = c.simAt(now)
	c.anchorReal = now
	c.accel = accel
	close(c.changed)
	c.changed = make(chan struct{})
}

// Jump sets simulated time to sim from now on (same factor).
func (c *Clock) Jump(sim time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.anchorReal, c.anchorSim = time.Now(), sim
	close(c.changed)
	c.changed = make(chan struct{})
}
