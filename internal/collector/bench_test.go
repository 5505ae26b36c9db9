package collector

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"

	"tillpipe/internal/collector/docker/dockertest"
)

// benchTree builds a cgroup v2 tree of n Docker containers (copies of the
// pos-api fixture) and the engine's answers for them.
func benchTree(b *testing.B, n int) (cgroupRoot, dockerDir string) {
	b.Helper()
	dir := b.TempDir()
	cgroupRoot, dockerDir = filepath.Join(dir, "cgroup"), filepath.Join(dir, "docker")
	src := filepath.Join("testdata/cgroup/v2-docker/system.slice", "docker-"+posAPI+".scope")
	if err := os.MkdirAll(filepath.Join(dockerDir, "containers"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.CopyFS(cgroupRoot, os.DirFS("testdata/cgroup/v2-docker")); err != nil {
		b.Fatal(err)
	}
	var list []map[string]any
	readJSON(b, "testdata/docker/containers.json", &list)
	var insp map[string]any
	readJSON(b, filepath.Join("testdata/docker/containers", posAPI+".json"), &insp)
	var out []map[string]any
	for i := range n {
		id := fmt.Sprintf("%064x", i+1)
		if err := os.CopyFS(filepath.Join(cgroupRoot, "system.slice", "docker-"+id+".scope"), os.DirFS(src)); err != nil {
			b.Fatal(err)
		}
		e := clone(b, list[0])
		e["Id"], e["Names"] = id, []string{fmt.Sprintf("/svc-%02d", i)}
		out = append(out, e)
		in := clone(b, insp)
		in["Id"], in["Name"] = id, fmt.Sprintf("/svc-%02d", i)
		writeJSON(b, filepath.Join(dockerDir, "containers", id+".json"), in)
	}
	writeJSON(b, filepath.Join(dockerDir, "containers.json"), out)
	return cgroupRoot, dockerDir
}

func readJSON(b *testing.B, path string, v any) {
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		b.Fatal(err)
	}
}

func writeJSON(b *testing.B, path string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
}

func clone(b *testing.B, m map[string]any) map[string]any {
	data, err := json.Marshal(m)
	if err != nil {
		b.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(data, &c); err != nil {
		b.Fatal(err)
	}
	return c
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCycle measures one 15 s cycle for 30 containers: discover and
// read the cgroups, list the engine's containers (inspecting none: their
// status is unchanged), read /proc, build the series, marshal the
// WriteRequest and snappy-compress it as the client does. cpu-ns/cycle is
// the process's CPU time (getrusage), which includes the in-process fake
// engine's share of the list request.
func BenchmarkCycle(b *testing.B) {
	for _, bc := range []struct {
		name   string
		docker bool
	}{{"containers=30/docker", true}, {"containers=30/no_docker", false}} {
		b.Run(bc.name, func(b *testing.B) {
			cg, dd := benchTree(b, 30)
			opts := Options{Device: "till-042", CgroupRoot: cg, ProcRoot: "testdata/proc", Statfs: fixedStatfs, NoDocker: !bc.docker}
			if bc.docker {
				opts.DockerSocket = dockertest.Start(b, dd).Socket
			}
			c, err := New(opts)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			var compressed []byte
			var series, bodyBytes, packed int
			a, err := NewAgent(c, func(body []byte, n int) {
				compressed = snappy.Encode(compressed[:cap(compressed)], body)
				series, bodyBytes, packed = n, len(body), len(compressed)
			}, AgentOptions{Device: "till-042"})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			a.Cycle(ctx, time.Now()) // first cycle interns the label sets and inspects
			for src, n := range c.errCount {
				if n != 0 {
					b.Fatalf("source %s: %v errors", src, n)
				}
			}
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			for b.Loop() {
				a.Cycle(ctx, time.Now())
			}
			cpu := cpuTime(b) - cpu0
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/cycle")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/cycle")
			b.ReportMetric(float64(series), "series/cycle")
			b.ReportMetric(float64(bodyBytes), "body-bytes/cycle")
			b.ReportMetric(float64(packed), "snappy-bytes/cycle")
		})
	}
}
