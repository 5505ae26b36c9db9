package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"tillpipe/internal/collector/oneconn"
	"tillpipe/internal/collector/rawsys"
	"tillpipe/internal/envconfig"
	"tillpipe/internal/remotewrite"
)

// envPrefix prefixes every environment variable of Config.
const envPrefix = "TILLPIPE_COLLECTOR_"

// Config is the collector's configuration: environment variables
// (TILLPIPE_COLLECTOR_<NAME>) over defaults, then flags over both.
type Config struct {
	RelayURL       string        `env:"RELAY_URL"`
	Device         string        `env:"DEVICE"` // default: hostname
	Interval       time.Duration `env:"INTERVAL" envDefault:"15s"`
	CgroupRoot     string        `env:"CGROUP_ROOT" envDefault:"/sys/fs/cgroup"`
	ProcRoot       string        `env:"PROC_ROOT" envDefault:"/proc"`
	DockerSocket   string        `env:"DOCKER_SOCKET" envDefault:"/var/run/docker.sock"`
	TokenFile      string        `env:"TOKEN_FILE"`
	CAFile         string        `env:"CA_FILE"`
	CertFile       string        `env:"CERT_FILE"`
	KeyFile        string        `env:"KEY_FILE"`
	BufferMaxBytes int           `env:"BUFFER_MAX_BYTES" envDefault:"8388608"`
	Listen         string        `env:"LISTEN"`
	Once           bool          `env:"ONCE"`
	LogLevel       string        `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat      string        `env:"LOG_FORMAT" envDefault:"json"`
	// MaxProcs sets GOMAXPROCS unless that variable is set; 0 keeps Go's
	// default. The collector does one thing at a time: one P spares the
	// thread hand-offs (see package collector's footprint figures).
	MaxProcs int `env:"MAX_PROCS" envDefault:"1"`
	// GCBudget, unless GOGC is set, turns the runtime's GC pacing off and
	// collects after a cycle once that many bytes were allocated since the
	// last collection (collector.AgentOptions.GCBudget), with GOMEMLIMIT
	// (unless set) at gcMemoryLimit as a backstop. 0 leaves the pacing to
	// the runtime, at GCPercent.
	GCBudget int64 `env:"GC_BUDGET" envDefault:"524288"`
	// GCPercent sets GOGC, unless that variable is set, when GCBudget is 0;
	// 0 keeps Go's default. GOGC 50 saves a MiB of heap.
	GCPercent int `env:"GC_PERCENT" envDefault:"50"`
}

// gcMemoryLimit is the memory limit set with GCBudget: far above the
// collector's few MiB, it bounds the heap should a cycle allocate without
// end between two of the agent's collections.
const gcMemoryLimit = 64 << 20

// loadConfig parses the environment seen through getenv, then args.
func loadConfig(args []string, getenv func(string) string) (Config, error) {
	cfg, err := envconfig.Parse[Config](envPrefix, getenv)
	if err != nil {
		return Config{}, err
	}
	fs := flag.NewFlagSet("collector", flag.ContinueOnError)
	fs.StringVar(&cfg.RelayURL, "relay-url", cfg.RelayURL, "store relay remote-write URL, e.g. http://store-server:9201/api/v1/write")
	fs.StringVar(&cfg.Device, "device", cfg.Device, "device id, the device label (default: hostname)")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "sampling interval")
	fs.StringVar(&cfg.CgroupRoot, "cgroup-root", cfg.CgroupRoot, "cgroup filesystem mount point")
	fs.StringVar(&cfg.ProcRoot, "proc-root", cfg.ProcRoot, "procfs mount point")
	fs.StringVar(&cfg.DockerSocket, "docker-socket", cfg.DockerSocket, `Docker/Podman Engine API socket; "" or "none" disables`)
	fs.StringVar(&cfg.TokenFile, "token-file", cfg.TokenFile, "file holding a bearer token for the relay")
	fs.StringVar(&cfg.CAFile, "ca-file", cfg.CAFile, "CA bundle to verify the relay")
	fs.StringVar(&cfg.CertFile, "cert-file", cfg.CertFile, "client certificate for the relay")
	fs.StringVar(&cfg.KeyFile, "key-file", cfg.KeyFile, "client key for the relay")
	fs.IntVar(&cfg.BufferMaxBytes, "buffer-max-bytes", cfg.BufferMaxBytes, "in-memory buffer while the relay is unreachable")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "address serving /metrics and /healthz (off when empty)")
	fs.BoolVar(&cfg.Once, "once", cfg.Once, "sample once, print Prometheus text to stdout and exit")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "json or text")
	fs.IntVar(&cfg.MaxProcs, "max-procs", cfg.MaxProcs, "GOMAXPROCS unless that variable is set; 0: Go's default")
	fs.Int64Var(&cfg.GCBudget, "gc-budget", cfg.GCBudget, "collect garbage after a cycle once this many bytes were allocated since the last collection, instead of the runtime's pacing (unless GOGC is set); 0: the runtime paces, at -gc-percent")
	fs.IntVar(&cfg.GCPercent, "gc-percent", cfg.GCPercent, "GOGC when -gc-budget is 0, unless that variable is set; 0: Go's default")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.DockerSocket == "none" {
		cfg.DockerSocket = ""
	}
	return cfg, cfg.Validate()
}

// ConfigError names the invalid field.
type ConfigError = envconfig.FieldError

// Validate checks cfg.
func (c *Config) Validate() error {
	switch {
	case !c.Once && c.RelayURL == "":
		return &ConfigError{Field: "relay-url", Err: errors.New("required unless -once")}
	case c.RelayURL != "" && !strings.HasPrefix(c.RelayURL, "http://") && !strings.HasPrefix(c.RelayURL, "https://"):
		return &ConfigError{Field: "relay-url", Err: fmt.Errorf("%q is not an http(s) URL", c.RelayURL)}
	case c.Interval < time.Second:
		return &ConfigError{Field: "interval", Err: fmt.Errorf("%s is below 1s", c.Interval)}
	case c.BufferMaxBytes < 64<<10:
		return &ConfigError{Field: "buffer-max-bytes", Err: fmt.Errorf("%d is below 64 KiB", c.BufferMaxBytes)}
	case (c.CertFile == "") != (c.KeyFile == ""):
		return &ConfigError{Field: "cert-file", Err: errors.New("cert-file and key-file go together")}
	case c.MaxProcs < 0:
		return &ConfigError{Field: "max-procs", Err: fmt.Errorf("%d is negative", c.MaxProcs)}
	case c.GCPercent < 0:
		return &ConfigError{Field: "gc-percent", Err: fmt.Errorf("%d is negative", c.GCPercent)}
	case c.GCBudget < 0:
		return &ConfigError{Field: "gc-budget", Err: fmt.Errorf("%d is negative", c.GCBudget)}
	}
	return nil
}

// tuneRuntime applies MaxProcs, GCBudget and GCPercent where the Go
// runtime's own variables are not set. It returns the budget the agent is
// to pace the GC with (0: the runtime paces) and a func restoring the
// previous settings.
func (c *Config) tuneRuntime(getenv func(string) string) (gcBudget int64, restore func()) {
	procs, gc, limit := runtime.GOMAXPROCS(0), -2, int64(-1)
	if c.MaxProcs > 0 && getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(c.MaxProcs)
	}
	switch {
	case getenv("GOGC") != "":
	case c.GCBudget > 0:
		gcBudget, gc = c.GCBudget, debug.SetGCPercent(-1)
		if getenv("GOMEMLIMIT") == "" {
			limit = debug.SetMemoryLimit(gcMemoryLimit)
		}
	case c.GCPercent > 0:
		gc = debug.SetGCPercent(c.GCPercent)
	}
	return gcBudget, func() {
		runtime.GOMAXPROCS(procs)
		if gc != -2 {
			debug.SetGCPercent(gc)
		}
		if limit >= 0 {
			debug.SetMemoryLimit(limit)
		}
	}
}

// tlsConfig builds the relay's TLS settings; nil when none are set.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if c.CAFile == "" && c.CertFile == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read ca-file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, &ConfigError{Field: "ca-file", Err: fmt.Errorf("no PEM certificate in %s", c.CAFile)}
		}
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load cert-file and key-file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// client builds the relay's remote-write client on an HTTP client the
// caller closes. One connection to the relay is kept alive, and each
// request is made on the sender's goroutine (package oneconn).
func (c *Config) client() (*remotewrite.Client, *http.Client, error) {
	tlsc, err := c.tlsConfig()
	if err != nil {
		return nil, nil, err
	}
	token, err := c.token()
	if err != nil {
		return nil, nil, err
	}
	// Reads and writes as raw system calls: see package rawsys.
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	tr := &oneconn.Transport{TLS: tlsc, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return rawsys.Dial(ctx, dialer, network, addr)
	}}
	// A request is bounded by the interval (remotewrite's Timeout), which
	// remotewrite hands to oneconn.Transport.Post as a deadline on the
	// connection: http.Client.Timeout would start a goroutine and a timer
	// per request, 0.08 ms a cycle. With no Timeout of its own, the
	// http.Client's transport is used as a remotewrite.Poster.
	hc := &http.Client{Transport: tr}
	rc, err := remotewrite.NewClient(remotewrite.ClientOptions{URL: c.RelayURL, BearerToken: token, HTTPClient: hc,
		Timeout: c.Interval, UserAgent: "tillpipe-collector"})
	return rc, hc, err
}

// token reads the bearer token file; "" when none is set.
func (c *Config) token() (string, error) {
	if c.TokenFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return "", fmt.Errorf("read token-file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
