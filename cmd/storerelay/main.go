// Command storerelay runs on every store server: it accepts Prometheus
// remote-write from the store's tills, buffers it on disk by priority class
// and publishes sealed, compressed batches to JetStream. See run.go for the
// wiring and README.md for the figures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "storerelay:", err)
		os.Exit(1)
	}
}
