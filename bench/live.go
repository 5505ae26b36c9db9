package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"tillpipe/bench/internal/fleet"
)

// readyQuery is the query `make run` links in VictoriaMetrics' UI.
const readyQuery = `sum by (store) (rate(container_cpu_usage_seconds_total[1m]))`

// runLive is `make run`: the whole pipeline on fixed loopback ports with a
// real-time fleet and one real collector, a live status line, until
// SIGINT/SIGTERM; then every child is stopped in reverse order.
func runLive(ctx context.Context, o Options, stdout io.Writer, log *slog.Logger) error {
	work := filepath.Join(o.WorkDir, "run")
	var stores []string
	for i := range o.Stores {
		stores = append(stores, fmt.Sprintf("store-%03d", i+1))
	}
	st, err := NewStack(StackOptions{
		BinDir: o.BinDir, WorkDir: work, Build: o.Build, Stores: stores, Ingesters: o.Ingesters,
		FixedPorts: true, VMPort: o.VMPort, NATSPort: o.NATSPort, RelayBasePort: o.RelayPort, IngesterPort: o.IngesterPort,
		RelayArgs: splitArgs(o.RelayArgs), IngesterArgs: splitArgs(o.IngesterArgs), UplinkRate: o.UplinkRate, Logger: log,
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(stdout, "\nstopping...")
		st.Stop(ctx)
		fmt.Fprintln(stdout, "stopped; data kept in", work)
	}()
	if err := st.Start(ctx); err != nil {
		return fmt.Errorf("start stack: %w", err)
	}
	var fs []fleet.Store
	for _, r := range st.Relays {
		s := fleet.Store{ID: r.Store}
		if r.Err == nil {
			s.RelayURL = r.URL()
		}
		fs = append(fs, s)
	}
	clock := fleet.NewClock(time.Now(), o.Accel)
	fl, err := fleet.New(fleet.Options{Stores: fs, TillsPerStore: o.Tills, Clock: clock, Seed: o.Seed, Logger: log})
	if err != nil {
		return err
	}
	collector := "not started"
	if o.Collector {
		if live := st.LiveRelays(); len(live) > 0 {
			host, _ := os.Hostname()
			if err := st.StartCollector(ctx, live[0], "host-"+host); err != nil {
				collector = err.Error()
				log.Warn("collector unavailable", "err", err)
			} else {
				collector = fmt.Sprintf("device host-%s -> relay %s", host, live[0].Store)
			}
		}
	}
	printWhere(stdout, st, fl, collector)

	mon := NewMonitor(st, fl, time.Now())
	bg, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); _ = fl.Run(bg) }()
	monDone := make(chan struct{})
	go func() { defer close(monDone); mon.Run(bg, time.Second) }()
	tty := isTerminal(stdout)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			cancel()
			<-done
			<-monDone
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil
			}
			return ctx.Err()
		case <-t.C:
			n++
			prev, last, ok := mon.Last()
			if !ok {
				continue
			}
			line := statusLine(prev, last, mon.BacklogByStore(), "")
			switch {
			case tty:
				fmt.Fprintf(stdout, "\r\033[K%s", line)
			case n%10 == 0:
				fmt.Fprintln(stdout, line)
			}
		}
	}
}

func printWhere(w io.Writer, st *Stack, fl *fleet.Fleet, collector string) {
	q := url.PathEscape(readyQuery)
	fmt.Fprintf(w, "\ntillpipe is running on loopback (Ctrl-C stops everything):\n\n")
	fmt.Fprintf(w, "  VictoriaMetrics UI  %s/vmui/?#/?g0.expr=%s\n", st.VMClient.Base(), q)
	fmt.Fprintf(w, "  VictoriaMetrics     %s/metrics\n", st.VMClient.Base())
	fmt.Fprintf(w, "  NATS monitoring     http://127.0.0.1:%d/jsz?streams=true   (client %s)\n", st.NATSMonPort, st.NATSURL())
	for _, in := range st.Ingesters {
		if in.Err != nil {
			fmt.Fprintf(w, "  ingester            unavailable: %v\n", in.Err)
			continue
		}
		fmt.Fprintf(w, "  ingester            %s\n", in.MetricsURL())
	}
	for _, r := range st.Relays {
		if r.Err != nil {
			fmt.Fprintf(w, "  relay %-13s unavailable: %v\n", r.Store, r.Err)
			continue
		}
		fmt.Fprintf(w, "  relay %-13s %s   (remote-write %s)\n", r.Store, r.MetricsURL(), r.URL())
	}
	fmt.Fprintf(w, "  collector           %s\n", collector)
	fmt.Fprintf(w, "  simulated fleet     %d tills x %d series, one sample every 15 s\n", fl.Tills(), fl.SeriesPerTill())
	fmt.Fprintf(w, "  logs                %s\n\n", filepath.Join(filepath.Dir(st.opts.WorkDir), filepath.Base(st.opts.WorkDir), "logs"))
}

func splitArgs(s string) []string { return strings.Fields(s) }
