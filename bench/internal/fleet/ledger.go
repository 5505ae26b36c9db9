package fleet

import (
	"sort"
	"sync"
	"time"
)

// Record is what the simulator knows about one request of one till to one
// target: the samples' timestamp, when it was first sent, whether the
// target acknowledged it with 2xx and whether an attempt failed in a way
// that may still have stored it (a broken connection), which makes a
// duplicate from the retry expected rather than a fault.
type Record struct {
	TS        int64     // sample timestamp, ms
	Sent      time.Time // first attempt
	Acked     bool
	Rejected  bool // a 4xx: must not arrive
	Ambiguous bool // an attempt failed after the request may have been stored
	Attempts  int
}

// Ledger holds the records of one till for one target. It is safe for
// concurrent use.
type Ledger struct {
	mu   sync.Mutex
	recs []Record // in timestamp order (one till sends in order)
	idx  map[int64]int
}

func newLedger() *Ledger { return &Ledger{idx: map[int64]int{}} }

func (l *Ledger) add(r Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i, ok := l.idx[r.TS]; ok {
		l.recs[i] = r
		return
	}
	l.idx[r.TS] = len(l.recs)
	l.recs = append(l.recs, r)
}

// Records returns a copy of the records, in timestamp order.
func (l *Ledger) Records() []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]Record(nil), l.recs...)
	sort.Slice(out, func(i, j int) bool { return out[i].TS < out[j].TS })
	return out
}

// Lookup returns the record with timestamp ts.
func (l *Ledger) Lookup(ts int64) (Record, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, ok := l.idx[ts]
	if !ok {
		return Record{}, false
	}
	return l.recs[i], true
}

// AckedBetween returns the acknowledged records with lo < TS <= hi.
func (l *Ledger) AckedBetween(lo, hi int64) []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Record
	for i := len(l.recs) - 1; i >= 0; i-- {
		r := l.recs[i]
		if r.TS <= lo {
			break
		}
		if r.TS <= hi && r.Acked {
			out = append(out, r)
		}
	}
	return out
}
