package promtext

import (
	"math"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	const text = `# HELP x y
# TYPE tillpipe_relay_samples_received_total counter
tillpipe_relay_samples_received_total{class="critical"} 10
tillpipe_relay_samples_received_total{class="bulk",x="a\"b,c"} 5.5e1
vmagent_rows_inserted_total{type="promremotewrite"} 7 1700000000000
go_goroutines 12
garbage line here
`
	m, err := Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		got  float64
		want float64
	}{
		{"sum_over_labels", m.Sum("tillpipe_relay_samples_received_total"), 65},
		{"sum_matching", m.Sum("tillpipe_relay_samples_received_total", "class", "bulk"), 55},
		{"escaped_label_value", m.Sum("tillpipe_relay_samples_received_total", "x", `a"b,c`), 55},
		{"timestamp_ignored", m.Sum("vmagent_rows_inserted_total", "type", "promremotewrite"), 7},
		{"no_labels", m.Sum("go_goroutines"), 12},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	if v := m.Sum("absent_metric"); !math.IsNaN(v) {
		t.Errorf("absent_metric: got %v, want NaN", v)
	}
	if by := m.By("tillpipe_relay_samples_received_total", "class"); by["critical"] != 10 || by["bulk"] != 55 {
		t.Errorf("By: %v", by)
	}
}
