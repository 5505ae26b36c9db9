// Package testenv starts the real servers tillpipe's tests talk to over
// loopback: nats-server with JetStream (in-process, as nats.go's own tests
// do) and VictoriaMetrics (the binary built from the module pinned in
// go.mod). Nothing here is a mock.
package testenv

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATS is an in-process nats-server with JetStream that a test can stop and
// start again on the same port and store directory, to simulate an outage.
// It is safe for concurrent use.
type NATS struct {
	tb   testing.TB
	opts server.Options

	mu  sync.Mutex
	srv *server.Server
}

// NATSOptions tweaks the server; the zero value is a single JetStream server.
type NATSOptions struct {
	// ConfigFile, when set, is loaded first (accounts, users, permissions);
	// port, JetStream and the store directory are then set by StartNATS.
	ConfigFile string
	// MaxStore bounds JetStream file storage (0: unlimited).
	MaxStore int64
}

// StartNATS starts a JetStream server on a free loopback port with its store
// under t.TempDir(), and shuts it down when the test ends.
func StartNATS(tb testing.TB, o NATSOptions) *NATS {
	tb.Helper()
	var opts server.Options
	if o.ConfigFile != "" {
		fo, err := server.ProcessConfigFile(o.ConfigFile)
		if err != nil {
			tb.Fatalf("load nats config %s: %v", o.ConfigFile, err)
		}
		opts = *fo
	}
	opts.Host = "127.0.0.1"
	opts.Port = freePort(tb)
	opts.JetStream = true
	opts.StoreDir = tb.TempDir()
	opts.NoSigs = true
	opts.NoLog = true
	if o.MaxStore > 0 {
		opts.JetStreamMaxStore = o.MaxStore
	}
	n := &NATS{tb: tb, opts: opts}
	n.Start()
	tb.Cleanup(n.Stop)
	return n
}

// URL is the client URL, stable across Stop and Start.
func (n *NATS) URL() string { return fmt.Sprintf("nats://%s:%d", n.opts.Host, n.opts.Port) }

// Start (re)starts the server on the same port and store directory.
func (n *NATS) Start() {
	n.tb.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		return
	}
	opts := n.opts // NewServer keeps a pointer; give each run its own copy
	var lastErr error
	for range 50 { // the port may linger briefly after a Stop
		s, err := server.NewServer(&opts)
		if err != nil {
			n.tb.Fatalf("nats-server: %v", err)
		}
		go s.Start()
		if s.ReadyForConnections(10 * time.Second) {
			n.srv = s
			return
		}
		s.Shutdown()
		s.WaitForShutdown()
		lastErr = fmt.Errorf("not ready on port %d", opts.Port)
		time.Sleep(100 * time.Millisecond)
	}
	n.tb.Fatalf("nats-server: %v", lastErr)
}

// Stop shuts the server down (an outage); Start brings it back.
func (n *NATS) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
}

// Server is the running server, nil while stopped.
func (n *NATS) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// freePort asks the kernel for a free loopback TCP port.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// FreePort returns a free loopback TCP port for a child process to listen on.
func FreePort(tb testing.TB) int { return freePort(tb) }
