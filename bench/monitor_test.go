package main

import (
	"math"
	"testing"
)

func TestCounter_AccumulatesAcrossResets(t *testing.T) {
	cases := []struct {
		name string
		obs  []float64
		want float64
	}{
		{"monotonic", []float64{1, 5, 9}, 9},
		{"process_restarted_counter_reset", []float64{10, 20, 3, 8}, 28},
		{"scrape_failed_keeps_last", []float64{4, math.NaN(), 6}, 6},
		{"two_resets", []float64{5, 1, 2, 0, 7}, 14},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var ct counter
			var got float64
			for _, v := range c.obs {
				got = ct.observe(v)
			}
			if got != c.want {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}
