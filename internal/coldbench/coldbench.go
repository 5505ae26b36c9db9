// Package coldbench helps benchmarks measure code as a till runs it, once
// every 15 s: with its caches cold, and by the CPU time the process spent
// rather than the wall clock.
package coldbench

import (
	"syscall"
	"testing"
	"time"
)

// Evictor is a buffer larger than the L2 and what the TLBs map: writing it
// evicts the data and translations of the code measured next. It stands
// in for the 15 s of other work between a till's cycles, whose effect on
// the caches is not measured here; the L3 of a large server may keep some.
type Evictor []byte

// NewEvictor returns a 96 MiB Evictor.
func NewEvictor() Evictor { return make(Evictor, 96<<20) }

// Evict writes one byte of every cache line of e.
func (e Evictor) Evict() {
	for j := 0; j < len(e); j += 64 {
		e[j]++
	}
}

// ProcessCPU returns the CPU time, user and system, of the process so far
// (getrusage), and fails tb if it cannot be read.
func ProcessCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
