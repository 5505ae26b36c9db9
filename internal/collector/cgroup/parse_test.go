package cgroup

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParseUint(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true},
		{"123\n", 123, true},
		{" 42 \n", 42, true},
		{"\t7", 7, true},
		{"9999999999999999999", 9999999999999999999, true}, // 19 digits: the fast path's longest
		{"18446744073709551615", 1<<64 - 1, true},          // 20 digits: the largest
		{"018446744073709551615", 0, false},                // 21 digits
		{"18446744073709551616", 0, false},                 // overflows
		{"99999999999999999999", 0, false},                 // overflows
		{"", 0, false}, {"\n", 0, false}, {"12a", 0, false}, {"-1", 0, false},
		{"+1", 0, false}, {"1 2", 0, false}, {"max\n", 0, false}, {"1\n\n", 1, true},
	} {
		got, ok := parseUint([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseUint(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// memory.stat of a v2 cgroup, its first lines.
const memStat = `anon 1314816
file 8192
kernel 413696
kernel_stack 32768
file_mapped 0
anon_thp 0
inactive_anon 1302528
active_anon 8192
inactive_file 4096
active_file 4096
unparsable here
`

func TestFlatKeyed(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		keys     []string
		want     string // the calls, "key=value" in order
		err      bool
	}{
		{"memory.stat", memStat, []string{"anon", "file", "inactive_file"}, "anon=1314816 file=8192 inactive_file=4096", false},
		{"keys in any order", memStat, []string{"inactive_file", "anon"}, "anon=1314816 inactive_file=4096", false},
		{"a key is not its prefix", memStat, []string{"active", "file_", "anon_"}, "", false},
		{"reads only its keys", memStat, []string{"anon"}, "anon=1314816", false},
		{"stops after as many lines as keys", "a 1\na 3\nb 2\n", []string{"a", "b"}, "a=1 a=3", false},
		{"a key is not a key's end", "total_inactive_file 9\ninactive_file 4\n", []string{"inactive_file"}, "inactive_file=4", false},
		{"missing key reads to the end", "a 1\nb 2\n", []string{"a", "c"}, "a=1", false},
		{"no final newline", "a 1\nb 2", []string{"b"}, "b=2", false},
		{"bad value", "a 1\nb x\n", []string{"b"}, "", true},
		{"key alone", "a\nb 2\n", []string{"a", "b"}, "b=2", false},
		{"empty", "", []string{"a"}, "", false},
		{"empty lines", "\n\na 1\n\n", []string{"a"}, "a=1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := flatKeyedCalls(tc.in, tc.keys)
			var pe *ParseError
			if (err != nil) != tc.err || (err != nil && !errors.As(err, &pe)) {
				t.Fatalf("err %v, want error %v", err, tc.err)
			}
			if !tc.err && got != tc.want {
				t.Errorf("calls %q, want %q", got, tc.want)
			}
		})
	}
}

func flatKeyedCalls(in string, keys []string) (string, error) {
	var calls []string
	err := flatKeyed([]byte(in), "memory.stat", newKeySet(keys...), func(k string, v uint64) {
		calls = append(calls, fmt.Sprintf("%s=%d", k, v))
	})
	return strings.Join(calls, " "), err
}

// FuzzFlatKeyed holds flatKeyed and parseUint to a plain reading of the
// format with packages strings and strconv (seeds in testdata/fuzz).
func FuzzFlatKeyed(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte, keyList string) {
		keys := strings.Split(keyList, ",")
		if strings.ContainsAny(keyList, " \n") {
			t.Skip("keys are names without spaces or newlines") // as every caller's are
		}
		got, err := flatKeyedCalls(string(in), keys)
		want, wantErr := referenceFlatKeyed(string(in), keys)
		if (err != nil) != wantErr || err == nil && got != want {
			t.Fatalf("flatKeyed(%q, %q) = %q, %v; the reference reads %q, error %v", in, keys, got, err, want, wantErr)
		}
	})
}

func referenceFlatKeyed(in string, keys []string) (string, bool) {
	var calls []string
	left := len(keys)
	for _, line := range strings.Split(in, "\n") {
		if left == 0 {
			break
		}
		k, v, ok := strings.Cut(line, " ")
		if !ok || !slices.Contains(keys, k) {
			continue
		}
		v = strings.TrimSpace(v)
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || len(v) > 20 {
			return "", true
		}
		calls = append(calls, fmt.Sprintf("%s=%d", k, n))
		left--
	}
	return strings.Join(calls, " "), false
}

// FuzzParsePressure holds parsePressure to a plain reading of a PSI file
// that takes a line's first "total=" field (seeds in testdata/fuzz). They
// differ, by design, only on a line with more than one: parsePressure
// takes the last field when it is the total, as the kernel writes it.
func FuzzParsePressure(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := parsePressure(in, "cpu.pressure")
		want, wantErr := referencePressure(string(in))
		for _, line := range strings.Split(string(in), "\n") {
			if strings.Count(line, "total=") > 1 {
				return
			}
		}
		if (err != nil) != wantErr || err == nil && got != want {
			t.Fatalf("parsePressure(%q) = %+v, %v; the reference reads %+v, error %v", in, got, err, want, wantErr)
		}
	})
}

func referencePressure(in string) (p Pressure, bad bool) {
	for _, line := range strings.Split(in, "\n") {
		if line == "" {
			continue
		}
		kind, fields, _ := strings.Cut(line, " ")
		_, tot, ok := strings.Cut(fields, "total=")
		if !ok {
			return p, true
		}
		tot, _, _ = strings.Cut(tot, " ")
		tot = strings.TrimSpace(tot)
		us, err := strconv.ParseUint(tot, 10, 64)
		if err != nil || len(tot) > 20 {
			return p, true
		}
		switch kind {
		case "some":
			p.Some, p.HasSome = float64(us)/1e6, true
		case "full":
			p.Full, p.HasFull = float64(us)/1e6, true
		}
	}
	return p, false
}
