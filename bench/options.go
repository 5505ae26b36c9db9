package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"time"
)

// ErrInvalidOption is wrapped by every error about a bad flag.
var ErrInvalidOption = errors.New("invalid option")

// Scenarios the harness runs.
var Scenarios = []string{"steady", "outage", "crash", "backend-outage", "run", "sizing"}

// Options is one harness invocation. Zero values of the sizing fields take
// the scenario's defaults (see defaults).
type Options struct {
	Scenario  string
	Stores    int
	Tills     int
	Duration  time.Duration // generation time (steady, crash, backend-outage)
	Warmup    time.Duration // excluded from the measured window
	Accel     float64
	Ingesters int
	VMAgent   bool
	BinDir    string
	OutDir    string
	WorkDir   string
	Build     bool
	Keep      bool // keep the work directory
	Seed      int64
	LogLevel  string

	// outage
	OutageSim    time.Duration // simulated outage length
	OutageLead   time.Duration // simulated time online before it
	UplinkRate   int64         // relay uplink limit, bytes/s
	DrainTimeout time.Duration

	// backend-outage
	BackendDown time.Duration

	// crash
	KillEvery time.Duration

	// run
	VMPort, NATSPort, RelayPort, IngesterPort int
	Collector                                 bool

	RelayArgs, IngesterArgs string
}

type defaults struct {
	stores, tills int
	duration      time.Duration
	accel         float64
}

// scenarioDefaults are sizes a 2-core machine holds while the harness still
// leaves the measured processes their CPU (see bench/README.md).
var scenarioDefaults = map[string]defaults{
	"steady":         {stores: 4, tills: 10, duration: 3 * time.Minute, accel: 16},
	"outage":         {stores: 2, tills: 1, accel: 288},
	"crash":          {stores: 3, tills: 4, duration: 90 * time.Second, accel: 8},
	"backend-outage": {stores: 3, tills: 4, duration: 90 * time.Second, accel: 8},
	"run":            {stores: 3, tills: 5, accel: 1},
	"sizing":         {},
}

// ParseOptions reads the command line.
func ParseOptions(args []string, stderr io.Writer) (Options, error) {
	var o Options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Scenario, "scenario", "steady", "one of "+strings.Join(Scenarios, ", "))
	fs.IntVar(&o.Stores, "stores", 0, "simulated stores, one relay each (0: the scenario's default)")
	fs.IntVar(&o.Tills, "tills", 0, "tills per store (0: the scenario's default)")
	fs.DurationVar(&o.Duration, "duration", 0, "real time the fleet generates (0: the scenario's default)")
	fs.DurationVar(&o.Warmup, "warmup", 0, "start of the run left out of the measured window (0: a sixth of -duration, at most 30s)")
	fs.Float64Var(&o.Accel, "accel", 0, "simulated seconds per real second (0: the scenario's default)")
	fs.IntVar(&o.Ingesters, "ingesters", 1, "ingester replicas")
	fs.BoolVar(&o.VMAgent, "vmagent", true, "run vmagent side by side as the anchor (not in -scenario run)")
	fs.StringVar(&o.BinDir, "bin-dir", "bin", "directory of the binaries (make build puts them there)")
	fs.StringVar(&o.OutDir, "out", "bench/results", "where reports go")
	fs.StringVar(&o.WorkDir, "work", "bench/work", "where data dirs and logs go (one subdirectory per run)")
	fs.BoolVar(&o.Build, "build", true, "go build the tillpipe binaries into -bin-dir first (servers are built only when missing)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the run's work directory")
	fs.Int64Var(&o.Seed, "seed", 1, "fleet data seed")
	fs.StringVar(&o.LogLevel, "log-level", "info", "harness log level")
	fs.DurationVar(&o.OutageSim, "outage-sim", 24*time.Hour, "outage: simulated length of the uplink outage")
	fs.DurationVar(&o.OutageLead, "outage-lead", 10*time.Minute, "outage: simulated time online before the outage")
	fs.Int64Var(&o.UplinkRate, "uplink-rate", 0, "relay uplink limit in bytes/s (0: the relay's default; outage: 262144)")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", 10*time.Minute, "outage and recovery: bound on waiting for everything to arrive")
	fs.DurationVar(&o.BackendDown, "backend-down", 30*time.Second, "backend-outage: how long VictoriaMetrics is down")
	fs.DurationVar(&o.KillEvery, "kill-every", 8*time.Second, "crash: mean time between kills")
	fs.IntVar(&o.VMPort, "vm-port", 8428, "run: VictoriaMetrics port")
	fs.IntVar(&o.NATSPort, "nats-port", 4222, "run: NATS port")
	fs.IntVar(&o.RelayPort, "relay-port", 9201, "run: first relay port (then +2 each)")
	fs.IntVar(&o.IngesterPort, "ingester-port", 9202, "run: ingester port")
	fs.BoolVar(&o.Collector, "collector", true, "run: also run one real collector sampling this machine")
	fs.StringVar(&o.RelayArgs, "relay-args", "", "extra arguments for every relay, space separated")
	fs.StringVar(&o.IngesterArgs, "ingester-args", "", "extra arguments for every ingester, space separated")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("parse flags: %w", err)
	}
	d, ok := scenarioDefaults[o.Scenario]
	if !ok {
		return o, fmt.Errorf("scenario %q (want one of %s): %w", o.Scenario, strings.Join(Scenarios, ", "), ErrInvalidOption)
	}
	if o.Stores == 0 {
		o.Stores = d.stores
	}
	if o.Tills == 0 {
		o.Tills = d.tills
	}
	if o.Duration == 0 {
		o.Duration = d.duration
	}
	if o.Accel == 0 {
		o.Accel = d.accel
	}
	if o.Warmup == 0 {
		o.Warmup = min(o.Duration/6, 30*time.Second)
	}
	if o.Scenario == "outage" && o.UplinkRate == 0 {
		o.UplinkRate = 256 << 10
	}
	if o.Scenario != "sizing" && (o.Stores <= 0 || o.Tills <= 0 || o.Accel <= 0 || o.Ingesters <= 0) {
		return o, fmt.Errorf("stores %d, tills %d, accel %g, ingesters %d must be positive: %w", o.Stores, o.Tills, o.Accel, o.Ingesters, ErrInvalidOption)
	}
	if o.Stores > 999 {
		return o, fmt.Errorf("stores %d over 999: %w", o.Stores, ErrInvalidOption)
	}
	return o, nil
}

func (o Options) logger(w io.Writer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(strings.ToUpper(o.LogLevel)))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv}))
}

// placement describes where the simulated stores' relays run.
func (o Options) placement() string {
	return fmt.Sprintf("one relay process per simulated store (%d relays), all on this %d-CPU host with NATS, VictoriaMetrics, %d ingester(s), vmagent and the fleet simulator",
		o.Stores, runtime.NumCPU(), o.Ingesters)
}
