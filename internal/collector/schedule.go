package collector

import (
	"hash/fnv"
	"time"
)

// Offset is the device's stable phase within interval: an FNV-1a hash of
// the device id, so the tills of a store spread their sends over the
// interval instead of all sending on the wall-clock boundary.
func Offset(device string, interval time.Duration) time.Duration {
	if interval <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(device))
	return time.Duration(h.Sum64() % uint64(interval))
}

// Next is the first tick strictly after now: a multiple of interval since
// the Unix epoch, plus offset.
func Next(now time.Time, interval, offset time.Duration) time.Time {
	ns := now.UnixNano()
	t := time.Unix(0, ns-ns%int64(interval)).Add(offset)
	for !t.After(now) {
		t = t.Add(interval)
	}
	return t
}
