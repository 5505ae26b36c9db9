package testenv

import (
	"bytes"
	"net/http"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is one of tillpipe's binaries running as a child of the test, so
// that it can be killed like the real thing. Its output is kept and logged
// when the test fails. It dies with the test binary (Pdeathsig).
type Process struct {
	Cmd *exec.Cmd

	mu  sync.Mutex
	log bytes.Buffer
}

func (p *Process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.Write(b)
}

// StartProcess starts the binary name (see [Binary]) with args and stops it
// with SIGTERM when the test ends.
func StartProcess(tb testing.TB, name string, args ...string) *Process {
	tb.Helper()
	p := &Process{Cmd: exec.Command(Binary(tb, name), args...)}
	p.Cmd.Stdout, p.Cmd.Stderr = p, p
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.Cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	tb.Cleanup(func() {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		_ = p.Cmd.Wait()
		if tb.Failed() {
			p.mu.Lock()
			tb.Logf("%s output:\n%s", name, tail(p.log.Bytes(), 8000))
			p.mu.Unlock()
		}
	})
	return p
}

// WaitHealthy polls url (a /healthz) until it answers 200, failing the test
// after 30 s.
func WaitHealthy(tb testing.TB, url string) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("%s not healthy after 30s", url)
}
