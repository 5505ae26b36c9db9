package collector

import (
	"context"
	"testing"
	"time"

	"tillpipe/internal/coldbench"
	"tillpipe/internal/collector/collectortest"
	"tillpipe/internal/collector/docker/dockertest"
)

// BenchmarkCycle measures one 15 s cycle for 30 containers: discover and
// read the cgroups, list the engine's containers (inspecting none: their
// status is unchanged), read /proc, build the series, marshal the
// WriteRequest and snappy-compress it as the client does. cpu-ns/cycle is
// the process's CPU time (getrusage), which includes the in-process fake
// engine's share of the list request.
//
// containers=30/docker lists every cycle, as a collector sampled without
// Agent.Run does (or with the engine's event stream down);
// containers=30/docker_events follows the engine's events, as Agent.Run
// does, so that without events the cycles do not list (but one in
// docker.ReconcileCycles).
//
// The _cold cases write 96 MiB before each cycle (not measured), evicting
// the L2 and the TLBs, standing in for the 15 s between a till's cycles (a
// model, not a measurement of a till). On a quiet host they agree within a
// few percent from run to run, where the binary at 15 s
// (BenchmarkBinaryCycle in cmd/collector) varies by a tenth or more; on a
// busy one they spread by a third (the eviction competes for the memory
// bus), so alternate the builds compared and run each several times. Under
// valgrind --tool=cachegrind --cache-sim=yes they count a cold cycle's
// simulated cache misses, whatever the host does. Run them with -cpu 1, as
// the collector runs:
//
//	go test -run '^$' -bench 'BenchmarkCycle/containers=30/_cold' -benchtime 300x -cpu 1 ./internal/collector/
func BenchmarkCycle(b *testing.B) {
	for _, bc := range []struct {
		name                 string
		docker, events, cold bool
	}{
		{"containers=30/docker", true, false, false},
		{"containers=30/docker_events", true, true, false},
		{"containers=30/no_docker", false, false, false},
		{"containers=30/docker_events_cold", true, true, true},
		{"containers=30/no_docker_cold", false, false, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := collectortest.Tree(b, collectortest.MemDir(b), "testdata", 30)
			opts := Options{Device: "till-042", CgroupRoot: f.CgroupRoot, ProcRoot: f.ProcRoot, Statfs: fixedStatfs, NoDocker: !bc.docker}
			if bc.docker {
				opts.DockerSocket = dockertest.Start(b, f.DockerDir).Socket
			}
			c, err := New(opts)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if bc.events {
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- c.events.Run(ctx) }()
				defer func() { cancel(); <-done }()
				for !c.events.Connected() {
					time.Sleep(time.Millisecond)
				}
			}
			var held []byte
			var series, packed int
			a, err := NewAgent(c, func(req []byte, n int) {
				held = append(held[:0], req...) // as sender.Enqueue copies it
				series, packed = n, len(req)
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
			var cpu time.Duration
			if bc.cold {
				evict := coldbench.NewEvictor()
				for b.Loop() {
					b.StopTimer()
					evict.Evict()
					cpu0 := coldbench.ProcessCPU(b)
					b.StartTimer()
					a.Cycle(ctx, time.Now())
					cpu += coldbench.ProcessCPU(b) - cpu0
				}
			} else {
				cpu0 := coldbench.ProcessCPU(b)
				for b.Loop() {
					a.Cycle(ctx, time.Now())
				}
				cpu = coldbench.ProcessCPU(b) - cpu0
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/cycle")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/cycle")
			b.ReportMetric(float64(series), "series/cycle")
			b.ReportMetric(float64(len(c.body.buf)), "body-bytes/cycle")
			b.ReportMetric(float64(packed), "snappy-bytes/cycle")
		})
	}
}
