package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"tillpipe/internal/buffer"
	"tillpipe/internal/classify"
	"tillpipe/internal/intake"
	"tillpipe/internal/obs"
	"tillpipe/internal/seal"
	"tillpipe/internal/uplink"
	"tillpipe/internal/wire"
)

// run wires intake -> inbox -> seal -> outbox -> uplink and serves until ctx
// ends. On-disk layout under -data-dir:
//
//	inbox/requests/                 buffer queue: one record per request, a section per class
//	outbox/{critical,normal,bulk}/  buffer queues: one sealed wire frame per record
//	seal/<class>.state              last sealed seq and inbox record per class, written
//	                                when the outbox may drop the class's tail frame
//
// Shutdown: stop HTTP (requests in flight finish), seal everything the inbox
// holds, give the uplink -shutdown-timeout to publish, close the buffers.
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
	if cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	rules := classify.Default()
	if cfg.Rules != "" {
		if rules, err = classify.Load(cfg.Rules); err != nil {
			return &ConfigError{Field: "rules", Err: err}
		}
	}
	var tokens *intake.Tokens
	if cfg.AuthTokens != "" {
		if tokens, err = intake.LoadTokens(cfg.AuthTokens); err != nil {
			return &ConfigError{Field: "auth-tokens", Err: err}
		}
	}
	tlsConf, err := cfg.tlsConfig()
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	wrapped := prometheus.WrapRegistererWithPrefix("tillpipe_relay_", reg)

	inbox, err := seal.OpenInbox(filepath.Join(cfg.DataDir, "inbox"), seal.InboxOptions{MaxRecordBytes: cfg.recordBytes(), Logger: logger})
	if err != nil {
		return err
	}
	defer inbox.Close()
	outbox, err := seal.OpenOutbox(filepath.Join(cfg.DataDir, "outbox"), seal.OutboxOptions{
		MaxBytes: cfg.BufferMaxBytes, MaxAge: cfg.BufferMaxAge, MaxRecordBytes: cfg.recordBytes(),
		Logger: logger, Registerer: wrapped,
	})
	if err != nil {
		return err
	}
	defer outbox.Close()
	stage, err := seal.New(filepath.Join(cfg.DataDir, "seal"), inbox, outbox, seal.Options{
		Store: cfg.Store, Relay: cfg.RelayID,
		Critical:           seal.Limits{MaxBytes: cfg.CriticalBatchBytes, MaxAge: cfg.CriticalBatchAge},
		Normal:             seal.Limits{MaxBytes: cfg.NormalBatchBytes, MaxAge: cfg.NormalBatchAge},
		Bulk:               seal.Limits{MaxBytes: cfg.BulkBatchBytes, MaxAge: cfg.BulkBatchAge},
		InboxPressureBytes: cfg.InboxMaxBytes / 2,
		Logger:             logger, Registerer: wrapped,
	})
	if err != nil {
		return err
	}
	handler, err := intake.New(intake.Options{
		Store: cfg.Store, Inbox: inbox, InboxMaxBytes: cfg.InboxMaxBytes, Rules: rules,
		MaxBodyBytes: cfg.MaxBodyBytes, MaxSeriesPerDevice: cfg.MaxSeriesPerDevice, SeriesWindow: cfg.SeriesWindow,
		Tokens: tokens, Logger: logger, Registerer: wrapped,
	})
	if err != nil {
		return err
	}
	nc, err := uplink.Dial(ctx, cfg.NATSURL, cfg.NATSCreds, cfg.Store, logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	up, err := uplink.New(uplink.Options{Store: cfg.Store, Conn: nc, Outbox: outbox.Group, Rate: cfg.UplinkRate, Logger: logger, Registerer: wrapped})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}
	sealed := make(chan struct{})
	mux := obs.Mux(reg, func() error {
		select {
		case <-sealed:
			return errors.New("sealing stopped; see the logs")
		default:
			return nil
		}
	})
	mux.Handle("POST /api/v1/write", handler)
	logger.Info("storerelay started", "store", cfg.Store, "listen", ln.Addr().String(), "tls", tlsConf != nil,
		"client_ca", cfg.ClientCA != "", "auth_tokens", tokens.Len(), "nats", cfg.NATSURL, "data_dir", cfg.DataDir)

	sealCtx, stopSeal := context.WithCancel(context.WithoutCancel(ctx))
	upCtx, stopUplink := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSeal()
	defer stopUplink()
	var wg sync.WaitGroup
	var sealErr, upErr error
	wg.Go(func() { defer close(sealed); sealErr = stage.Run(sealCtx) })
	wg.Go(func() { upErr = up.Run(upCtx) })
	if cfg.AuthTokens != "" {
		wg.Go(func() { reloadTokens(sealCtx, cfg.AuthTokens, handler, logger) })
	}

	serveErr := obs.Serve(ctx, ln, mux, logger) // returns once ctx ends and requests in flight finished
	handler.Close()
	logger.Info("stopping: sealing the inbox")
	stopSeal()
	<-sealed
	waitSent(outbox.Group, cfg.ShutdownTimeout)
	stopUplink()
	wg.Wait()
	logger.Info("stopped", "outbox_bytes", outbox.Bytes())
	return errors.Join(serveErr, sealErr, upErr)
}

// waitSent polls until every outbox queue is acknowledged up to its tail or
// timeout passes; what is left stays on disk for the next start.
func waitSent(outbox *buffer.Group, timeout time.Duration) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		done := true
		for _, c := range wire.Classes {
			q := seal.Queue(outbox, c)
			done = done && q.Committed() >= q.NextIndex()
		}
		if done {
			return
		}
		select {
		case <-deadline.C:
			return
		case <-t.C:
		}
	}
}

// reloadTokens reloads the tokens file on SIGHUP until ctx ends; a file that
// does not load keeps the old tokens.
func reloadTokens(ctx context.Context, path string, h *intake.Handler, logger *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			t, err := intake.LoadTokens(path)
			if err != nil {
				logger.Error("reload auth tokens; keeping the old ones", "err", err)
				continue
			}
			h.SetTokens(t)
			logger.Info("auth tokens reloaded", "tokens", t.Len())
		}
	}
}

// tlsConfig is nil without -tls-cert; with -client-ca it requires and
// verifies client certificates.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if c.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, &ConfigError{Field: "tls-cert", Err: err}
	}
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.ClientCA != "" {
		pem, err := os.ReadFile(c.ClientCA)
		if err != nil {
			return nil, &ConfigError{Field: "client-ca", Err: err}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &ConfigError{Field: "client-ca", Err: fmt.Errorf("%s holds no PEM certificate", c.ClientCA)}
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}
