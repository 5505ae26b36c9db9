package classify

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"tillpipe/internal/fleetsim"
	"tillpipe/internal/wire"
)

func lbls(kv ...string) []prompb.Label {
	var ls []prompb.Label
	for i := 0; i+1 < len(kv); i += 2 {
		ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return ls
}

func TestClassify(t *testing.T) {
	rules := `
# comment
critical container=~"payment.*|auth.*"
critical {job="pos", instance!=""}
critical __name__=~"till_(a|b)"
bulk     __name__=~"container_fs_.*", container!~"log-.*"
normal   __name__="up"
bulk     __name__=~` + "`node_.*`" + `
`
	r, err := Parse(strings.NewReader(rules))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		labels []prompb.Label
		want   wire.Class
	}{
		{"regexp_alternation_matches", lbls("__name__", "x", "container", "auth-agent"), wire.ClassCritical},
		{"regexp_is_anchored_at_start", lbls("__name__", "x", "container", "xpayment"), wire.ClassNormal},
		{"regexp_is_anchored_at_end", lbls("__name__", "till_ax"), wire.ClassNormal},
		{"all_matchers_must_hold", lbls("job", "pos"), wire.ClassNormal},
		{"braced_rule_matches", lbls("job", "pos", "instance", "till-1"), wire.ClassCritical},
		{"negative_regexp_excludes", lbls("__name__", "container_fs_reads_bytes_total", "container", "log-shipper"), wire.ClassNormal},
		{"missing_label_matches_negative_regexp", lbls("__name__", "container_fs_reads_bytes_total"), wire.ClassBulk},
		{"first_match_wins_over_later_bulk", lbls("__name__", "node_load1", "container", "payment-gateway"), wire.ClassCritical},
		{"explicit_normal_stops_matching", lbls("__name__", "up"), wire.ClassNormal},
		{"backquoted_value", lbls("__name__", "node_load1"), wire.ClassBulk},
		{"no_rule_matches_is_normal", lbls("__name__", "foo"), wire.ClassNormal},
		{"no_labels_is_normal", nil, wire.ClassNormal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := r.Classify(tc.labels); got != tc.want {
				t.Errorf("Classify(%v) = %v, want %v", tc.labels, got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, rules string
		line        int
	}{
		{"unknown_class", "urgent container=\"x\"", 1},
		{"class_without_matchers", "\n\ncritical", 3},
		{"missing_operator", "critical container", 1},
		{"unquoted_value", "critical container=payment", 1},
		{"single_quoted_value", "critical container='payment'", 1},
		{"bad_regexp", "critical container=~\"(\"", 1},
		{"missing_comma", "critical a=\"1\" b=\"2\"", 1},
		{"trailing_comma", "critical a=\"1\",", 1},
		{"unclosed_brace", "critical {a=\"1\"", 1},
		{"empty_braces", "critical {}", 1},
		{"label_name_starts_with_digit", "critical 1a=\"x\"", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.rules))
			var pe *ParseError
			if !errors.As(err, &pe) || !errors.Is(err, ErrSyntax) {
				t.Fatalf("Parse = %v, want a *ParseError wrapping ErrSyntax", err)
			}
			if pe.Line != tc.line {
				t.Errorf("line %d, want %d (%v)", pe.Line, tc.line, err)
			}
		})
	}
}

// TestDefaultRulesFileMatchesBuiltIn keeps deployments/rules/storerelay.rules
// and DefaultRules equal, and checks what the defaults do to a simulated till.
func TestDefaultRulesFileMatchesBuiltIn(t *testing.T) {
	path := filepath.Join("..", "..", "deployments", "rules", "storerelay.rules")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != DefaultRules {
		t.Fatalf("%s differs from classify.DefaultRules; keep them equal", path)
	}
	r, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[wire.Class]int{}
	for _, ts := range fleetsim.NewTill("s1", "till-1", 1).AppendSeries(nil, 1e12) {
		counts[r.Classify(ts.Labels)]++
	}
	for _, c := range wire.Classes {
		if counts[c] == 0 {
			t.Errorf("the default rules put no series of a simulated till in %v: %v", c, counts)
		}
	}
	t.Logf("default rules on a simulated till: %v", counts)
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load = %v, want ErrNotExist", err)
	}
}

func BenchmarkClassify(b *testing.B) {
	series := fleetsim.NewTill("s1", "till-1", 1).AppendSeries(nil, 1e12)
	r := Default()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for i := range series {
			r.Classify(series[i].Labels)
		}
		n += len(series)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "series/s")
}
