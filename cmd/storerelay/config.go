package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"tillpipe/internal/envconfig"
	"tillpipe/internal/seal"
	"tillpipe/internal/stream"
)

// envPrefix prefixes every environment variable of Config.
const envPrefix = "TILLPIPE_RELAY_"

// Config is the relay's configuration: environment variables
// (TILLPIPE_RELAY_<NAME>) over defaults, then flags over both.
type Config struct {
	Store              string        `env:"STORE"`
	DataDir            string        `env:"DATA_DIR"`
	Listen             string        `env:"LISTEN" envDefault:":9201"`
	NATSURL            string        `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	NATSCreds          string        `env:"NATS_CREDS"`
	UplinkRate         int64         `env:"UPLINK_RATE" envDefault:"0"`
	BufferMaxBytes     int64         `env:"BUFFER_MAX_BYTES" envDefault:"8589934592"`
	BufferMaxAge       time.Duration `env:"BUFFER_MAX_AGE" envDefault:"72h"`
	InboxMaxBytes      int64         `env:"INBOX_MAX_BYTES" envDefault:"67108864"`
	Rules              string        `env:"RULES"`
	MaxSeriesPerDevice int           `env:"MAX_SERIES_PER_DEVICE" envDefault:"5000"`
	SeriesWindow       time.Duration `env:"SERIES_WINDOW" envDefault:"1h"`
	MaxBodyBytes       int64         `env:"MAX_BODY_BYTES" envDefault:"8388608"`
	AuthTokens         string        `env:"AUTH_TOKENS"`
	TLSCert            string        `env:"TLS_CERT"`
	TLSKey             string        `env:"TLS_KEY"`
	ClientCA           string        `env:"CLIENT_CA"`
	CriticalBatchBytes int           `env:"CRITICAL_BATCH_BYTES" envDefault:"262144"`
	CriticalBatchAge   time.Duration `env:"CRITICAL_BATCH_AGE" envDefault:"1s"`
	NormalBatchBytes   int           `env:"NORMAL_BATCH_BYTES" envDefault:"1048576"`
	NormalBatchAge     time.Duration `env:"NORMAL_BATCH_AGE" envDefault:"10s"`
	BulkBatchBytes     int           `env:"BULK_BATCH_BYTES" envDefault:"2097152"`
	BulkBatchAge       time.Duration `env:"BULK_BATCH_AGE" envDefault:"60s"`
	RelayID            string        `env:"RELAY_ID"`
	ShutdownTimeout    time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s"`
	LogLevel           string        `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat          string        `env:"LOG_FORMAT" envDefault:"json"`
	MemoryLimit        int64         `env:"MEMORY_LIMIT" envDefault:"33554432"`
}

// loadConfig parses the environment seen through getenv, then args. Usage
// (for -h) goes to out.
func loadConfig(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	cfg, err := envconfig.Parse[Config](envPrefix, getenv)
	if err != nil {
		return Config{}, err
	}
	fs := flag.NewFlagSet("storerelay", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: storerelay -store <id> -data-dir <dir> [flags]\n\n"+
			"Accepts Prometheus remote-write on POST /api/v1/write (also /metrics, /healthz), buffers it on disk\n"+
			"by priority class and publishes sealed zstd batches to JetStream (%s).\n"+
			"Every flag can also be set as %s<NAME> (upper case, - as _); a flag beats the environment.\n\n", stream.Subject("<store>", "<class>"), envPrefix)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Store, "store", cfg.Store, "store id, stamped as the store label and used in subjects (required; [A-Za-z0-9_-])")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory of the inbox, outbox and seal state (required)")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "address serving /api/v1/write, /metrics and /healthz")
	fs.StringVar(&cfg.NATSURL, "nats-url", cfg.NATSURL, "central NATS URL(s), comma-separated")
	fs.StringVar(&cfg.NATSCreds, "nats-creds", cfg.NATSCreds, "NATS credentials file of this store")
	fs.Int64Var(&cfg.UplinkRate, "uplink-rate", cfg.UplinkRate, "uplink limit in bytes/s, 0 = unlimited (the config bucket key uplink-rate.<store> overrides it at run time)")
	fs.Int64Var(&cfg.BufferMaxBytes, "buffer-max-bytes", cfg.BufferMaxBytes, "cap of sealed batches on disk; over it bulk is dropped first, then normal, critical last")
	fs.DurationVar(&cfg.BufferMaxAge, "buffer-max-age", cfg.BufferMaxAge, "sealed batches older than this are dropped")
	fs.Int64Var(&cfg.InboxMaxBytes, "inbox-max-bytes", cfg.InboxMaxBytes, "unsealed inbox bytes (compressed records) at which writes get 429 with Retry-After")
	fs.StringVar(&cfg.Rules, "rules", cfg.Rules, "priority rules file (default: the built-in rules, deployments/rules/storerelay.rules)")
	fs.IntVar(&cfg.MaxSeriesPerDevice, "max-series-per-device", cfg.MaxSeriesPerDevice, "distinct series a device may have within -series-window; new series over it are rejected (0 = unlimited)")
	fs.DurationVar(&cfg.SeriesWindow, "series-window", cfg.SeriesWindow, "sliding window of -max-series-per-device")
	fs.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", cfg.MaxBodyBytes, "largest write request body, compressed or decompressed (413 over it)")
	fs.StringVar(&cfg.AuthTokens, "auth-tokens", cfg.AuthTokens, "file of bearer tokens, one per line, # comments; when set, writes need one (reloaded on SIGHUP)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "certificate file: serve HTTPS (with -tls-key)")
	fs.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "private key file of -tls-cert")
	fs.StringVar(&cfg.ClientCA, "client-ca", cfg.ClientCA, "CA file: require and verify client certificates (mTLS; needs -tls-cert)")
	fs.IntVar(&cfg.CriticalBatchBytes, "critical-batch-bytes", cfg.CriticalBatchBytes, "critical batches are sealed at this many uncompressed bytes...")
	fs.DurationVar(&cfg.CriticalBatchAge, "critical-batch-age", cfg.CriticalBatchAge, "...or when their oldest sample arrived this long ago")
	fs.IntVar(&cfg.NormalBatchBytes, "normal-batch-bytes", cfg.NormalBatchBytes, "normal batch size limit, uncompressed bytes")
	fs.DurationVar(&cfg.NormalBatchAge, "normal-batch-age", cfg.NormalBatchAge, "normal batch age limit")
	fs.IntVar(&cfg.BulkBatchBytes, "bulk-batch-bytes", cfg.BulkBatchBytes, "bulk batch size limit, uncompressed bytes")
	fs.DurationVar(&cfg.BulkBatchAge, "bulk-batch-age", cfg.BulkBatchAge, "bulk batch age limit")
	fs.StringVar(&cfg.RelayID, "relay-id", cfg.RelayID, "relay instance id in batch headers (default: the host name)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "on SIGTERM, time to publish what is sealed before exiting (the rest stays on disk)")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "json or text")
	fs.Int64Var(&cfg.MemoryLimit, "memory-limit", cfg.MemoryLimit, "soft limit of the Go heap and runtime in bytes (runtime/debug.SetMemoryLimit): the GC runs harder near it; 0 = none (GOMEMLIMIT then applies)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.RelayID == "" {
		cfg.RelayID = relayID()
	}
	return cfg, cfg.Validate()
}

// relayID is the host name reduced to printable ASCII without spaces.
func relayID() string {
	h, _ := os.Hostname()
	h = strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' {
			return -1
		}
		return r
	}, h)
	return h[:min(len(h), 255)]
}

// ConfigError names the invalid field by its flag name.
type ConfigError = envconfig.FieldError

// recordBytes bounds one inbox record and one sealed batch: stamping the
// store label can nearly double a body of tiny series.
func (c *Config) recordBytes() int {
	return int(2*c.MaxBodyBytes) + max(c.CriticalBatchBytes, c.NormalBatchBytes, c.BulkBatchBytes) + 64<<10
}

// Validate checks c.
func (c *Config) Validate() error {
	positive := func(field string, v int64) error {
		if v <= 0 {
			return &ConfigError{Field: field, Err: fmt.Errorf("%d is not positive", v)}
		}
		return nil
	}
	switch {
	case c.Store == "":
		return &ConfigError{Field: "store", Err: errors.New("required")}
	case !stream.ValidStore(c.Store):
		return &ConfigError{Field: "store", Err: fmt.Errorf("%q: want 1-64 of [A-Za-z0-9_-]", c.Store)}
	case c.DataDir == "":
		return &ConfigError{Field: "data-dir", Err: errors.New("required")}
	case c.NATSURL == "":
		return &ConfigError{Field: "nats-url", Err: errors.New("required")}
	case c.MemoryLimit < 0:
		return &ConfigError{Field: "memory-limit", Err: fmt.Errorf("%d is negative", c.MemoryLimit)}
	case c.UplinkRate < 0:
		return &ConfigError{Field: "uplink-rate", Err: fmt.Errorf("%d is negative", c.UplinkRate)}
	case c.BufferMaxAge < 0:
		return &ConfigError{Field: "buffer-max-age", Err: fmt.Errorf("%s is negative", c.BufferMaxAge)}
	case c.MaxSeriesPerDevice < 0:
		return &ConfigError{Field: "max-series-per-device", Err: fmt.Errorf("%d is negative", c.MaxSeriesPerDevice)}
	case c.SeriesWindow <= 0:
		return &ConfigError{Field: "series-window", Err: fmt.Errorf("%s is not positive", c.SeriesWindow)}
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return &ConfigError{Field: "tls-key", Err: errors.New("-tls-cert and -tls-key go together")}
	case c.ClientCA != "" && c.TLSCert == "":
		return &ConfigError{Field: "client-ca", Err: errors.New("needs -tls-cert and -tls-key")}
	case c.ShutdownTimeout <= 0:
		return &ConfigError{Field: "shutdown-timeout", Err: fmt.Errorf("%s is not positive", c.ShutdownTimeout)}
	case len(c.RelayID) > 255 || strings.ContainsFunc(c.RelayID, func(r rune) bool { return r <= ' ' || r > '~' }):
		return &ConfigError{Field: "relay-id", Err: fmt.Errorf("%q: want up to 255 printable ASCII characters without spaces", c.RelayID)}
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"max-body-bytes", c.MaxBodyBytes}, {"inbox-max-bytes", c.InboxMaxBytes},
		{"critical-batch-bytes", int64(c.CriticalBatchBytes)}, {"normal-batch-bytes", int64(c.NormalBatchBytes)}, {"bulk-batch-bytes", int64(c.BulkBatchBytes)},
		{"critical-batch-age", int64(c.CriticalBatchAge)}, {"normal-batch-age", int64(c.NormalBatchAge)}, {"bulk-batch-age", int64(c.BulkBatchAge)},
		{"buffer-max-bytes", c.BufferMaxBytes},
	} {
		if err := positive(f.name, f.v); err != nil {
			return err
		}
	}
	if c.MaxBodyBytes > seal.MaxSectionLen/2 {
		return &ConfigError{Field: "max-body-bytes", Err: fmt.Errorf("%d is over %d, the largest an inbox record section can hold", c.MaxBodyBytes, seal.MaxSectionLen/2)}
	}
	if c.BufferMaxBytes < 4*int64(c.recordBytes()) {
		return &ConfigError{Field: "buffer-max-bytes", Err: fmt.Errorf("%d is below 4 batches of the largest size (%d bytes; lower -max-body-bytes or the batch sizes)", c.BufferMaxBytes, c.recordBytes())}
	}
	return nil
}
