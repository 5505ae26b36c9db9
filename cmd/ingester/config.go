package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"tillpipe/internal/envconfig"
	"tillpipe/internal/ingester"
	"tillpipe/internal/stream"
)

// envPrefix prefixes every environment variable of Config.
const envPrefix = "TILLPIPE_INGESTER_"

// Config is the ingester's configuration: environment variables
// (TILLPIPE_INGESTER_<NAME>) over defaults, then flags over both.
type Config struct {
	NATSURL         string        `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	NATSCreds       string        `env:"NATS_CREDS"`
	BackendURL      string        `env:"BACKEND_URL" envDefault:"http://127.0.0.1:8428/api/v1/write"`
	BackendEncoding string        `env:"BACKEND_ENCODING" envDefault:"snappy"`
	BackendHeaders  string        `env:"BACKEND_HEADERS"`
	BackendTimeout  time.Duration `env:"BACKEND_TIMEOUT" envDefault:"30s"`
	Listen          string        `env:"LISTEN" envDefault:":9202"`
	StreamReplicas  int           `env:"STREAM_REPLICAS" envDefault:"1"`
	StreamMaxAge    time.Duration `env:"STREAM_MAX_AGE" envDefault:"72h"`
	StreamMaxBytes  int64         `env:"STREAM_MAX_BYTES" envDefault:"-1"`
	DedupWindow     time.Duration `env:"DEDUP_WINDOW" envDefault:"20m"`
	Concurrency     int           `env:"CONCURRENCY" envDefault:"2"`
	BatchMaxSamples int           `env:"BATCH_MAX_SAMPLES" envDefault:"10000"`
	AckWait         time.Duration `env:"ACK_WAIT" envDefault:"1m"`
	MaxDeliver      int           `env:"MAX_DELIVER" envDefault:"10"`
	MaxAckPending   int           `env:"MAX_ACK_PENDING" envDefault:"2000"`
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"15s"`
	SetupOnly       bool          `env:"SETUP_ONLY"`
	LogLevel        string        `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat       string        `env:"LOG_FORMAT" envDefault:"json"`
}

// loadConfig parses the environment seen through getenv, then args. Usage
// (for -h) goes to out.
func loadConfig(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	cfg, err := envconfig.Parse[Config](envPrefix, getenv)
	if err != nil {
		return Config{}, err
	}
	fs := flag.NewFlagSet("ingester", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: ingester [flags]\n\nDrains the %s JetStream stream into a remote-write backend.\n"+
			"Every flag can also be set as %s<NAME> (upper case, - as _); a flag beats the environment.\n\n", stream.Name, envPrefix)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.NATSURL, "nats-url", cfg.NATSURL, "NATS server URL(s), comma-separated")
	fs.StringVar(&cfg.NATSCreds, "nats-creds", cfg.NATSCreds, "NATS credentials file (JWT and nkey seed)")
	fs.StringVar(&cfg.BackendURL, "backend-url", cfg.BackendURL, "backend remote-write endpoint")
	fs.StringVar(&cfg.BackendEncoding, "backend-encoding", cfg.BackendEncoding, "remote-write body compression: snappy (the spec's) or zstd (VictoriaMetrics)")
	fs.StringVar(&cfg.BackendHeaders, "backend-headers", cfg.BackendHeaders, "extra request headers as Name=value,Name=value (e.g. X-Scope-OrgID=retail for Mimir)")
	fs.DurationVar(&cfg.BackendTimeout, "backend-timeout", cfg.BackendTimeout, "timeout of one backend request")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "address serving /metrics and /healthz")
	fs.IntVar(&cfg.StreamReplicas, "stream-replicas", cfg.StreamReplicas, "replicas of the streams, consumers and config bucket (3 in production)")
	fs.DurationVar(&cfg.StreamMaxAge, "stream-max-age", cfg.StreamMaxAge, "oldest batch the telemetry stream keeps")
	fs.Int64Var(&cfg.StreamMaxBytes, "stream-max-bytes", cfg.StreamMaxBytes, "telemetry stream size cap in bytes; -1 is unlimited (when full, relays keep their backlog)")
	fs.DurationVar(&cfg.DedupWindow, "dedup-window", cfg.DedupWindow, "JetStream duplicate window for Nats-Msg-Id")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "workers per class (critical, normal, bulk), each with one backend request in flight")
	fs.IntVar(&cfg.BatchMaxSamples, "batch-max-samples", cfg.BatchMaxSamples, "samples per backend request; a request covers whole batches")
	fs.DurationVar(&cfg.AckWait, "ack-wait", cfg.AckWait, "consumer ack wait; in-progress signals are sent every third of it")
	fs.IntVar(&cfg.MaxDeliver, "max-deliver", cfg.MaxDeliver, "deliveries of one batch before it is given up (dead-lettered)")
	fs.IntVar(&cfg.MaxAckPending, "max-ack-pending", cfg.MaxAckPending, "unacked batches per consumer, across replicas")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "on SIGTERM, time to finish in-flight writes before naking them")
	fs.BoolVar(&cfg.SetupOnly, "setup-only", cfg.SetupOnly, "create or update the streams, consumers and config bucket, then exit")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "json or text")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return cfg, cfg.Validate()
}

// ConfigError names the invalid field by its flag name.
type ConfigError = envconfig.FieldError

// Validate checks c.
func (c *Config) Validate() error {
	if _, err := c.headers(); err != nil {
		return err
	}
	switch {
	case c.NATSURL == "":
		return &ConfigError{Field: "nats-url", Err: errors.New("required")}
	case !strings.HasPrefix(c.BackendURL, "http://") && !strings.HasPrefix(c.BackendURL, "https://"):
		return &ConfigError{Field: "backend-url", Err: fmt.Errorf("%q is not an http(s) URL", c.BackendURL)}
	case c.BackendEncoding != "snappy" && c.BackendEncoding != "zstd":
		return &ConfigError{Field: "backend-encoding", Err: fmt.Errorf("%q (want snappy or zstd)", c.BackendEncoding)}
	case c.BackendTimeout <= 0:
		return &ConfigError{Field: "backend-timeout", Err: fmt.Errorf("%s is not positive", c.BackendTimeout)}
	case c.StreamReplicas < 1 || c.StreamReplicas > 5:
		return &ConfigError{Field: "stream-replicas", Err: fmt.Errorf("%d (want 1 to 5)", c.StreamReplicas)}
	case c.StreamMaxAge <= 0:
		return &ConfigError{Field: "stream-max-age", Err: fmt.Errorf("%s is not positive", c.StreamMaxAge)}
	case c.StreamMaxBytes == 0 || c.StreamMaxBytes < -1:
		return &ConfigError{Field: "stream-max-bytes", Err: fmt.Errorf("%d (want -1 or a positive size)", c.StreamMaxBytes)}
	case c.DedupWindow <= 0 || c.DedupWindow > c.StreamMaxAge:
		return &ConfigError{Field: "dedup-window", Err: fmt.Errorf("%s (want positive and at most stream-max-age %s)", c.DedupWindow, c.StreamMaxAge)}
	case c.Concurrency < 1 || c.Concurrency > 256:
		return &ConfigError{Field: "concurrency", Err: fmt.Errorf("%d (want 1 to 256)", c.Concurrency)}
	case c.BatchMaxSamples < 1:
		return &ConfigError{Field: "batch-max-samples", Err: fmt.Errorf("%d is not positive", c.BatchMaxSamples)}
	case c.AckWait < time.Second:
		return &ConfigError{Field: "ack-wait", Err: fmt.Errorf("%s is below 1s", c.AckWait)}
	case c.MaxDeliver < 2:
		return &ConfigError{Field: "max-deliver", Err: fmt.Errorf("%d is below 2", c.MaxDeliver)}
	case c.MaxAckPending < 1:
		return &ConfigError{Field: "max-ack-pending", Err: fmt.Errorf("%d is not positive", c.MaxAckPending)}
	case c.ShutdownTimeout <= 0:
		return &ConfigError{Field: "shutdown-timeout", Err: fmt.Errorf("%s is not positive", c.ShutdownTimeout)}
	}
	return nil
}

// headers parses BackendHeaders: Name=value pairs separated by commas.
func (c *Config) headers() (map[string]string, error) {
	if strings.TrimSpace(c.BackendHeaders) == "" {
		return nil, nil
	}
	h := map[string]string{}
	for _, kv := range strings.Split(c.BackendHeaders, ",") {
		name, value, ok := strings.Cut(kv, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t:") {
			return nil, &ConfigError{Field: "backend-headers", Err: fmt.Errorf("%q is not Name=value", kv)}
		}
		h[name] = strings.TrimSpace(value)
	}
	return h, nil
}

func (c *Config) setupOptions() ingester.SetupOptions {
	return ingester.SetupOptions{
		Stream: stream.Config{Replicas: c.StreamReplicas, MaxAge: c.StreamMaxAge, MaxBytes: c.StreamMaxBytes, DedupWindow: c.DedupWindow},
		Consumer: ingester.ConsumerOptions{AckWait: c.AckWait, MaxDeliver: c.MaxDeliver, MaxAckPending: c.MaxAckPending,
			Replicas: c.StreamReplicas},
	}
}
