package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tillpipe/bench/internal/proc"
	"tillpipe/bench/internal/vmapi"
	"tillpipe/bench/internal/wan"
	"tillpipe/internal/stream"
)

// ErrUnavailable marks a part of the pipeline whose binary is missing or
// exits at once (not built yet); the harness goes on without it and the
// report says so.
var ErrUnavailable = errors.New("unavailable")

// packages maps the binaries the harness runs to the Go packages they are
// built from when bin/ lacks them (the same versions as go.mod pins).
var packages = map[string]string{
	"victoria-metrics": "github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics",
	"vmagent":          "github.com/VictoriaMetrics/VictoriaMetrics/app/vmagent",
	"nats-server":      "github.com/nats-io/nats-server/v2",
	"storerelay":       "./cmd/storerelay",
	"ingester":         "./cmd/ingester",
	"collector":        "./cmd/collector",
}

// StackOptions sizes and places the processes of one run.
type StackOptions struct {
	BinDir  string
	WorkDir string // this run's directory: data dirs and logs
	Build   bool   // go build the tillpipe binaries into BinDir first

	Stores        []string // store ids, one relay each
	Ingesters     int
	VMAgent       bool
	UplinkRate    int64 // relay -uplink-rate, bytes/s; 0 leaves the relay's default
	RelayArgs     []string
	IngesterArgs  []string
	FixedPorts    bool // make run: 8428, 4222, 9201.., 9202
	VMPort        int
	NATSPort      int
	RelayBasePort int
	IngesterPort  int
	Logger        *slog.Logger
}

// Relay is one store relay and its uplink.
type Relay struct {
	Store   string
	Port    int
	DataDir string
	Proc    *proc.Process
	Uplink  *wan.Link // relay -> NATS
	Err     error     // why it is unavailable, nil when running
}

// URL is the relay's remote-write endpoint.
func (r *Relay) URL() string { return fmt.Sprintf("http://127.0.0.1:%d/api/v1/write", r.Port) }

// MetricsURL is the relay's /metrics.
func (r *Relay) MetricsURL() string { return fmt.Sprintf("http://127.0.0.1:%d/metrics", r.Port) }

// Ingester is one ingester replica.
type Ingester struct {
	Port int
	Proc *proc.Process
	Err  error
}

// MetricsURL is the ingester's /metrics.
func (i *Ingester) MetricsURL() string { return fmt.Sprintf("http://127.0.0.1:%d/metrics", i.Port) }

// Stack is every process of one run plus the links between them. Start
// and Stop are called from one goroutine; the accessors are safe for
// concurrent use once Start returned.
type Stack struct {
	opts StackOptions
	log  *slog.Logger

	Binaries map[string]string // name -> path or "unavailable: ..."

	NATS                  *proc.Process
	NATSPort, NATSMonPort int
	VM                    *proc.Process
	VMPort                int
	VMClient              *vmapi.Client
	VMAgent               *proc.Process
	VMAgentPort           int
	VMAgentData           string
	VMAgentLink           *wan.Link // vmagent -> VM
	Relays                []*Relay
	Ingesters             []*Ingester
	IngesterLink          *wan.Link // ingesters -> VM
	Collector             *proc.Process

	nc *nats.Conn
	js jetstream.JetStream

	linkCancel context.CancelFunc
	linkWG     sync.WaitGroup
	started    []*proc.Process // in start order, stopped in reverse
}

// NewStack prepares (and when asked, builds) the binaries.
func NewStack(opts StackOptions) (*Stack, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(opts.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("create work dir %s: %w", opts.WorkDir, err)
	}
	s := &Stack{opts: opts, log: opts.Logger.With("component", "stack"), Binaries: map[string]string{}}
	for _, name := range []string{"nats-server", "victoria-metrics", "vmagent", "storerelay", "ingester", "collector"} {
		p, err := s.binary(name)
		if err != nil {
			s.Binaries[name] = "unavailable: " + err.Error()
			continue
		}
		s.Binaries[name] = p
	}
	return s, nil
}

// binary finds bin/<name>, building it when missing (third-party servers)
// or when Build is set (tillpipe's own, so a run never uses a stale one).
func (s *Stack) binary(name string) (string, error) {
	abs, err := filepath.Abs(filepath.Join(s.opts.BinDir, name))
	if err != nil {
		return "", fmt.Errorf("resolve bin dir: %w", err)
	}
	_, statErr := os.Stat(abs)
	own := packages[name][0] == '.'
	if statErr == nil && !(own && s.opts.Build) {
		return abs, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	s.log.Info("building", "binary", name)
	cmd := exec.Command("go", "build", "-o", abs, packages[name])
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		if statErr == nil {
			s.log.Warn("build failed, using the existing binary", "binary", name, "err", err)
			return abs, nil
		}
		return "", fmt.Errorf("go build %s: %v: %s", packages[name], err, firstLine(out))
	}
	return abs, nil
}

func firstLine(b []byte) string {
	for i, c := range b {
		if c == '\n' {
			return string(b[:i])
		}
	}
	return string(b)
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("get working dir: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (s *Stack) port(fixed int) (int, error) {
	if s.opts.FixedPorts && fixed > 0 {
		return fixed, nil
	}
	return freePort()
}

func (s *Stack) newProc(name, bin string, args ...string) *proc.Process {
	return proc.New(proc.Spec{Name: name, Path: bin, Args: args, LogPath: filepath.Join(s.opts.WorkDir, "logs", name+".log"), StopTimeout: 15 * time.Second}, s.opts.Logger)
}

func (s *Stack) bin(name string) (string, error) {
	p := s.Binaries[name]
	if p == "" || !filepath.IsAbs(p) {
		return "", fmt.Errorf("%s %s: %w", name, p, ErrUnavailable)
	}
	return p, nil
}

// Start brings the stack up: NATS, VictoriaMetrics, the stream, vmagent,
// ingesters, relays. NATS and VictoriaMetrics are required; a relay or
// ingester that cannot start is recorded in its Err and the run goes on.
func (s *Stack) Start(ctx context.Context) error {
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.linkCancel = cancel
	var err error
	if err = s.startNATS(ctx); err != nil {
		return err
	}
	if err = s.startVM(ctx); err != nil {
		return err
	}
	if err = s.ensureStream(ctx); err != nil {
		return err
	}
	if s.IngesterLink, err = s.link(lctx, "ingester-backend", fmt.Sprintf("127.0.0.1:%d", s.VMPort)); err != nil {
		return err
	}
	if s.opts.VMAgent {
		if err := s.startVMAgent(ctx, lctx); err != nil {
			return err
		}
	}
	for i := range s.opts.Ingesters {
		in := &Ingester{}
		s.Ingesters = append(s.Ingesters, in)
		in.Err = s.startIngester(ctx, i, in)
		if in.Err != nil {
			s.log.Warn("ingester unavailable", "err", in.Err)
		}
	}
	for i, id := range s.opts.Stores {
		r := &Relay{Store: id}
		s.Relays = append(s.Relays, r)
		r.Err = s.startRelay(ctx, lctx, i, r)
		if r.Err != nil {
			s.log.Warn("relay unavailable", "store", id, "err", r.Err)
		}
	}
	return nil
}

func (s *Stack) link(ctx context.Context, name, target string) (*wan.Link, error) {
	l, err := wan.Listen(name, target, s.opts.Logger)
	if err != nil {
		return nil, err
	}
	s.linkWG.Add(1)
	go func() {
		defer s.linkWG.Done()
		if err := l.Run(ctx); err != nil {
			s.log.Warn("wan link stopped", "link", name, "err", err)
		}
	}()
	return l, nil
}

func (s *Stack) startNATS(ctx context.Context) error {
	bin, err := s.bin("nats-server")
	if err != nil {
		return err
	}
	if s.NATSPort, err = s.port(s.opts.NATSPort); err != nil {
		return err
	}
	mon := 0
	if s.opts.FixedPorts {
		mon = 8222
	}
	if s.NATSMonPort, err = s.port(mon); err != nil {
		return err
	}
	s.NATS = s.newProc("nats-server", bin, "-js", "-sd", filepath.Join(s.opts.WorkDir, "nats"), "-a", "127.0.0.1",
		"-p", strconv.Itoa(s.NATSPort), "-m", strconv.Itoa(s.NATSMonPort))
	if err := s.startAndWait(ctx, s.NATS, fmt.Sprintf("http://127.0.0.1:%d/healthz", s.NATSMonPort)); err != nil {
		return err
	}
	return nil
}

// NATSURL is the central NATS client URL (ingesters connect directly).
func (s *Stack) NATSURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.NATSPort) }

func (s *Stack) vmArgs() []string {
	return []string{
		"-storageDataPath=" + filepath.Join(s.opts.WorkDir, "victoria-metrics"),
		fmt.Sprintf("-httpListenAddr=127.0.0.1:%d", s.VMPort),
		"-retentionPeriod=100y", "-dedup.minScrapeInterval=0", "-search.latencyOffset=0s",
		"-loggerLevel=WARN",
	}
}

func (s *Stack) startVM(ctx context.Context) error {
	bin, err := s.bin("victoria-metrics")
	if err != nil {
		return err
	}
	if s.VMPort, err = s.port(s.opts.VMPort); err != nil {
		return err
	}
	s.VM = s.newProc("victoria-metrics", bin, s.vmArgs()...)
	s.VMClient = vmapi.New(fmt.Sprintf("http://127.0.0.1:%d", s.VMPort))
	return s.startAndWait(ctx, s.VM, s.VMClient.Base()+"/health")
}

// StopVM stops VictoriaMetrics gracefully (a backend outage).
func (s *Stack) StopVM(ctx context.Context) error { return s.VM.Stop(ctx) }

// StartVM brings VictoriaMetrics back on the same port and data.
func (s *Stack) StartVM(ctx context.Context) error {
	return s.startAndWait(ctx, s.VM, s.VMClient.Base()+"/health")
}

func (s *Stack) ensureStream(ctx context.Context) error {
	nc, err := nats.Connect(s.NATSURL(), nats.Name("tillpipe-bench"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to nats %s: %w", s.NATSURL(), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("jetstream: %w", err)
	}
	s.nc, s.js = nc, js
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := stream.Ensure(cctx, js, stream.Config{}); err != nil {
		return fmt.Errorf("ensure stream: %w", err)
	}
	return nil
}

// StreamState is the telemetry stream's bytes and messages (NaN-free; zero
// when unreadable).
func (s *Stack) StreamState(ctx context.Context) (bytes, msgs float64, ok bool) {
	if s.js == nil {
		return 0, 0, false
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := s.js.Stream(cctx, stream.Name)
	if err != nil {
		return 0, 0, false
	}
	info, err := st.Info(cctx)
	if err != nil {
		return 0, 0, false
	}
	return float64(info.State.Bytes), float64(info.State.Msgs), true
}

func (s *Stack) startVMAgent(ctx, lctx context.Context) error {
	bin, err := s.bin("vmagent")
	if err != nil {
		return err
	}
	if s.VMAgentLink, err = s.link(lctx, "vmagent-backend", fmt.Sprintf("127.0.0.1:%d", s.VMPort)); err != nil {
		return err
	}
	if s.VMAgentPort, err = s.port(0); err != nil {
		return err
	}
	s.VMAgentData = filepath.Join(s.opts.WorkDir, "vmagent")
	s.VMAgent = s.newProc("vmagent", bin,
		"-remoteWrite.url=http://"+s.VMAgentLink.Addr()+"/api/v1/write",
		"-remoteWrite.tmpDataPath="+s.VMAgentData,
		fmt.Sprintf("-httpListenAddr=127.0.0.1:%d", s.VMAgentPort),
		"-loggerLevel=WARN",
	)
	return s.startAndWait(ctx, s.VMAgent, s.VMAgentBase()+"/health")
}

// VMAgentBase is vmagent's HTTP base URL.
func (s *Stack) VMAgentBase() string { return fmt.Sprintf("http://127.0.0.1:%d", s.VMAgentPort) }

func (s *Stack) startIngester(ctx context.Context, i int, in *Ingester) error {
	bin, err := s.bin("ingester")
	if err != nil {
		return err
	}
	fixed := 0
	if i == 0 {
		fixed = s.opts.IngesterPort
	}
	if in.Port, err = s.port(fixed); err != nil {
		return err
	}
	args := []string{"-nats-url", s.NATSURL(), "-backend-url", "http://" + s.IngesterLink.Addr() + "/api/v1/write",
		"-backend-encoding", "zstd", "-listen", fmt.Sprintf("127.0.0.1:%d", in.Port)}
	in.Proc = s.newProc(fmt.Sprintf("ingester-%d", i+1), bin, append(args, s.opts.IngesterArgs...)...)
	return s.startAndWait(ctx, in.Proc, in.MetricsURL())
}

func (s *Stack) startRelay(ctx, lctx context.Context, i int, r *Relay) error {
	bin, err := s.bin("storerelay")
	if err != nil {
		return err
	}
	if r.Uplink, err = s.link(lctx, "uplink-"+r.Store, fmt.Sprintf("127.0.0.1:%d", s.NATSPort)); err != nil {
		return err
	}
	fixed := 0
	if s.opts.RelayBasePort > 0 {
		fixed = s.opts.RelayBasePort + 2*i // 9201, 9203, ...: 9202 is the ingester's
	}
	if r.Port, err = s.port(fixed); err != nil {
		return err
	}
	r.DataDir = filepath.Join(s.opts.WorkDir, "relay-"+r.Store)
	args := []string{"-store", r.Store, "-data-dir", r.DataDir, "-listen", fmt.Sprintf("127.0.0.1:%d", r.Port),
		"-nats-url", "nats://" + r.Uplink.Addr()}
	if s.opts.UplinkRate > 0 {
		args = append(args, "-uplink-rate", strconv.FormatInt(s.opts.UplinkRate, 10))
	}
	r.Proc = s.newProc("relay-"+r.Store, bin, append(args, s.opts.RelayArgs...)...)
	return s.startAndWait(ctx, r.Proc, fmt.Sprintf("http://127.0.0.1:%d/healthz", r.Port))
}

// RestartRelay starts a killed relay again on the same port and data dir.
func (s *Stack) RestartRelay(ctx context.Context, r *Relay) error {
	return s.startAndWait(ctx, r.Proc, fmt.Sprintf("http://127.0.0.1:%d/healthz", r.Port))
}

// RestartIngester starts a killed ingester again.
func (s *Stack) RestartIngester(ctx context.Context, in *Ingester) error {
	return s.startAndWait(ctx, in.Proc, in.MetricsURL())
}

// StartCollector runs one real collector on this machine, pushing to relay.
func (s *Stack) StartCollector(ctx context.Context, relay *Relay, device string) error {
	bin, err := s.bin("collector")
	if err != nil {
		return err
	}
	s.Collector = s.newProc("collector", bin, "-relay-url", relay.URL(), "-device", device, "-interval", "15s")
	if err := s.Collector.Start(); err != nil {
		return err
	}
	s.track(s.Collector)
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	if exited, err := s.Collector.Exited(); exited {
		return fmt.Errorf("collector exited at once (%v), see %s: %w", err, filepath.Join(s.opts.WorkDir, "logs", "collector.log"), ErrUnavailable)
	}
	return nil
}

func (s *Stack) track(p *proc.Process) {
	for _, q := range s.started {
		if q == p {
			return
		}
	}
	s.started = append(s.started, p)
}

// startAndWait starts p and polls url until it answers 200, p exits (the
// part is unavailable) or 60 s pass.
func (s *Stack) startAndWait(ctx context.Context, p *proc.Process, url string) error {
	if err := p.Start(); err != nil {
		return err
	}
	s.track(p)
	deadline := time.Now().Add(60 * time.Second)
	hc := &http.Client{Timeout: time.Second}
	for {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("%s exited while starting (%v), see its log in %s: %w", p.Name(), err, filepath.Join(s.opts.WorkDir, "logs"), ErrUnavailable)
		}
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			_ = p.Kill()
			return fmt.Errorf("%s not ready at %s after 60s: %w", p.Name(), url, ErrUnavailable)
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// LiveRelays are the relays that started.
func (s *Stack) LiveRelays() []*Relay {
	var out []*Relay
	for _, r := range s.Relays {
		if r.Err == nil {
			out = append(out, r)
		}
	}
	return out
}

// LiveIngesters are the ingesters that started.
func (s *Stack) LiveIngesters() []*Ingester {
	var out []*Ingester
	for _, in := range s.Ingesters {
		if in.Err == nil {
			out = append(out, in)
		}
	}
	return out
}

// Stop ends every process in reverse start order (SIGTERM, then SIGKILL
// after each one's deadline) and closes the links.
func (s *Stack) Stop(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	for i := len(s.started) - 1; i >= 0; i-- {
		p := s.started[i]
		if err := p.Stop(ctx); err != nil {
			s.log.Warn("stop", "process", p.Name(), "err", err)
		}
	}
	if s.nc != nil {
		s.nc.Close()
	}
	if s.linkCancel != nil {
		s.linkCancel()
	}
	s.linkWG.Wait()
}

// Processes lists every started process by role.
func (s *Stack) Processes() map[string][]*proc.Process {
	out := map[string][]*proc.Process{}
	add := func(role string, p *proc.Process) {
		if p != nil {
			out[role] = append(out[role], p)
		}
	}
	add("nats", s.NATS)
	add("backend", s.VM)
	add("vmagent", s.VMAgent)
	for _, r := range s.LiveRelays() {
		add("relay", r.Proc)
	}
	for _, in := range s.LiveIngesters() {
		add("ingester", in.Proc)
	}
	add("collector", s.Collector)
	return out
}
