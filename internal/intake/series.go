package intake

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"tillpipe/internal/classify"
	"tillpipe/internal/wire"
)

// devices tracks, per device, the distinct series seen in a sliding window
// and caches each series' class. A series is keyed by the 64-bit hash of its
// label set (without store). Each device keeps two generations: series seen
// in the current half-window and in the previous one; a lookup that finds a
// series in the previous generation moves it to the current one, and every
// half-window the current generation becomes the previous one. The series a
// device has are therefore those seen in the last half to whole window.
//
// devices is safe for concurrent use: the device map under mu, each device
// under its own mutex.
type devices struct {
	limit int           // max series per device; 0: unlimited
	half  time.Duration // generation length

	mu sync.RWMutex
	m  map[string]*device

	active    atomic.Int64 // series tracked over all devices
	lastSweep atomic.Int64 // unix nanos
}

type device struct {
	mu        sync.Mutex
	cur, prev map[uint64]wire.Class
	rotated   int64 // unix nanos the current generation began
}

func newDevices(limit int, window time.Duration, now time.Time) *devices {
	d := &devices{limit: limit, half: window / 2, m: make(map[string]*device)}
	d.lastSweep.Store(now.UnixNano())
	return d
}

// get returns key's device, creating it. The caller locks it.
func (d *devices) get(key string, now int64) *device {
	d.mu.RLock()
	dev := d.m[key]
	d.mu.RUnlock()
	if dev != nil {
		return dev
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if dev = d.m[key]; dev == nil {
		dev = &device{cur: make(map[uint64]wire.Class), prev: map[uint64]wire.Class{}, rotated: now}
		d.m[string([]byte(key))] = dev // key may point into a request buffer
	}
	return dev
}

// rotate starts a new generation when the current one is a half-window old.
// Caller holds dev.mu.
func (d *devices) rotate(dev *device, now int64) {
	if now-dev.rotated < int64(d.half) {
		return
	}
	d.active.Add(-int64(len(dev.prev)))
	if now-dev.rotated >= 2*int64(d.half) { // idle for a whole window
		d.active.Add(-int64(len(dev.cur)))
		clear(dev.cur)
	}
	dev.prev, dev.cur = dev.cur, make(map[uint64]wire.Class, len(dev.cur))
	dev.rotated = now
}

// lookup returns the class of series h of dev and whether it may be
// accepted: known series always are; a new one only while the device is
// under its limit, and then it is classified once and cached. Caller
// holds dev.mu.
func (d *devices) lookup(dev *device, h uint64, rules *classify.Rules, labels []prompb.Label) (wire.Class, bool) {
	if c, ok := dev.cur[h]; ok {
		return c, true
	}
	if c, ok := dev.prev[h]; ok {
		delete(dev.prev, h)
		dev.cur[h] = c
		return c, true
	}
	if d.limit > 0 && len(dev.cur)+len(dev.prev) >= d.limit {
		return 0, false
	}
	c := rules.Classify(labels)
	dev.cur[h] = c
	d.active.Add(1)
	return c, true
}

// sweep rotates devices not seen for a half-window and forgets those with
// nothing left, at most once per half-window.
func (d *devices) sweep(now int64) {
	last := d.lastSweep.Load()
	if now-last < int64(d.half) || !d.lastSweep.CompareAndSwap(last, now) {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, dev := range d.m {
		dev.mu.Lock()
		d.rotate(dev, now)
		empty := len(dev.cur) == 0 && len(dev.prev) == 0
		dev.mu.Unlock()
		if empty {
			delete(d.m, k)
		}
	}
}
