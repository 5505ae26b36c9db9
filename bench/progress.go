package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"tillpipe/bench/internal/report"
)

// statusLine renders one line: samples/s in to the relays, out of the
// ingesters, into vmagent, and the backlog per store.
func statusLine(prev, last report.Point, backlog map[string]float64, extra string) string {
	dt := last.T - prev.T
	rate := func(k string) string {
		a, okA := prev.Counters[k]
		b, okB := last.Counters[k]
		if !okA || !okB || dt <= 0 {
			return "-"
		}
		return report.Num(max(b-a, 0) / dt)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[%4.0fs] in %s/s  relayed %s/s  out %s/s", last.T, rate("relay_in"), rate("relay_uplink"), rate("ingester_out"))
	if _, ok := last.Counters["vmagent_in"]; ok {
		fmt.Fprintf(&b, "  vmagent %s/s", rate("vmagent_in"))
	}
	stores := make([]string, 0, len(backlog))
	for s := range backlog {
		stores = append(stores, s)
	}
	sort.Strings(stores)
	if len(stores) > 0 {
		b.WriteString("  backlog")
		for _, s := range stores {
			fmt.Fprintf(&b, " %s=%s", s, report.Bytes(backlog[s]))
		}
	}
	if extra != "" {
		b.WriteString("  " + extra)
	}
	return b.String()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progress prints the status line: refreshed in place every second on a
// terminal, else one line every 10 s.
func (h *Harness) progress(ctx context.Context) {
	tty := isTerminal(h.stdout)
	every := 10 * time.Second
	if tty {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var printed report.Point
	for {
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprintln(h.stdout)
			}
			return
		case <-t.C:
			prev, last, ok := h.mon.Last()
			if !ok {
				continue
			}
			if !tty && printed.Counters != nil {
				prev = printed // rates over the whole 10 s
			}
			printed = last
			extra := fmt.Sprintf("sim %s", h.clock.Now().UTC().Format("01-02 15:04"))
			line := statusLine(prev, last, h.mon.BacklogByStore(), extra)
			if tty {
				fmt.Fprintf(h.stdout, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(h.stdout, line)
			}
		}
	}
}
