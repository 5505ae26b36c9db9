// Package promtext scrapes a Prometheus text-format /metrics endpoint and
// sums its samples by name and label, which is all the harness needs to
// follow samples/s through each stage from outside the processes.
package promtext

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Sample is one line of the exposition: a metric name, its labels and value.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Metrics is one scrape. The zero value is an empty scrape.
type Metrics struct {
	Samples []Sample
}

// Sum adds every sample named name whose labels include all of match
// (name=value pairs). It returns NaN when no sample matches, so a metric the
// process does not expose stays distinguishable from zero.
func (m Metrics) Sum(name string, match ...string) float64 {
	sum, found := 0.0, false
	for _, s := range m.Samples {
		if s.Name != name || !matches(s.Labels, match) {
			continue
		}
		sum += s.Value
		found = true
	}
	if !found {
		return math.NaN()
	}
	return sum
}

// By sums name per value of label, over samples that include match.
func (m Metrics) By(name, label string, match ...string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range m.Samples {
		if s.Name != name || !matches(s.Labels, match) {
			continue
		}
		out[s.Labels[label]] += s.Value
	}
	return out
}

func matches(ls map[string]string, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		if ls[match[i]] != match[i+1] {
			return false
		}
	}
	return true
}

var client = &http.Client{Timeout: 5 * time.Second}

// Scrape GETs url and parses the text exposition.
func Scrape(ctx context.Context, url string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Metrics{}, fmt.Errorf("build scrape request %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return Metrics{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return Metrics{}, fmt.Errorf("scrape %s: status %d", url, resp.StatusCode)
	}
	return Parse(resp.Body)
}

// Parse reads the Prometheus text format, skipping comments and lines it
// does not understand.
func Parse(r io.Reader) (Metrics, error) {
	var m Metrics
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if s, ok := parseLine(line); ok {
			m.Samples = append(m.Samples, s)
		}
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("read exposition: %w", err)
	}
	return m, nil
}

func parseLine(line string) (Sample, bool) {
	s := Sample{}
	rest := ""
	if i := strings.IndexByte(line, '{'); i >= 0 {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return s, false
		}
		s.Name = line[:i]
		s.Labels = parseLabels(line[i+1 : j])
		rest = line[j+1:]
	} else {
		f := strings.Fields(line)
		if len(f) < 2 {
			return s, false
		}
		s.Name, rest = f[0], strings.Join(f[1:], " ")
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return s, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return s, false
	}
	s.Value = v
	return s, true
}

func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for len(s) > 0 {
		s = strings.TrimLeft(s, " ,")
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return out
		}
		name := strings.TrimSpace(s[:eq])
		var b strings.Builder
		i := eq + 2
		for ; i < len(s); i++ {
			c := s[i]
			if c == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					b.WriteByte('\n')
				default:
					b.WriteByte(s[i])
				}
				continue
			}
			if c == '"' {
				break
			}
			b.WriteByte(c)
		}
		out[name] = b.String()
		if i >= len(s) {
			return out
		}
		s = s[i+1:]
	}
	return out
}
