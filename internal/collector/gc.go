package collector

import (
	"runtime/debug"
	"runtime/metrics"
)

// gcPacer collects garbage after a cycle, once the bytes allocated since the
// last collection passed a budget, in place of the runtime's pacing (the
// caller turns that off: GOGC=off).
//
// The runtime collects when the heap grows by GOGC percent, and at least
// every two minutes. A collector allocates a few KB a cycle, so with GOGC it
// collects every two minutes: eight 15 s cycles, each paying an eighth of a
// collection of a cold heap (0.14 ms a cycle measured, a tenth of its CPU).
// With a 512 KiB budget, at the 4 KB a cycle measured with the binary
// benchmark (go_memstats_alloc_bytes_total), it collects about every half
// hour. debug.FreeOSMemory returns the freed pages at once, so the resident
// memory stays as low as with the runtime's pacing (whose scavenger, with
// GOGC off, would keep them). The count is the runtime's
// /gc/heap/allocs:bytes, which takes in small allocations a span at a
// time: the budget holds to a few KB.
type gcPacer struct {
	budget uint64
	last   uint64 // allocated bytes at the last collection
	s      [1]metrics.Sample
}

func newGCPacer(budget int64) *gcPacer {
	if budget <= 0 {
		return nil
	}
	p := &gcPacer{budget: uint64(budget)}
	p.s[0].Name = "/gc/heap/allocs:bytes"
	p.last = p.allocated()
	return p
}

func (p *gcPacer) allocated() uint64 {
	metrics.Read(p.s[:])
	return p.s[0].Value.Uint64()
}

// afterCycle collects when the budget is spent and reports whether it did.
func (p *gcPacer) afterCycle() bool {
	if p == nil || p.allocated()-p.last < p.budget {
		return false
	}
	debug.FreeOSMemory()
	p.last = p.allocated()
	return true
}
