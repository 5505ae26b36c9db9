package intake

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"tillpipe/internal/classify"
	"tillpipe/internal/wire"
)

// seriesID identifies a series: two independent 64-bit hashes of its
// labels without store, as [appendLabel] encodes them in the client's
// order. h is xxhash and picks the map slot; v is [maphash] with a seed
// drawn per process and tells apart series whose h collides. Clients see
// neither, so they cannot aim at a collision; by chance two of a device's
// n series share both with probability about n²/2¹²⁹. A collision could
// only give a series the other's class (and skip its validation); the
// labels written are always the request's own.
type seriesID struct{ h, v uint64 }

// devices tracks, per device, the distinct series seen in a sliding window
// and caches each series' class. Each device keeps two generations: series
// seen in the current half-window and in the previous one; a lookup that
// finds a series in the previous generation moves it to the current one,
// and every half-window the current generation becomes the previous one.
// The series a device has are therefore those seen in the last half to
// whole window.
//
// The same maps are the known-series cache: a series is keyed by the hash
// of its labels as encoded on the wire, so a client that encodes them as the
// relay does (Prometheus and vmagent do) is recognized from the raw bytes,
// without parsing, validating or re-encoding (see [Handler.peek]). The cache
// is thus bounded by the series limit and ages with the window.
//
// A map is open-addressed on h: a series lives at the first of h, h+1, ...
// that is free or holds it. An entry of prev whose series moved to cur is
// left as a tombstone (class 0) so that later series of the chain stay
// reachable; prevLive counts the others.
//
// devices is safe for concurrent use: the device map under mu, each device
// under its own mutex.
type devices struct {
	limit int           // max series per device; 0: unlimited
	half  time.Duration // generation length
	seed  maphash.Seed
	// hMask is applied to seriesID.h: all ones, or a few bits in tests
	// to force collisions.
	hMask uint64

	mu sync.RWMutex
	m  map[string]*device

	active    atomic.Int64 // series tracked over all devices
	lastSweep atomic.Int64 // unix nanos
}

type device struct {
	mu        sync.Mutex
	cur, prev map[uint64]entry
	prevLive  int   // entries of prev that are not tombstones
	rotated   int64 // unix nanos the current generation began
	// epoch changes whenever a series may leave cur: on rotation, and when
	// the device is dropped from the map (gone).
	epoch uint64
	gone  bool
}

type entry struct {
	v     uint64
	class wire.Class // 0 in prev: moved to cur
}

// find returns series id's slot in m and whether it is there; if not, the
// slot is the free one where it would go.
func find(m map[uint64]entry, id seriesID) (slot uint64, class wire.Class, ok bool) {
	for slot = id.h; ; slot++ {
		e, used := m[slot]
		if !used {
			return slot, 0, false
		}
		if e.v == id.v && e.class != 0 {
			return slot, e.class, true
		}
	}
}

func newDevices(limit int, window time.Duration, now time.Time) *devices {
	d := &devices{limit: limit, half: window / 2, m: make(map[string]*device), seed: maphash.MakeSeed(), hMask: ^uint64(0)}
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
		dev = &device{cur: make(map[uint64]entry), prev: map[uint64]entry{}, rotated: now}
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
	dev.epoch++
	d.active.Add(-int64(dev.prevLive))
	if now-dev.rotated >= 2*int64(d.half) { // idle for a whole window
		d.active.Add(-int64(len(dev.cur)))
		clear(dev.cur)
	}
	dev.prev, dev.cur = dev.cur, make(map[uint64]entry, len(dev.cur))
	dev.prevLive = len(dev.prev)
	dev.rotated = now
}

// Where [devices.peek] found a series.
const (
	hitNone uint8 = iota
	hitCur
	hitPrev
)

// peek returns series id's class and the generation it is in, changing
// nothing. Caller holds dev.mu.
func (d *devices) peek(dev *device, id seriesID) (wire.Class, uint8) {
	if _, c, ok := find(dev.cur, id); ok {
		return c, hitCur
	}
	if _, c, ok := find(dev.prev, id); ok {
		return c, hitPrev
	}
	return 0, hitNone
}

// lookup returns the class of series id of dev and whether it may be
// accepted: known series always are; a new one only while the device is
// under its limit, and then it is classified once and cached. class, if
// not 0, is the series' class, known from [devices.peek]; else labels are
// classified. Caller holds dev.mu.
func (d *devices) lookup(dev *device, id seriesID, rules *classify.Rules, class wire.Class, labels []prompb.Label) (wire.Class, bool) {
	free, c, ok := find(dev.cur, id)
	if ok {
		return c, true
	}
	if slot, c, ok := find(dev.prev, id); ok {
		dev.prev[slot] = entry{v: id.v} // tombstone
		dev.prevLive--
		dev.cur[free] = entry{v: id.v, class: c}
		return c, true
	}
	if d.limit > 0 && len(dev.cur)+dev.prevLive >= d.limit {
		return 0, false
	}
	c = class
	if c == 0 {
		c = rules.Classify(labels)
	}
	dev.cur[free] = entry{v: id.v, class: c}
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
		if len(dev.cur) == 0 && dev.prevLive == 0 {
			dev.gone = true
			dev.epoch++
			delete(d.m, k)
		}
		dev.mu.Unlock()
	}
}
