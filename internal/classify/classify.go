// Package classify assigns every series a priority class ([wire.Class]) by
// rules on its labels, so that payment and authentication series travel in
// the critical class and bulky, low-value series in bulk.
//
// A rules file holds one rule per line: a class name, then one or more
// label matchers in Prometheus selector syntax, comma-separated, optionally
// inside braces. `#` starts a comment; blank lines are ignored:
//
//	# class    matchers (all must hold)
//	critical   container=~"payment.*|auth.*"
//	bulk       {__name__=~"container_fs_.*", container!="log-shipper"}
//
// Operators are =, !=, =~ and !~. Values are double-quoted (Go escapes) or
// back-quoted. Regular expressions are anchored at both ends, as in
// Prometheus, and a missing label matches as the empty string. Rules are
// tried in file order and the first that matches wins; a series no rule
// matches is [wire.ClassNormal].
package classify

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"tillpipe/internal/wire"
)

// DefaultClass is the class of a series no rule matches.
const DefaultClass = wire.ClassNormal

// DefaultRules are the rules used when no rules file is given. They are the
// contents of deployments/rules/storerelay.rules (a test keeps the two equal).
const DefaultRules = `# storerelay priority rules: one rule per line, "<class> <matchers>".
# The first rule that matches a series wins; a series no rule matches is normal.
# Matchers use Prometheus selector syntax; regular expressions are anchored.

# Payment and authentication services must never be starved by bulk data.
critical container=~"payment.*|auth.*|card-terminal.*"

# High-volume detail nobody pages on: per-CPU and per-disk node counters,
# container file-system I/O and throttling.
bulk __name__=~"node_cpu_seconds_total|node_disk_.*|node_network_.*|container_fs_.*|container_cpu_cfs_.*"

# Everything else is normal.
`

// ErrSyntax is wrapped by every [ParseError].
var ErrSyntax = errors.New("rules syntax error")

// ParseError names the line of a rules file that does not parse.
type ParseError struct {
	Line int
	Text string
	Err  error
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("rules line %d %q: %v", e.Line, e.Text, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

// Op is a matcher operator.
type Op uint8

// The matcher operators, as in Prometheus.
const (
	OpEqual Op = iota
	OpNotEqual
	OpRegexp
	OpNotRegexp
)

var opNames = [...]string{OpEqual: "=", OpNotEqual: "!=", OpRegexp: "=~", OpNotRegexp: "!~"}

func (o Op) String() string { return opNames[o] }

// Matcher is one label condition of a rule.
type Matcher struct {
	Name  string
	Op    Op
	Value string
	re    *regexp.Regexp // OpRegexp, OpNotRegexp: ^(?:Value)$
}

func (m *Matcher) matches(labels []prompb.Label) bool {
	v := ""
	for i := range labels {
		if labels[i].Name == m.Name {
			v = labels[i].Value
			break
		}
	}
	switch m.Op {
	case OpEqual:
		return v == m.Value
	case OpNotEqual:
		return v != m.Value
	case OpRegexp:
		return m.re.MatchString(v)
	default:
		return !m.re.MatchString(v)
	}
}

// Rule is a class and the matchers that must all hold for it.
type Rule struct {
	Class    wire.Class
	Matchers []Matcher
}

// Rules is a compiled rules file. It is immutable and safe for concurrent use.
type Rules struct {
	rules []Rule
}

// Default returns the compiled [DefaultRules].
func Default() *Rules {
	r, err := Parse(strings.NewReader(DefaultRules))
	if err != nil {
		panic(fmt.Sprintf("BUG: default rules: %v", err))
	}
	return r
}

// Load reads and compiles the rules file at path.
func Load(path string) (*Rules, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open rules file: %w", err)
	}
	defer f.Close()
	r, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("load rules file %s: %w", path, err)
	}
	return r, nil
}

// Parse compiles rules from r; a line that does not parse is a *[ParseError].
func Parse(r io.Reader) (*Rules, error) {
	var rs Rules
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		rule, err := parseRule(line)
		if err != nil {
			return nil, &ParseError{Line: n, Text: line, Err: err}
		}
		rs.rules = append(rs.rules, rule)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	return &rs, nil
}

// Rules returns the compiled rules in match order.
func (r *Rules) Rules() []Rule { return r.rules }

// Classify returns the class of the first rule whose matchers all hold for
// labels, or [DefaultClass]. It does not allocate; callers on a hot path
// cache the result by label-set hash.
func (r *Rules) Classify(labels []prompb.Label) wire.Class {
next:
	for i := range r.rules {
		for j := range r.rules[i].Matchers {
			if !r.rules[i].Matchers[j].matches(labels) {
				continue next
			}
		}
		return r.rules[i].Class
	}
	return DefaultClass
}

func parseRule(line string) (Rule, error) {
	i := strings.IndexAny(line, " \t")
	if i < 0 {
		return Rule{}, fmt.Errorf("want \"<class> <matchers>\": %w", ErrSyntax)
	}
	class, err := wire.ParseClass(line[:i])
	if err != nil {
		return Rule{}, fmt.Errorf("class %q (want critical, normal or bulk): %w", line[:i], ErrSyntax)
	}
	s := strings.TrimSpace(line[i:])
	if strings.HasPrefix(s, "{") {
		if !strings.HasSuffix(s, "}") {
			return Rule{}, fmt.Errorf("unclosed brace: %w", ErrSyntax)
		}
		s = strings.TrimSpace(s[1 : len(s)-1])
	}
	rule := Rule{Class: class}
	for s != "" {
		var m Matcher
		m, s, err = parseMatcher(s)
		if err != nil {
			return Rule{}, err
		}
		rule.Matchers = append(rule.Matchers, m)
		s = strings.TrimSpace(s)
		if s == "" {
			break
		}
		if s[0] != ',' {
			return Rule{}, fmt.Errorf("want ',' between matchers at %q: %w", s, ErrSyntax)
		}
		s = strings.TrimSpace(s[1:])
		if s == "" {
			return Rule{}, fmt.Errorf("trailing ',': %w", ErrSyntax)
		}
	}
	if len(rule.Matchers) == 0 {
		return Rule{}, fmt.Errorf("rule without matchers: %w", ErrSyntax)
	}
	return rule, nil
}

// parseMatcher parses `name op "value"` at the start of s and returns the rest.
func parseMatcher(s string) (Matcher, string, error) {
	n := 0
	for n < len(s) && isNameByte(s[n], n == 0) {
		n++
	}
	if n == 0 {
		return Matcher{}, s, fmt.Errorf("want a label name at %q: %w", s, ErrSyntax)
	}
	m := Matcher{Name: s[:n]}
	s = strings.TrimSpace(s[n:])
	switch {
	case strings.HasPrefix(s, "=~"):
		m.Op, s = OpRegexp, s[2:]
	case strings.HasPrefix(s, "!~"):
		m.Op, s = OpNotRegexp, s[2:]
	case strings.HasPrefix(s, "!="):
		m.Op, s = OpNotEqual, s[2:]
	case strings.HasPrefix(s, "="):
		m.Op, s = OpEqual, s[1:]
	default:
		return Matcher{}, s, fmt.Errorf("want =, !=, =~ or !~ after %s: %w", m.Name, ErrSyntax)
	}
	s = strings.TrimSpace(s)
	q, err := strconv.QuotedPrefix(s)
	if err != nil || q[0] == '\'' {
		return Matcher{}, s, fmt.Errorf("want a double- or back-quoted value for %s at %q: %w", m.Name, s, ErrSyntax)
	}
	m.Value, _ = strconv.Unquote(q)
	if m.Op == OpRegexp || m.Op == OpNotRegexp {
		re, err := regexp.Compile("^(?:" + m.Value + ")$")
		if err != nil {
			return Matcher{}, s, fmt.Errorf("regexp for %s: %v: %w", m.Name, err, ErrSyntax)
		}
		m.re = re
	}
	return m, s[len(q):], nil
}

func isNameByte(c byte, first bool) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
}
