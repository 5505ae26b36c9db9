package fleet

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"tillpipe/bench/internal/vmapi"
)

// Completeness compares what one target acknowledged with what the backend
// holds, sample by sample. A sample is a (series, timestamp) pair.
type Completeness struct {
	Target string `json:"target"`
	Match  string `json:"match"`
	// Expected is the acknowledged samples: each must be in the backend once.
	Expected int64 `json:"expected"`
	// Found is every sample the export returned for the run's stores.
	Found int64 `json:"found"`
	// Lost is acknowledged samples missing from the backend.
	Lost int64 `json:"lost"`
	// Doubled is extra copies of acknowledged samples whose requests were
	// acknowledged without a broken attempt: a fault.
	Doubled int64 `json:"doubled"`
	// DoubledAfterRetry is extra copies of samples whose request had an
	// attempt cut mid-flight (the target killed): remote-write is
	// at-least-once there, so these are reported but not a fault.
	DoubledAfterRetry int64 `json:"doubled_after_retry"`
	// UnackedPresent is samples sent but never acknowledged (the harness
	// stopped, or the target died before answering) that arrived anyway.
	UnackedPresent int64 `json:"unacked_present"`
	// Unexpected is samples no till of this run sent at that timestamp.
	Unexpected int64 `json:"unexpected"`
	// MissingSeries is (till, series) pairs with acknowledged samples that
	// have no series at all in the backend (counted in Lost too).
	MissingSeries int64 `json:"missing_series"`
	// UnknownSeries is exported series of no simulated till.
	UnknownSeries int64 `json:"unknown_series"`
}

// OK reports whether nothing was lost, doubled or invented.
func (c Completeness) OK() bool {
	return c.Lost == 0 && c.Doubled == 0 && c.Unexpected == 0 && c.UnknownSeries == 0
}

// String is a one-line summary.
func (c Completeness) String() string {
	return fmt.Sprintf("%s: expected %d found %d lost %d doubled %d (after retry %d) unacked-present %d unexpected %d",
		c.Target, c.Expected, c.Found, c.Lost, c.Doubled, c.DoubledAfterRetry, c.UnackedPresent, c.Unexpected)
}

// Match is the export selector for target's stores: the relay path lands
// under the store ids, the vmagent path under the tills' own store labels.
func Match(prefix string) string { return fmt.Sprintf(`{store=~"%s.*"}`, prefix) }

// Expected is the number of samples target acknowledged.
func (f *Fleet) Expected(target string) int64 {
	var n int64
	for _, t := range f.tills {
		l := t.ledger[target]
		if l == nil {
			continue
		}
		for _, r := range l.Records() {
			if r.Acked {
				n += int64(f.seriesPerTill)
			}
		}
	}
	return n
}

// WaitArrived polls the backend until it holds at least the acknowledged
// samples of target under prefix, or until timeout; it returns the last count.
func (f *Fleet) WaitArrived(ctx context.Context, vm *vmapi.Client, target, prefix string, timeout time.Duration) (int64, error) {
	want := f.Expected(target)
	window := time.Since(f.opts.Start) + 2*time.Hour
	if d := time.Until(f.LastTimestamp()); d > 0 {
		window += d
	}
	q := fmt.Sprintf(`sum(count_over_time(%s[%ds]))`, Match(prefix), int64(window.Seconds()))
	deadline := time.Now().Add(timeout)
	var got int64
	for {
		_ = vm.Flush(ctx)
		res, err := vm.Query(ctx, q)
		if err == nil {
			got = 0
			if len(res) > 0 {
				got = int64(res[0].Value)
			}
			if got >= want {
				return got, nil
			}
		}
		if time.Now().After(deadline) {
			return got, fmt.Errorf("backend holds %d of %d %s samples after %s", got, want, target, timeout)
		}
		tm := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			tm.Stop()
			return got, ctx.Err()
		case <-tm.C:
		}
	}
}

// Verify exports target's samples (stores whose backend label starts with
// prefix) and compares them with the ledgers.
func (f *Fleet) Verify(ctx context.Context, vm *vmapi.Client, target, prefix string) (Completeness, error) {
	c := Completeness{Target: target, Match: Match(prefix)}
	type key struct{ store, device string }
	tills := map[key]*till{}
	for _, t := range f.tills {
		if t.ledger[target] == nil {
			continue
		}
		st := t.store.ID
		if target == TargetVMAgent {
			st = t.store.Label
		}
		tills[key{st, t.device}] = t
	}
	acked := map[*till]int64{}
	recs := map[*till]map[int64]Record{}
	for _, t := range tills {
		m := map[int64]Record{}
		for _, r := range t.ledger[target].Records() {
			m[r.TS] = r
			if r.Acked {
				acked[t]++
			}
		}
		recs[t] = m
		c.Expected += acked[t] * int64(f.seriesPerTill)
	}
	// With reduce_mem_usage the export may return one series in several
	// lines (one per stored block): gather them per label set first.
	type series struct {
		t   *till
		tss []int64
	}
	all := map[string]*series{}
	err := vm.Export(ctx, c.Match, func(s vmapi.Series) {
		c.Found += int64(len(s.Timestamps))
		k := labelsKey(s.Metric)
		e := all[k]
		if e == nil {
			e = &series{t: tills[key{s.Metric["store"], s.Metric["device"]}]}
			all[k] = e
		}
		e.tss = append(e.tss, s.Timestamps...)
	})
	seriesSeen := map[*till]int64{}
	counts := map[int64]int{}
	for _, e := range all {
		t := e.t
		if t == nil {
			c.UnknownSeries++
			c.Unexpected += int64(len(e.tss))
			continue
		}
		seriesSeen[t]++
		clear(counts)
		for _, ts := range e.tss {
			counts[ts]++
		}
		m := recs[t]
		for ts, n := range counts {
			r, ok := m[ts]
			switch {
			case !ok:
				c.Unexpected += int64(n)
			case !r.Acked:
				c.UnackedPresent += int64(n)
			case n > 1 && r.Ambiguous:
				c.DoubledAfterRetry += int64(n - 1)
			case n > 1:
				c.Doubled += int64(n - 1)
			}
		}
		for ts, r := range m {
			if r.Acked && counts[ts] == 0 {
				c.Lost++
			}
		}
	}
	if err != nil {
		return c, fmt.Errorf("verify %s: %w", target, err)
	}
	for _, t := range tills {
		if acked[t] == 0 {
			continue
		}
		if missing := int64(f.seriesPerTill) - seriesSeen[t]; missing > 0 {
			c.MissingSeries += missing
			c.Lost += missing * acked[t]
		}
	}
	return c, nil
}

// labelsKey renders a label set in name order.
func labelsKey(m map[string]string) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(m[k])
		b.WriteByte(0)
	}
	return b.String()
}
