// Command bench is tillpipe's fleet load harness and `make run`: it starts
// real nats-server, VictoriaMetrics, vmagent, store relays and ingesters as
// child processes, drives them with a simulated fleet of tills speaking
// remote-write, measures every process from outside (/proc, /metrics, the
// stream, the WAN links, the disks) and writes bench/results/<scenario>.md
// and .json with PNG plots. See bench/README.md.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

// run parses args and runs one scenario.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := ParseOptions(args, stderr)
	if err != nil {
		return err
	}
	return Run(ctx, opts, stdout, stderr)
}
