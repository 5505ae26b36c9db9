package uplink

import "sort"

// span is the half-open index range [lo, hi).
type span struct{ lo, hi uint64 }

// spans is a set of outbox indices kept as sorted, disjoint, non-adjacent
// ranges, so that a million acked live batches beyond one missing backlog
// batch cost one element. It is not safe for concurrent use.
type spans []span

// add puts [lo, hi) into the set.
func (s *spans) add(lo, hi uint64) {
	if lo >= hi {
		return
	}
	v := *s
	i := sort.Search(len(v), func(i int) bool { return v[i].hi >= lo })
	j := sort.Search(len(v), func(i int) bool { return v[i].lo > hi })
	if i < j {
		lo = min(lo, v[i].lo)
		hi = max(hi, v[j-1].hi)
	}
	v = append(v[:i], append([]span{{lo, hi}}, v[j:]...)...)
	*s = v
}

// remove takes [lo, hi) out of the set.
func (s *spans) remove(lo, hi uint64) {
	if lo >= hi {
		return
	}
	v := *s
	i := sort.Search(len(v), func(i int) bool { return v[i].hi > lo })
	j := sort.Search(len(v), func(i int) bool { return v[i].lo >= hi })
	if i >= j {
		return
	}
	var keep []span
	if v[i].lo < lo {
		keep = append(keep, span{v[i].lo, lo})
	}
	if v[j-1].hi > hi {
		keep = append(keep, span{hi, v[j-1].hi})
	}
	v = append(v[:i], append(keep, v[j:]...)...)
	*s = v
}

// first returns the lowest index in the set.
func (s spans) first() (uint64, bool) {
	if len(s) == 0 {
		return 0, false
	}
	return s[0].lo, true
}

// contains reports whether x is in the set.
func (s spans) contains(x uint64) bool {
	i := sort.Search(len(s), func(i int) bool { return s[i].hi > x })
	return i < len(s) && s[i].lo <= x
}

// count is the number of indices in the set.
func (s spans) count() uint64 {
	var n uint64
	for _, r := range s {
		n += r.hi - r.lo
	}
	return n
}

// takePrefix returns the end of the run of indices in the set that starts
// at or below base (base itself if there is none), and removes that run and
// everything below it.
func (s *spans) takePrefix(base uint64) uint64 {
	v := *s
	i := 0
	for i < len(v) && v[i].lo <= base {
		base = max(base, v[i].hi)
		i++
	}
	*s = append(v[:0], v[i:]...)
	return base
}
