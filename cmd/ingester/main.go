// Command ingester drains the TILL_TELEMETRY JetStream stream into a
// Prometheus-compatible remote-write backend; any number of replicas share
// its durable consumers. See package tillpipe/internal/ingester.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"tillpipe/internal/ingester"
	"tillpipe/internal/obs"
	"tillpipe/internal/remotewrite"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "ingester:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(args, getenv, stdout)
	if err != nil {
		return err
	}
	logger, err := obs.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return &ConfigError{Field: "log-level", Err: err}
	}
	slog.SetDefault(logger)
	headers, _ := cfg.headers() // checked by Validate
	nopts := []nats.Option{nats.Name("tillpipe-ingester"), nats.MaxReconnects(-1)}
	if cfg.NATSCreds != "" {
		nopts = append(nopts, nats.UserCredentials(cfg.NATSCreds))
	}
	nc, err := nats.Connect(cfg.NATSURL, nopts...)
	if err != nil {
		return fmt.Errorf("connect to nats %s: %w", cfg.NATSURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	setup := cfg.setupOptions()
	if err := ingester.Setup(ctx, js, setup); err != nil {
		return err
	}
	logger.Info("stream and consumers ready", "setup_only", cfg.SetupOnly)
	if cfg.SetupOnly {
		return nil
	}
	client, err := remotewrite.NewClient(remotewrite.ClientOptions{URL: cfg.BackendURL, Encoding: cfg.BackendEncoding,
		Headers: headers, Timeout: cfg.BackendTimeout, UserAgent: "tillpipe-ingester"})
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ing, err := ingester.New(ingester.Options{JetStream: js, Backend: client, Concurrency: cfg.Concurrency,
		BatchMaxSamples: cfg.BatchMaxSamples, Consumer: setup.Consumer, ShutdownTimeout: cfg.ShutdownTimeout,
		Logger: logger, Registerer: prometheus.WrapRegistererWithPrefix("tillpipe_ingester_", reg)})
	if err != nil {
		return err
	}
	// The first part to fail stops the others; SIGTERM stops them all.
	g, ctx := errgroup.WithContext(ctx)
	start := func(f func(context.Context) error) { g.Go(func() error { return f(ctx) }) }
	start(ing.Run)
	start(func(ctx context.Context) error {
		return obs.ListenAndServe(ctx, cfg.Listen, reg, func() error {
			if !nc.IsConnected() {
				return fmt.Errorf("nats %s", nc.Status())
			}
			return nil
		}, logger)
	})
	err = g.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
