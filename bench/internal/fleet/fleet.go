// Package fleet is the bench harness's simulated fleet: stores of tills,
// each till a [fleetsim.Till] sampled every 15 s of simulated time and sent
// as Prometheus remote-write (protobuf + snappy), exactly as the collector
// sends it, to its store's relay and, optionally, the same bytes to a
// vmagent (the anchor). Every request is recorded in a per-till [Ledger], so
// the harness can later check that each acknowledged sample reached the
// backend exactly once.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"tillpipe/internal/fleetsim"
	"tillpipe/internal/remotewrite"
)

// ErrInvalidOption is wrapped by every error about a bad [Options] field.
var ErrInvalidOption = errors.New("invalid option")

// Interval is the simulated sampling interval, the collector's default.
const Interval = 15 * time.Second

// Target names: every till sends to its relay and, when configured, vmagent.
const (
	TargetRelay   = "relay"
	TargetVMAgent = "vmagent"
)

// Store is one simulated store.
type Store struct {
	// ID is the store id its relay stamps on every series (-store flag).
	ID string
	// Label is the store label the tills themselves put in the data. The
	// relay overwrites it with ID; vmagent keeps it, so the anchor's copy
	// of the traffic lands under a different store in the same backend.
	Label string
	// RelayURL is the relay's remote-write endpoint.
	RelayURL string
}

// Options configures a [Fleet]; zero values mean the defaults.
type Options struct {
	Stores        []Store
	TillsPerStore int
	// VMAgentURL, when set, receives a copy of every request.
	VMAgentURL string
	Clock      *Clock
	// Start is the simulated time of the first sample; default the clock's now.
	Start time.Time
	// Seed makes the fleet's data reproducible; default 1.
	Seed int64
	// MaxBackoff caps the retry delay; default 2s (retries are quick so an
	// accelerated run is not dominated by waits).
	MaxBackoff time.Duration
	// RestartProbability overrides fleetsim's per-sample restart chance when > 0.
	RestartProbability float64
	Logger             *slog.Logger
}

// Fleet runs the tills. Run once; the counters are safe to read concurrently.
type Fleet struct {
	opts  Options
	log   *slog.Logger
	tills []*till

	vmagent *remotewrite.Client

	stopGen  chan struct{}
	stopOnce sync.Once

	// Counters, all in samples.
	Generated     atomic.Int64
	AckedRelay    atomic.Int64
	AckedVMAgent  atomic.Int64
	Rejected      atomic.Int64
	Retries       atomic.Int64
	lastTS        atomic.Int64 // newest generated timestamp, ms
	behind        atomic.Int64 // ns the latest sample was generated behind its schedule
	maxBehind     atomic.Int64
	seriesPerTill int
}

type till struct {
	store  Store
	device string
	sim    *fleetsim.Till
	offset time.Duration // stable per-device offset inside the interval
	ledger map[string]*Ledger
	acked  atomic.Int64 // relay-acknowledged samples
}

// New builds the tills; it does not start them.
func New(opts Options) (*Fleet, error) {
	if len(opts.Stores) == 0 || opts.TillsPerStore <= 0 {
		return nil, fmt.Errorf("fleet of %d stores x %d tills: %w", len(opts.Stores), opts.TillsPerStore, ErrInvalidOption)
	}
	if opts.Clock == nil {
		return nil, fmt.Errorf("no clock: %w", ErrInvalidOption)
	}
	if opts.Start.IsZero() {
		opts.Start = opts.Clock.Now()
	}
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 2 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{opts: opts, log: log.With("component", "fleet"), stopGen: make(chan struct{})}
	for si, st := range opts.Stores {
		if st.Label == "" {
			st.Label = st.ID
		}
		for ti := range opts.TillsPerStore {
			dev := fmt.Sprintf("till-%03d", ti+1)
			sim := fleetsim.NewTill(st.Label, dev, opts.Seed*1_000_003+int64(si)*1000+int64(ti))
			if opts.RestartProbability > 0 {
				sim.RestartProbability = opts.RestartProbability
			}
			h := fnv.New32a()
			h.Write([]byte(st.ID + "/" + dev))
			t := &till{store: st, device: dev, sim: sim, offset: time.Duration(h.Sum32()%15000) * time.Millisecond,
				ledger: map[string]*Ledger{TargetRelay: newLedger()}}
			if opts.VMAgentURL != "" {
				t.ledger[TargetVMAgent] = newLedger()
			}
			f.tills = append(f.tills, t)
			f.seriesPerTill = sim.SeriesCount()
		}
	}
	return f, nil
}

// SeriesPerTill is how many series each till sends per sample.
func (f *Fleet) SeriesPerTill() int { return f.seriesPerTill }

// Tills is the number of simulated tills.
func (f *Fleet) Tills() int { return len(f.tills) }

// TillInfo names one till for verification.
type TillInfo struct {
	StoreID, StoreLabel, Device string
	Ledgers                     map[string]*Ledger
}

// TillInfos lists every till and its ledgers.
func (f *Fleet) TillInfos() []TillInfo {
	out := make([]TillInfo, 0, len(f.tills))
	for _, t := range f.tills {
		out = append(out, TillInfo{StoreID: t.store.ID, StoreLabel: t.store.Label, Device: t.device, Ledgers: t.ledger})
	}
	return out
}

// AckedByStore is the relay-acknowledged samples per store id.
func (f *Fleet) AckedByStore() map[string]int64 {
	out := map[string]int64{}
	for _, t := range f.tills {
		out[t.store.ID] += t.acked.Load()
	}
	return out
}

// LastTimestamp is the newest generated sample's timestamp.
func (f *Fleet) LastTimestamp() time.Time { return time.UnixMilli(f.lastTS.Load()) }

// Behind is how late the latest sample was generated against its schedule
// (the fleet cannot keep up when this grows), and the worst so far.
func (f *Fleet) Behind() (last, worst time.Duration) {
	return time.Duration(f.behind.Load()), time.Duration(f.maxBehind.Load())
}

// StopGenerating makes every till finish its in-flight request and stop;
// Run returns once they have.
func (f *Fleet) StopGenerating() { f.stopOnce.Do(func() { close(f.stopGen) }) }

// Run sends until StopGenerating (graceful: in-flight requests are retried
// to the end) or ctx is done (hard: in-flight requests are abandoned).
func (f *Fleet) Run(ctx context.Context) error {
	var err error
	clients := map[string]*remotewrite.Client{}
	for _, st := range f.opts.Stores {
		if st.RelayURL == "" {
			continue // relay unavailable: only the anchor gets traffic
		}
		c, err := remotewrite.NewClient(remotewrite.ClientOptions{URL: st.RelayURL, Timeout: 30 * time.Second, UserAgent: "tillpipe-bench"})
		if err != nil {
			return fmt.Errorf("build client for relay %s: %w", st.ID, err)
		}
		clients[st.ID] = c
	}
	if f.opts.VMAgentURL != "" {
		f.vmagent, err = remotewrite.NewClient(remotewrite.ClientOptions{URL: f.opts.VMAgentURL, Timeout: 30 * time.Second, UserAgent: "tillpipe-bench"})
		if err != nil {
			return fmt.Errorf("build vmagent client: %w", err)
		}
	}
	var wg sync.WaitGroup
	for _, t := range f.tills {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.runTill(ctx, t, clients[t.store.ID])
		}()
	}
	wg.Wait()
	return nil
}

func (f *Fleet) runTill(ctx context.Context, t *till, relay *remotewrite.Client) {
	start := f.opts.Start.Truncate(Interval)
	var (
		tss  []prompb.TimeSeries
		body []byte
	)
	for k := 0; ; k++ {
		simTS := start.Add(time.Duration(k)*Interval + t.offset)
		if simTS.Before(f.opts.Start) {
			continue
		}
		if !f.waitSim(ctx, simTS) {
			return
		}
		late := max(time.Since(f.realAt(simTS)), 0)
		f.behind.Store(int64(late))
		storeMax(&f.maxBehind, int64(late))
		ms := simTS.UnixMilli()
		tss = t.sim.AppendSeries(tss[:0], ms)
		wr := prompb.WriteRequest{Timeseries: tss}
		body = wr.MarshalProtobuf(body[:0])
		n := int64(len(tss))
		f.Generated.Add(n)
		storeMax(&f.lastTS, ms)

		var wg sync.WaitGroup
		if f.vmagent != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := f.send(ctx, f.vmagent, body, ms)
				t.ledger[TargetVMAgent].add(r)
				if r.Acked {
					f.AckedVMAgent.Add(n)
				}
			}()
		}
		if relay != nil {
			r := f.send(ctx, relay, body, ms)
			t.ledger[TargetRelay].add(r)
			if r.Acked {
				f.AckedRelay.Add(n)
				t.acked.Add(n)
			}
			if r.Rejected {
				f.Rejected.Add(n)
			}
		}
		wg.Wait()
	}
}

func (f *Fleet) realAt(sim time.Time) time.Time {
	rt, _ := f.opts.Clock.RealAt(sim)
	return rt
}

// waitSim sleeps until simulated time reaches sim; false when stopped.
func (f *Fleet) waitSim(ctx context.Context, sim time.Time) bool {
	for {
		select {
		case <-f.stopGen:
			return false
		case <-ctx.Done():
			return false
		default:
		}
		rt, changed := f.opts.Clock.RealAt(sim)
		d := time.Until(rt)
		if d <= 0 {
			return true
		}
		tm := time.NewTimer(d)
		select {
		case <-tm.C:
			return true
		case <-changed:
			tm.Stop()
		case <-f.stopGen:
			tm.Stop()
			return false
		case <-ctx.Done():
			tm.Stop()
			return false
		}
	}
}

// send delivers body like the collector: retry network errors, 5xx and
// 429 with backoff until 2xx; a 4xx is final.
func (f *Fleet) send(ctx context.Context, c *remotewrite.Client, body []byte, ts int64) Record {
	r := Record{TS: ts, Sent: time.Now()}
	backoff := 50 * time.Millisecond
	for {
		r.Attempts++
		err := c.Send(ctx, body)
		if err == nil {
			r.Acked = true
			return r
		}
		var re *remotewrite.RecoverableError
		if !errors.As(err, &re) {
			if ctx.Err() == nil {
				r.Rejected = true
				f.log.Warn("request rejected", "err", err)
			}
			return r
		}
		if re.StatusCode == 0 && !errors.Is(err, syscall.ECONNREFUSED) {
			// The connection broke with the request in flight: the target
			// may have stored it, so a duplicate from the retry is expected.
			r.Ambiguous = true
		}
		f.Retries.Add(1)
		wait := max(backoff, min(re.RetryAfter, f.opts.MaxBackoff))
		tm := time.NewTimer(wait)
		select {
		case <-tm.C:
		case <-ctx.Done():
			tm.Stop()
			return r
		}
		backoff = min(backoff*2, f.opts.MaxBackoff)
	}
}

func storeMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}
