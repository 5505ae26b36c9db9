package fleetsim

import (
	"math"
	"reflect"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

const step = 15_000 // ms

func TestTill_SameSeedSameSeries(t *testing.T) {
	a, b := NewTill("s0001", "till-01", 42), NewTill("s0001", "till-01", 42)
	for i := range 20 {
		ts := int64(1_700_000_000_000 + i*step)
		if got, want := a.AppendSeries(nil, ts), b.AppendSeries(nil, ts); !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d: same seed, different series", i)
		}
	}
	c := NewTill("s0001", "till-01", 43)
	if reflect.DeepEqual(NewTill("s0001", "till-01", 42).AppendSeries(nil, 0), c.AppendSeries(nil, 0)) {
		t.Fatal("different seeds, same values")
	}
}

func TestTill_SeriesShape(t *testing.T) {
	till := NewTill("s0001", "till-01", 1)
	tss := till.AppendSeries(nil, 1_700_000_000_000)
	if len(tss) != till.SeriesCount() {
		t.Fatalf("AppendSeries appended %d series, SeriesCount %d", len(tss), till.SeriesCount())
	}
	if n := len(tss); n < 380 || n > 420 {
		t.Fatalf("%d series, want about 400", n)
	}
	seen := map[string]bool{}
	for _, ts := range tss {
		key := prompb.LabelsToString(ts.Labels)
		if seen[key] {
			t.Fatalf("duplicate series %s", key)
		}
		seen[key] = true
		if ts.Labels[0].Name != "__name__" {
			t.Fatalf("series %s: first label %q, want __name__", key, ts.Labels[0].Name)
		}
		names := map[string]bool{}
		for i, l := range ts.Labels {
			if names[l.Name] {
				t.Fatalf("series %s: label %q twice", key, l.Name)
			}
			names[l.Name] = true
			if i > 0 && ts.Labels[i-1].Name >= l.Name {
				t.Fatalf("series %s: labels not sorted", key)
			}
		}
		if !names["store"] || !names["device"] {
			t.Fatalf("series %s: no store or device label", key)
		}
		if len(ts.Samples) != 1 || math.IsNaN(ts.Samples[0].Value) || ts.Samples[0].Value < 0 {
			t.Fatalf("series %s: samples %v", key, ts.Samples)
		}
	}
}

// TestTill_CountersDecreaseOnlyOnRestart runs a till with frequent restarts
// and checks every _total series: it never decreases, unless the restart
// counter of its container went up in the same step.
func TestTill_CountersDecreaseOnlyOnRestart(t *testing.T) {
	till := NewTill("s0001", "till-01", 7)
	till.RestartProbability = 0.01
	prev := till.AppendSeries(nil, 0)
	restartIdx := map[string]int{} // container -> index of its till_container_restarts_total
	for i, ts := range prev {
		if name(ts) == "till_container_restarts_total" {
			restartIdx[label(ts, "container")] = i
		}
	}
	resets, restarts := 0, 0
	for step := 1; step <= 500; step++ {
		cur := till.AppendSeries(nil, int64(step)*15_000)
		for i := range cur {
			c, p := cur[i].Samples[0].Value, prev[i].Samples[0].Value
			if !isCounter(cur[i]) || c >= p {
				continue
			}
			container := label(cur[i], "container")
			ri, ok := restartIdx[container]
			if !ok || cur[ri].Samples[0].Value <= prev[ri].Samples[0].Value {
				t.Fatalf("step %d: %s fell from %g to %g without a restart", step, prompb.LabelsToString(cur[i].Labels), p, c)
			}
			resets++
		}
		for _, ri := range restartIdx {
			if cur[ri].Samples[0].Value < prev[ri].Samples[0].Value {
				t.Fatalf("step %d: restart counter decreased", step)
			} else if cur[ri].Samples[0].Value > prev[ri].Samples[0].Value {
				restarts++
			}
		}
		prev = cur
	}
	if restarts == 0 || resets == 0 {
		t.Fatalf("%d restarts and %d counter resets in 500 steps: the test proves nothing", restarts, resets)
	}
}

func isCounter(ts prompb.TimeSeries) bool {
	n := name(ts)
	return len(n) > 6 && n[len(n)-6:] == "_total"
}

func name(ts prompb.TimeSeries) string { return label(ts, "__name__") }

func label(ts prompb.TimeSeries, name string) string {
	for _, l := range ts.Labels {
		if l.Name == name {
			return l.Value
		}
	}
	return ""
}
