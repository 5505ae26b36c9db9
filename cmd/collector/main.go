// Command collector runs on every till: it samples the containers (cgroups
// and the Docker Engine API) and the device itself every interval and sends
// the samples to the store relay over Prometheus remote-write. See package
// tillpipe/internal/collector.
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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"tillpipe/internal/collector"
	"tillpipe/internal/collector/sender"
	"tillpipe/internal/obs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "collector:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(args, getenv)
	if err != nil {
		return err
	}
	logger, err := obs.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return &ConfigError{Field: "log-level", Err: err}
	}
	slog.SetDefault(logger)
	gcBudget, restore := cfg.tuneRuntime(getenv)
	defer restore()
	if cfg.Device == "" {
		if cfg.Device, err = os.Hostname(); err != nil {
			return fmt.Errorf("get hostname for device: %w", err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	wrapped := prometheus.WrapRegistererWithPrefix("tillpipe_collector_", reg)
	col, err := collector.New(collector.Options{Device: cfg.Device, CgroupRoot: cfg.CgroupRoot, ProcRoot: cfg.ProcRoot,
		DockerSocket: cfg.DockerSocket, NoDocker: cfg.DockerSocket == "", Logger: logger, Registerer: wrapped})
	if err != nil {
		return err
	}
	defer col.Close()
	if cfg.Once {
		return collector.WriteText(stdout, col.Collect(ctx, time.Now()))
	}
	client, hc, err := cfg.client()
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	snd, err := sender.New(client, sender.Options{MaxBytes: cfg.BufferMaxBytes, Logger: logger, Registerer: wrapped})
	if err != nil {
		return err
	}
	agent, err := collector.NewAgent(col, snd.Enqueue, collector.AgentOptions{Interval: cfg.Interval, Device: cfg.Device, Logger: logger, GCBudget: gcBudget})
	if err != nil {
		return err
	}
	// The first part to fail stops the others; SIGTERM stops them all.
	g, ctx := errgroup.WithContext(ctx)
	start := func(f func(context.Context) error) { g.Go(func() error { return f(ctx) }) }
	start(agent.Run)
	start(snd.Run)
	if cfg.Listen != "" {
		start(func(ctx context.Context) error {
			return obs.ListenAndServe(ctx, cfg.Listen, reg, agent.Healthy, logger)
		})
	}
	err = g.Wait()
	flushCtx, cancelFlush := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancelFlush()
	snd.Flush(flushCtx)
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
