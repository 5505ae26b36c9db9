package collector

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

// TestAgent_CyclesOnAlignedTicks runs the loop on synctest's fake clock:
// every cycle lands on a multiple of the interval plus the device offset,
// and each request decodes to the same series set.
func TestAgent_CyclesOnAlignedTicks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newFixtureCollector(t, "testdata/cgroup/v2-docker", "")
		var at []time.Time
		var sizes []int
		a, err := NewAgent(c, func(body []byte, n int) {
			at = append(at, time.Now())
			var u prompb.WriteRequestUnmarshaler
			wr, err := u.UnmarshalProtobuf(body)
			if err != nil || len(wr.Timeseries) != n {
				t.Errorf("request: %v, %d series, want %d", err, len(wr.Timeseries), n)
			}
			sizes = append(sizes, n)
		}, AgentOptions{Device: "till-042"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- a.Run(ctx) }()
		time.Sleep(time.Minute) // fake time
		synctest.Wait()
		if err := a.Healthy(); err != nil {
			t.Errorf("healthy: %v", err)
		}
		cancel()
		<-done
		if len(at) != 4 {
			t.Fatalf("%d cycles in a minute, want 4", len(at))
		}
		off := Offset("till-042", 15*time.Second)
		for i, ts := range at {
			if got := time.Duration(ts.UnixNano()) % (15 * time.Second); got != off {
				t.Errorf("cycle %d at %s: %s into the interval, want %s", i, ts, got, off)
			}
			if sizes[i] != sizes[0] {
				t.Errorf("cycle %d: %d series, first had %d", i, sizes[i], sizes[0])
			}
		}
	})
}
