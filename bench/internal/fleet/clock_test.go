package fleet

import (
	"testing"
	"time"
)

func TestClock_RealAtFollowsAccel(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name  string
		accel float64
		sim   time.Duration // after start
		want  time.Duration // real, after the clock's anchor
	}{
		{"real_time", 1, 15 * time.Second, 15 * time.Second},
		{"accelerated_1440x_day_is_a_minute", 1440, 24 * time.Hour, time.Minute},
		{"zero_accel_means_real_time", 0, time.Second, time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clk := NewClock(start, c.accel)
			rt, _ := clk.RealAt(start.Add(c.sim))
			if got := rt.Sub(clk.anchorReal); got != c.want {
				t.Fatalf("real offset %s, want %s", got, c.want)
			}
		})
	}
}

func TestClock_SetAccelKeepsTimeContinuousAndWakesWaiters(t *testing.T) {
	clk := NewClock(time.Now(), 100)
	_, changed := clk.RealAt(time.Now())
	before := clk.Now()
	clk.SetAccel(1)
	select {
	case <-changed:
	default:
		t.Fatal("SetAccel did not close the changed channel")
	}
	after := clk.Now()
	if after.Before(before) {
		t.Fatalf("simulated time went back: %s then %s", before, after)
	}
	if clk.Accel() != 1 {
		t.Fatalf("accel %g, want 1", clk.Accel())
	}
}
