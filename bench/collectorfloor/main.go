// Command collectorfloor makes the system calls of a steady collector
// cycle and nothing else, every interval at the collector's instants, so
// that what a cycle costs the collector can be set against what the same
// system calls cost alone. BenchmarkBinaryCycle/containers=30/floor in
// cmd/collector builds and runs it, with a config it took from a running
// collector (the files it holds open, the filesystems it reported, its
// last request), and measures it as it measures the collector.
//
// Each cycle: a wait on a timerfd in the netpoller, a pread of every file
// into one buffer, a statfs(2) of every filesystem, and the request
// written whole on a kept TCP connection and its 204 read back; the same
// raw system calls as the collector's (package rawsys). It allocates
// nothing per cycle and runs until SIGTERM.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"tillpipe/internal/collector"
	"tillpipe/internal/collector/rawsys"
)

// Config is what the floor does every cycle.
type Config struct {
	Files    []string // preads, as the collector reads the files it holds open
	Statfs   []string // statfs(2): the collector's filesystems
	Addr     string   // host:port of the relay
	Request  []byte   // a whole HTTP/1.1 request, answered 204
	Device   string   // the collector's device id, for its offset
	Interval time.Duration
}

func main() {
	config := flag.String("config", "", "JSON Config file")
	flag.Parse()
	if err := run(*config); err != nil {
		fmt.Fprintln(os.Stderr, "collectorfloor:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	// Unknown fields are refused, and what a cycle needs must be there:
	// the benchmark writes this file from a copy of Config, and a field
	// renamed on one side must not leave a floor that reads nothing.
	var cfg Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case cfg.Interval <= 0:
		return fmt.Errorf("%s: interval %v", path, cfg.Interval)
	case len(cfg.Files) == 0, cfg.Addr == "", len(cfg.Request) == 0:
		return fmt.Errorf("%s: %d files, address %q, a %d-byte request: all are needed", path, len(cfg.Files), cfg.Addr, len(cfg.Request))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	fds := make([]int, 0, len(cfg.Files))
	for _, f := range cfg.Files {
		fd, err := rawsys.Open(f, syscall.O_NOATIME)
		if err != nil {
			return fmt.Errorf("open %s: %w", f, err)
		}
		fds = append(fds, fd)
	}
	conn, err := rawsys.Dial(ctx, &net.Dialer{}, "tcp", cfg.Addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	timer, err := rawsys.NewTimer()
	if err != nil {
		return err
	}
	defer timer.Close()
	offset := collector.Offset(cfg.Device, cfg.Interval)
	buf, answer := make([]byte, 8<<10), make([]byte, 4<<10)
	var sfs syscall.Statfs_t
	for {
		err := timer.Wait(ctx, collector.Next(time.Now(), cfg.Interval, offset))
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, rawsys.ErrClockStepped) {
			return err
		}
		for i, fd := range fds {
			if _, err := rawsys.Pread(fd, buf, 0); err != nil {
				return fmt.Errorf("read %s: %w", cfg.Files[i], err)
			}
		}
		for _, m := range cfg.Statfs {
			if err := rawsys.Statfs(m, &sfs); err != nil {
				return fmt.Errorf("statfs %s: %w", m, err)
			}
		}
		if _, err := conn.Write(cfg.Request); err != nil {
			return err
		}
		n := 0
		for !bytes.Contains(answer[:n], []byte("\r\n\r\n")) { // a 204: no body
			if n == len(answer) {
				return fmt.Errorf("answer head over %d bytes", n)
			}
			m, err := conn.Read(answer[n:])
			if err != nil {
				return fmt.Errorf("read the answer: %w", err)
			}
			n += m
		}
		if !bytes.HasPrefix(answer[:n], []byte("HTTP/1.1 204 ")) {
			return fmt.Errorf("relay answered %q", answer[:n])
		}
	}
}
