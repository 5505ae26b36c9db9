package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"tillpipe/bench/internal/fleet"
	"tillpipe/bench/internal/report"
	"tillpipe/internal/clock"
)

// Harness is one scenario run: the stack, the fleet, the monitor, the delay
// tracker and the report they fill. Its methods are called from the
// scenario's goroutine.
type Harness struct {
	opts   Options
	log    *slog.Logger
	stdout io.Writer

	runID    string
	work     string
	start    time.Time
	stack    *Stack
	clock    *fleet.Clock
	fleet    *fleet.Fleet
	mon      *Monitor
	delay    *DelayTracker
	rep      *report.Report
	simStart time.Time

	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup
	fleetWG  sync.WaitGroup
	fleetCtx context.CancelFunc

	evMu   sync.Mutex
	events []report.Event
}

// Run dispatches one scenario.
func Run(ctx context.Context, o Options, stdout, stderr io.Writer) error {
	log := o.logger(stderr)
	switch o.Scenario {
	case "sizing":
		return runSizing(o, stdout)
	case "run":
		return runLive(ctx, o, stdout, log)
	}
	h := &Harness{opts: o, log: log, stdout: stdout}
	rep, err := h.runScenario(ctx)
	if rep != nil {
		if werr := report.Write(o.OutDir, rep); werr != nil {
			err = errors.Join(err, werr)
		} else {
			fmt.Fprintf(stdout, "report: %s\n", filepath.Join(o.OutDir, o.Scenario+".md"))
		}
		if !rep.Pass && err == nil {
			err = fmt.Errorf("scenario %s failed: %s", o.Scenario, strings.Join(rep.Failures, "; "))
		}
	}
	return err
}

func (h *Harness) runScenario(ctx context.Context) (*report.Report, error) {
	if err := h.setup(ctx); err != nil {
		h.teardown(ctx)
		return nil, err
	}
	defer h.teardown(ctx)
	var err error
	switch h.opts.Scenario {
	case "steady":
		err = h.steady(ctx)
	case "outage":
		err = h.outage(ctx)
	case "crash":
		err = h.crash(ctx)
	case "backend-outage":
		err = h.backendOutage(ctx)
	}
	if err != nil {
		h.fail("scenario: %v", err)
	}
	if ctx.Err() != nil {
		h.fail("interrupted")
		return h.rep, ctx.Err()
	}
	return h.rep, nil
}

// pastStart is the simulated start of a run of realSpan at accel that ends
// at real "now": accelerated samples then never carry future timestamps
// (queries at now would not see them, and VictoriaMetrics refuses samples
// too far ahead).
func pastStart(realSpan time.Duration, accel float64) time.Time {
	return time.Now().Add(-time.Duration(float64(realSpan)*accel) + realSpan)
}

// newRunID is short, so store ids stay readable: b<id>s001.
func newRunID() string {
	return strconv.FormatInt(time.Now().Unix()%100000, 36) + strconv.Itoa(rand.IntN(10))
}

// RelayPrefix and VMAgentPrefix are the backend store prefixes of a run.
func (h *Harness) relayPrefix() string   { return "b" + h.runID }
func (h *Harness) vmagentPrefix() string { return "v" + h.runID }

func (h *Harness) setup(ctx context.Context) error {
	h.start = time.Now()
	h.runID = newRunID()
	h.work = filepath.Join(h.opts.WorkDir, h.opts.Scenario+"-"+h.runID)
	h.rep = &report.Report{Scenario: h.opts.Scenario, RunID: h.runID, Started: h.start, Pass: true, Machine: machine()}
	var stores []string
	for i := range h.opts.Stores {
		stores = append(stores, fmt.Sprintf("%ss%03d", h.relayPrefix(), i+1))
	}
	var err error
	h.stack, err = NewStack(StackOptions{
		BinDir: h.opts.BinDir, WorkDir: h.work, Build: h.opts.Build,
		Stores: stores, Ingesters: h.opts.Ingesters, VMAgent: h.opts.VMAgent, UplinkRate: h.opts.UplinkRate,
		RelayArgs: strings.Fields(h.opts.RelayArgs), IngesterArgs: strings.Fields(h.opts.IngesterArgs),
		Logger: h.log,
	})
	if err != nil {
		return err
	}
	h.rep.Binaries = h.stack.Binaries
	h.log.Info("starting stack", "run", h.runID, "work", h.work)
	if err := h.stack.Start(ctx); err != nil {
		return fmt.Errorf("start stack: %w", err)
	}
	for _, r := range h.stack.Relays {
		if r.Err != nil {
			h.fail("relay %s unavailable: %v", r.Store, r.Err)
		}
	}
	for _, in := range h.stack.Ingesters {
		if in.Err != nil {
			h.fail("ingester unavailable: %v", in.Err)
		}
	}
	return nil
}

// startFleet builds the fleet from simStart at accel and starts it with the
// monitor, the delay tracker and the progress line.
func (h *Harness) startFleet(ctx context.Context, simStart time.Time, accel float64) error {
	h.simStart = simStart
	h.clock = fleet.NewClock(simStart, accel)
	var fs []fleet.Store
	for i, r := range h.stack.Relays {
		st := fleet.Store{ID: r.Store, Label: fmt.Sprintf("%ss%03d", h.vmagentPrefix(), i+1)}
		if r.Err == nil {
			st.RelayURL = r.URL()
		}
		fs = append(fs, st)
	}
	vmagentURL := ""
	if h.stack.VMAgent != nil {
		vmagentURL = h.stack.VMAgentBase() + "/api/v1/write"
	}
	var err error
	h.fleet, err = fleet.New(fleet.Options{Stores: fs, TillsPerStore: h.opts.Tills, VMAgentURL: vmagentURL, Clock: h.clock,
		Start: simStart, Seed: h.opts.Seed, Logger: h.log})
	if err != nil {
		return err
	}
	h.rep.Fleet = report.Fleet{Stores: h.opts.Stores, TillsPerStore: h.opts.Tills, SeriesPerTill: h.fleet.SeriesPerTill(),
		Services: 30, Accel: accel, SimStart: simStart, Placement: h.opts.placement(),
		TargetSamplesPerSec: float64(h.fleet.Tills()*h.fleet.SeriesPerTill()) * accel / fleet.Interval.Seconds()}
	paths := map[string]string{}
	if len(h.stack.LiveRelays()) > 0 {
		paths[fleet.TargetRelay] = h.relayPrefix()
	}
	if h.stack.VMAgent != nil {
		paths[fleet.TargetVMAgent] = h.vmagentPrefix()
	}
	h.mon = NewMonitor(h.stack, h.fleet, h.start)
	h.delay = NewDelayTracker(h.stack.VMClient, h.fleet, paths)
	bg, cancel := context.WithCancel(ctx)
	h.bgCancel = cancel
	h.bgWG.Add(3)
	go func() { defer h.bgWG.Done(); h.mon.Run(bg, time.Second) }()
	go func() {
		defer h.bgWG.Done()
		h.delay.Run(bg, time.Second, func() time.Duration { return time.Since(h.simStart) + 2*time.Hour })
	}()
	go func() { defer h.bgWG.Done(); h.progress(bg) }()
	fctx, fcancel := context.WithCancel(ctx)
	h.fleetCtx = fcancel
	h.fleetWG.Add(1)
	go func() {
		defer h.fleetWG.Done()
		if err := h.fleet.Run(fctx); err != nil {
			h.log.Error("fleet", "err", err)
		}
	}()
	h.event("fleet started")
	return nil
}

// stopFleet stops generating, letting in-flight requests finish (bounded).
func (h *Harness) stopFleet() {
	if h.fleet == nil {
		return
	}
	h.fleet.StopGenerating()
	done := make(chan struct{})
	go func() { h.fleetWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		h.log.Warn("fleet requests still in flight after 60s, abandoning them")
		h.fleetCtx()
		<-done
	}
	h.rep.Fleet.SimEnd = h.fleet.LastTimestamp()
	h.event("fleet stopped")
}

func (h *Harness) teardown(ctx context.Context) {
	if h.fleet != nil {
		h.fleet.StopGenerating()
		h.fleetCtx()
		h.fleetWG.Wait()
	}
	if h.bgCancel != nil {
		h.bgCancel()
		h.bgWG.Wait()
	}
	if h.stack != nil {
		h.stack.Stop(ctx)
	}
	if h.rep != nil {
		h.rep.Finished = time.Now()
		h.evMu.Lock()
		h.rep.Events = append([]report.Event(nil), h.events...)
		h.evMu.Unlock()
		if h.mon != nil {
			h.rep.Timeline = h.mon.Timeline()
		}
	}
	if !h.opts.Keep && h.work != "" && (h.rep == nil || h.rep.Pass) {
		_ = os.RemoveAll(h.work)
	} else if h.work != "" {
		fmt.Fprintf(h.stdout, "work directory kept: %s (logs in %s)\n", h.work, filepath.Join(h.work, "logs"))
	}
}

func (h *Harness) event(format string, a ...any) {
	name := fmt.Sprintf(format, a...)
	h.evMu.Lock()
	h.events = append(h.events, report.Event{T: time.Since(h.start).Seconds(), Name: name})
	h.evMu.Unlock()
	h.log.Info("event", "what", name)
}

func (h *Harness) fail(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	h.rep.Pass = false
	h.rep.Failures = append(h.rep.Failures, msg)
	h.log.Error("failure", "what", msg)
}

func (h *Harness) note(format string, a ...any) {
	h.rep.Notes = append(h.rep.Notes, fmt.Sprintf(format, a...))
}

// verify waits for every acknowledged sample to arrive (bounded) and
// compares the backend with the ledgers, per path.
func (h *Harness) verify(ctx context.Context) {
	type path struct{ target, prefix string }
	var paths []path
	if len(h.stack.LiveRelays()) > 0 {
		paths = append(paths, path{fleet.TargetRelay, h.relayPrefix()})
	}
	if h.stack.VMAgent != nil {
		paths = append(paths, path{fleet.TargetVMAgent, h.vmagentPrefix()})
	}
	for _, p := range paths {
		if got, err := h.fleet.WaitArrived(ctx, h.stack.VMClient, p.target, p.prefix, h.opts.DrainTimeout); err != nil {
			h.log.Warn("not everything arrived", "path", p.target, "count", got, "err", err)
		}
	}
	// One last delay poll now that everything arrived, so the slowest
	// samples (bulk batches sealed last) are counted too.
	h.delay.poll(ctx, time.Since(h.simStart)+2*time.Hour)
	h.rep.Delay = h.delay.Results()
	for _, p := range paths {
		// The arrival count includes duplicates, so it can reach the
		// expected number while samples are still on their way: export
		// again while samples are missing, up to -drain-timeout.
		deadline := time.Now().Add(h.opts.DrainTimeout)
		var c fleet.Completeness
		var err error
		for {
			c, err = h.fleet.Verify(ctx, h.stack.VMClient, p.target, p.prefix)
			if err != nil || c.Lost == 0 || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			h.log.Info("samples still missing, exporting again in 5s", "path", p.target, "lost", c.Lost)
			_ = clock.Sleep(ctx, 5*time.Second)
		}
		if err != nil {
			h.fail("verify %s: %v", p.target, err)
			continue
		}
		h.rep.Completeness = append(h.rep.Completeness, c)
		h.log.Info("completeness", "result", c.String())
		if !c.OK() {
			h.fail("completeness %s", c.String())
		}
		if c.Expected == 0 {
			h.fail("%s path: no sample was acknowledged", p.target)
		}
	}
}

// machine describes the host.
func machine() report.Machine {
	m := report.Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					m.MemBytes = kb * 1024
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

func div(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return 0
	}
	return finite(a / b)
}
