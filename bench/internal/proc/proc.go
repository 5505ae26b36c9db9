// Package proc starts and stops the child processes the bench harness
// measures, each in its own process group with a parent-death signal so a
// crashed harness leaves no orphans, and reads their resource use from
// /proc from outside.
package proc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// ErrNotRunning is returned by operations that need a live process.
var ErrNotRunning = errors.New("process not running")

// Spec describes one child process.
type Spec struct {
	Name    string   // short name for logs and reports, e.g. relay-b01s001
	Path    string   // binary
	Args    []string // arguments
	Env     []string // extra environment (added to the harness's own)
	LogPath string   // stdout and stderr go here (appended); empty discards
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL;
	// default 10s.
	StopTimeout time.Duration
}

// Process is a restartable child. It is safe for concurrent use.
type Process struct {
	spec Spec
	log  *slog.Logger

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when cmd exits
	exitErr  error
	starts   int
	cpuPrior float64 // CPU seconds of earlier incarnations (restarts)
	hwmPrior int64   // peak RSS of earlier incarnations
	lastCPU  float64 // last CPU reading of the current incarnation
	lastHWM  int64
}

// New returns a process for spec; it does not start it.
func New(spec Spec, log *slog.Logger) *Process {
	if spec.StopTimeout <= 0 {
		spec.StopTimeout = 10 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Process{spec: spec, log: log.With("component", "proc", "name", spec.Name)}
}

// Name is the spec's name.
func (p *Process) Name() string { return p.spec.Name }

// Start launches the process; it fails if it is running already.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !p.exitedLocked() {
		return fmt.Errorf("start %s: already running as pid %d", p.spec.Name, p.cmd.Process.Pid)
	}
	if p.cmd != nil { // it died on its own: keep what it used
		p.cpuPrior += p.lastCPU
		p.hwmPrior = max(p.hwmPrior, p.lastHWM)
	}
	cmd := exec.Command(p.spec.Path, p.spec.Args...)
	cmd.Env = append(os.Environ(), p.spec.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var logf *os.File
	if p.spec.LogPath != "" {
		if err := os.MkdirAll(filepath.Dir(p.spec.LogPath), 0o755); err != nil {
			return fmt.Errorf("create log dir for %s: %w", p.spec.Name, err)
		}
		f, err := os.OpenFile(p.spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("open log %s: %w", p.spec.LogPath, err)
		}
		fmt.Fprintf(f, "=== %s start #%d: %s %q\n", time.Now().Format(time.RFC3339), p.starts+1, p.spec.Path, p.spec.Args)
		cmd.Stdout, cmd.Stderr, logf = f, f, f
	}
	if err := cmd.Start(); err != nil {
		if logf != nil {
			logf.Close()
		}
		return fmt.Errorf("start %s (%s): %w", p.spec.Name, p.spec.Path, err)
	}
	p.cmd, p.done, p.exitErr = cmd, make(chan struct{}), nil
	p.starts++
	p.lastCPU, p.lastHWM = 0, 0
	done := p.done
	go func() {
		err := cmd.Wait()
		if logf != nil {
			logf.Close()
		}
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(done)
	}()
	p.log.Debug("started", "pid", cmd.Process.Pid)
	return nil
}

// Pid is the process id, 0 when not running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exitedLocked() {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *Process) exitedLocked() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Exited reports whether the process was started and has exited on its own
// (not through Stop or Kill), with its exit error.
func (p *Process) Exited() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false, nil
	}
	if p.exitedLocked() {
		return true, p.exitErr
	}
	return false, nil
}

// Stop sends SIGTERM to the process group, waits up to the stop timeout (or
// ctx), then SIGKILLs the group. Stopping a stopped process is a no-op.
func (p *Process) Stop(ctx context.Context) error {
	return p.stop(ctx, syscall.SIGTERM, p.spec.StopTimeout)
}

// Kill SIGKILLs the process group at once (a crash) and waits for the exit.
func (p *Process) Kill() error {
	return p.stop(context.Background(), syscall.SIGKILL, 10*time.Second)
}

func (p *Process) stop(ctx context.Context, sig syscall.Signal, timeout time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	p.sample() // keep the final CPU and peak RSS of this incarnation
	pid := cmd.Process.Pid
	_ = syscall.Kill(-pid, sig)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		p.log.Warn("no exit after signal, killing", "pid", pid, "signal", sig.String())
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-done
	case <-ctx.Done():
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-done
	}
	// Children of the child (none expected) share the group: make sure.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	p.mu.Lock()
	p.cpuPrior += p.lastCPU
	p.hwmPrior = max(p.hwmPrior, p.lastHWM)
	p.lastCPU, p.lastHWM = 0, 0
	p.cmd = nil
	p.mu.Unlock()
	return nil
}

// Usage is a process's resource use, summed over every incarnation.
type Usage struct {
	CPUSeconds float64 // user+system
	RSSBytes   int64   // current resident set, 0 when not running
	PeakRSS    int64   // VmHWM, the highest over every incarnation
	Running    bool
}

// Sample reads /proc for the current incarnation and returns the totals.
func (p *Process) Sample() Usage {
	return p.sample()
}

func (p *Process) sample() Usage {
	pid := p.Pid()
	var st Stat
	var err error
	if pid > 0 {
		st, err = ReadStat(pid)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	u := Usage{}
	if pid > 0 && err == nil {
		p.lastCPU = max(p.lastCPU, st.CPUSeconds)
		p.lastHWM = max(p.lastHWM, st.PeakRSS)
		u.RSSBytes = st.RSS
		u.Running = true
	}
	u.CPUSeconds = p.cpuPrior + p.lastCPU
	u.PeakRSS = max(p.hwmPrior, p.lastHWM)
	return u
}
