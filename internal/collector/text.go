package collector

import (
	"bufio"
	"cmp"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

// descByName finds a metric's help and type for the text output.
var descByName = map[string]*desc{}

func init() {
	all := []*desc{mCPUUsage, mCPUUser, mCPUSystem, mThrottledPeriods, mThrottledSeconds, mMemUsage, mWorkingSet,
		mRSS, mCache, mMemLimit, mOOMEvents, mThreads, mFSReads, mFSWrites, mState, mRestarts, mStartTime,
		mOOMKilled, mHealth, mNodeCPU, mNodeBootTime, mNodeFSSize, mNodeFSFree, mNodeFSAvail, mNodeNetRx,
		mNodeNetTx, mScrapeErrors}
	for _, p := range mPressure {
		all = append(all, p[0], p[1])
	}
	all = append(all, mNodeLoad[:]...)
	all = append(all, mNodeMem...)
	for _, d := range all {
		descByName[d.name] = d
	}
}

// WriteText writes tss in the Prometheus text exposition format (0.0.4):
// sorted by metric name and then label set, with HELP and TYPE lines and
// without timestamps, so the output of a cycle is deterministic.
func WriteText(w io.Writer, tss []prompb.TimeSeries) error {
	type line struct{ name, labels, value string }
	lines := make([]line, 0, len(tss))
	var sb strings.Builder
	for _, ts := range tss {
		if len(ts.Samples) == 0 {
			continue
		}
		var name string
		sb.Reset()
		for _, l := range ts.Labels {
			if l.Name == "__name__" {
				name = l.Value
				continue
			}
			if sb.Len() > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString(l.Name)
			sb.WriteString(`="`)
			writeEscaped(&sb, l.Value)
			sb.WriteByte('"')
		}
		lines = append(lines, line{name: name, labels: sb.String(), value: formatValue(ts.Samples[len(ts.Samples)-1].Value)})
	}
	slices.SortFunc(lines, func(a, b line) int {
		return cmp.Or(strings.Compare(a.name, b.name), strings.Compare(a.labels, b.labels))
	})
	bw := bufio.NewWriter(w)
	prev := ""
	for _, l := range lines {
		if l.name != prev {
			prev = l.name
			if d := descByName[l.name]; d != nil {
				bw.WriteString("# HELP " + l.name + " " + d.help + "\n")
				bw.WriteString("# TYPE " + l.name + " " + d.typ.String() + "\n")
			}
		}
		bw.WriteString(l.name)
		if l.labels != "" {
			bw.WriteString("{" + l.labels + "}")
		}
		bw.WriteString(" " + l.value + "\n")
	}
	return bw.Flush()
}

func writeEscaped(sb *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			sb.WriteString(`\\`)
		case '"':
			sb.WriteString(`\"`)
		case '\n':
			sb.WriteString(`\n`)
		default:
			sb.WriteByte(s[i])
		}
	}
}

func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
