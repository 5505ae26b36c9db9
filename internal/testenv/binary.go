package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// packages maps a binary name to the Go package it is built from.
var packages = map[string]string{
	"victoria-metrics": "github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics",
	"vmagent":          "github.com/VictoriaMetrics/VictoriaMetrics/app/vmagent",
	"nats-server":      "github.com/nats-io/nats-server/v2",
	"storerelay":       "tillpipe/cmd/storerelay",
	"ingester":         "tillpipe/cmd/ingester",
	"collector":        "tillpipe/cmd/collector",
}

var (
	buildMu  sync.Mutex
	built    = map[string]string{}
	buildDir string
)

// Binary returns the path of a runnable binary by name (see packages). The
// third-party servers come from $TILLPIPE_BIN_DIR when `make` built them
// there; everything else (and everything when the variable is unset) is
// built once per test process with `go build` from the versions in go.mod,
// so a test never runs a stale tillpipe binary.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	pkg, ok := packages[name]
	if !ok {
		tb.Fatalf("testenv: unknown binary %q", name)
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[name]; ok {
		return p
	}
	if dir := os.Getenv("TILLPIPE_BIN_DIR"); dir != "" && filepath.Dir(pkg) != "tillpipe/cmd" {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			built[name] = p
			return p
		}
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "tillpipe-testbin-")
		if err != nil {
			tb.Fatalf("testenv: %v", err)
		}
		buildDir = d // removed by the OS temp cleaner; binaries are shared by every test in the process
	}
	out := filepath.Join(buildDir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = ModuleRoot(tb)
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("testenv: go build %s: %v\n%s", pkg, err, b)
	}
	built[name] = out
	return out
}

// ModuleRoot is the directory holding tillpipe's go.mod.
func ModuleRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatalf("testenv: %v", fmt.Errorf("no go.mod above the working directory"))
		}
		dir = parent
	}
}
