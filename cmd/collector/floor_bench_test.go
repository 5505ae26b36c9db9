package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// floorConfig is bench/collectorfloor's Config, written as JSON.
type floorConfig struct {
	Files    []string
	Statfs   []string
	Addr     string
	Request  []byte
	Device   string
	Interval time.Duration
}

// benchFloor measures the floor of a collector cycle: a process that makes
// the system calls of a steady cycle and does nothing else. It preads the
// files the collector holds open (memory.max and memory.events aside: the
// collector reads those only when they change), statfs()es the filesystems
// the collector reported (not those of the fixture's mount table whose
// statfs fails here, which the collector tries every cycle: about two
// system calls fewer), and POSTs the collector's own last request to the
// same relay stand-in on a kept connection, waking on a timerfd at the
// collector's instants. The collector runs first, for two cycles, to find
// these; the floor is then measured as the collector is. What a cycle of
// the collector costs beyond this is the Go runtime's and ours: parsing,
// building the request, HTTP and scheduling.
//
// The floor is bench/collectorfloor, built as the collector is and run
// with GOMAXPROCS 1 and GOGC off as the collector runs; it allocates
// nothing per cycle.
func benchFloor(b *testing.B, bin string) {
	s := newBenchSetup(b)
	c := startProc(b, bin, s.collectorArgs(b), nil)
	for range 2 {
		s.wait(b, c)
	}
	files := openFiles(b, c.cmd.Process.Pid, s.cgroupRoot, s.procRoot)
	c.stop(b)
	body, header, mounts := s.relay.last()
	if len(files) == 0 || len(body) == 0 {
		b.Fatalf("collector left %d files and a %d-byte request to copy", len(files), len(body))
	}

	req, err := http.NewRequest(http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	// The collector's headers, as the relay stand-in got them (net/http
	// moves Host and Content-Length out of the map; Write puts them back).
	req.Header = header
	var wire bytes.Buffer
	if err := req.Write(&wire); err != nil {
		b.Fatal(err)
	}
	u, _ := url.Parse(s.url)
	interval, _ := time.ParseDuration(s.interval)
	cfg, err := json.Marshal(floorConfig{Files: files, Statfs: mounts, Addr: u.Host, Request: wire.Bytes(),
		Device: benchDevice, Interval: interval})
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "floor.json")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		b.Fatal(err)
	}
	p := startProc(b, build(b, "tillpipe/bench/collectorfloor"), []string{"-config", path}, []string{"GOMAXPROCS=1", "GOGC=off"})
	s.measure(b, p)
	if n := s.relay.bad.Load(); n > 0 {
		b.Fatalf("relay could not decode %d requests", n)
	}
	if out := p.logs.String(); out != "" {
		b.Fatalf("floor wrote:\n%s", out)
	}
	b.ReportMetric(float64(len(files)), "preads/cycle")
	b.ReportMetric(float64(len(mounts)), "statfs/cycle")
}

// openFiles lists the regular files under the roots that pid holds open
// and reads every cycle. A file of pid's own under the real /proc
// (/proc/net/dev is /proc/self/net/dev) is named by /proc/self, the
// floor's own.
func openFiles(b *testing.B, pid int, roots ...string) []string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	own := fmt.Sprintf("/proc/%d/", pid)
	var files []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || !slices.ContainsFunc(roots, func(r string) bool { return strings.HasPrefix(target, r+"/") }) {
			continue
		}
		if rest, ok := strings.CutPrefix(target, own); ok {
			target = "/proc/self/" + rest
		}
		switch filepath.Base(target) {
		case "memory.max", "memory.events", "memory.limit_in_bytes":
			continue // read when they change, or when a listing found them, not every cycle
		}
		if st, err := os.Stat(target); err == nil && st.Mode().IsRegular() {
			files = append(files, target)
		}
	}
	slices.Sort(files)
	return files
}
