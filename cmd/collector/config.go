package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

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
}

// loadConfig parses the environment seen through getenv, then args.
func loadConfig(args []string, getenv func(string) string) (Config, error) {
	params, err := env.GetFieldParamsWithOptions(&Config{}, env.Options{Prefix: envPrefix})
	if err != nil {
		return Config{}, fmt.Errorf("list config variables: %w", err)
	}
	environ := make(map[string]string, len(params))
	for _, p := range params {
		if v := getenv(p.Key); v != "" {
			environ[p.Key] = v
		}
	}
	cfg, err := env.ParseAsWithOptions[Config](env.Options{Prefix: envPrefix, Environment: environ})
	if err != nil {
		return Config{}, fmt.Errorf("parse environment: %w", err)
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
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return fmt.Sprintf("config %s: %v", e.Field, e.Err) }
func (e *ConfigError) Unwrap() error { return e.Err }

// Validate checks cfg.
func (c *Config) Validate() error {
	switch {
	case !c.Once && c.RelayURL == "":
		return &ConfigError{"relay-url", errors.New("required unless -once")}
	case c.RelayURL != "" && !strings.HasPrefix(c.RelayURL, "http://") && !strings.HasPrefix(c.RelayURL, "https://"):
		return &ConfigError{"relay-url", fmt.Errorf("%q is not an http(s) URL", c.RelayURL)}
	case c.Interval < time.Second:
		return &ConfigError{"interval", fmt.Errorf("%s is below 1s", c.Interval)}
	case c.BufferMaxBytes < 64<<10:
		return &ConfigError{"buffer-max-bytes", fmt.Errorf("%d is below 64 KiB", c.BufferMaxBytes)}
	case (c.CertFile == "") != (c.KeyFile == ""):
		return &ConfigError{"cert-file", errors.New("cert-file and key-file go together")}
	}
	return nil
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
			return nil, &ConfigError{"ca-file", fmt.Errorf("no PEM certificate in %s", c.CAFile)}
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
// caller closes. One connection to the relay is kept alive.
func (c *Config) client() (*remotewrite.Client, *http.Client, error) {
	tlsc, err := c.tlsConfig()
	if err != nil {
		return nil, nil, err
	}
	token, err := c.token()
	if err != nil {
		return nil, nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig, tr.MaxIdleConnsPerHost, tr.IdleConnTimeout = tlsc, 1, 2*c.Interval+time.Minute
	hc := &http.Client{Transport: tr, Timeout: c.Interval}
	rc, err := remotewrite.NewClient(remotewrite.ClientOptions{URL: c.RelayURL, BearerToken: token, HTTPClient: hc,
		UserAgent: "tillpipe-collector"})
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
