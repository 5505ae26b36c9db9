package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"tillpipe/internal/testenv"
)

// BenchmarkRelay runs the relay binary as a child process and pushes scrapes
// of a simulated store (every till once per iteration, 8 writers at a time)
// through it to a real nats-server. After the loop the relay is stopped with
// SIGTERM and its CPU time (user+system, all of it: start-up, intake, fsync,
// sealing, publishing, shutdown) and peak RSS are reported, with the bytes
// per sample published on the stream.
//
// offline=true keeps NATS down: the outbox then holds everything, and
// disk-bytes/sample is the outbox size over the samples sealed.
//
// TILLPIPE_BENCH_RELAY names a prebuilt relay binary to measure instead of
// this tree's (an older build, for a before/after comparison on the same
// machine state: alternate the two runs).
func BenchmarkRelay(b *testing.B) {
	for _, tc := range []struct {
		tills   int
		offline bool
	}{{20, false}, {200, false}, {20, true}} {
		b.Run(fmt.Sprintf("tills=%d/offline=%v", tc.tills, tc.offline), func(b *testing.B) {
			c := startCentralB(b)
			if tc.offline {
				c.nats.Stop()
			}
			bin := os.Getenv("TILLPIPE_BENCH_RELAY")
			if bin == "" {
				bin = testenv.Binary(b, "storerelay")
			}
			dir := b.TempDir()
			port := testenv.FreePort(b)
			args := []string{"-store", "s1", "-data-dir", dir, "-nats-url", c.nats.URL(), "-listen", fmt.Sprintf("127.0.0.1:%d", port), "-log-level", "warn"}
			var logs bytes.Buffer
			ch := startChildB(b, bin, args, &logs)
			f := newFleet("s1", tc.tills)
			url := fmt.Sprintf("http://127.0.0.1:%d/api/v1/write", port)
			clients := make([]*clientT, 8)
			for i := range clients {
				clients[i] = newClientT(b, url)
			}
			ts := time.Now().Add(-24 * time.Hour).UnixMilli()
			samples := 0
			bodies := make([][]byte, tc.tills)
			stopProfile := profileChild(b, port)
			for b.Loop() {
				b.StopTimer()
				for i := range f.tills {
					bodies[i], _ = f.scrape(i, ts)
				}
				ts += 15000
				b.StartTimer()
				var wg sync.WaitGroup
				for w := range clients {
					wg.Go(func() {
						for i := w; i < len(bodies); i += len(clients) {
							if err := clients[w].Send(context.Background(), bodies[i]); err != nil {
								b.Error(err)
							}
						}
					})
				}
				wg.Wait()
				samples += 400 * tc.tills
			}
			elapsed := b.Elapsed()
			stopProfile()
			var wan int
			if !tc.offline {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				l := c.waitSamplesB(b, ctx, samples)
				cancel()
				wan = l.bytes
			}
			waitOutboxSealed(b, port, samples)
			outbox := dirBytes(b, filepath.Join(dir, "outbox"))
			cpu, rss := ch.termB(b)
			b.ReportMetric(float64(samples)/elapsed.Seconds(), "samples/s")
			b.ReportMetric(cpu.Seconds()/(float64(samples)/1e6), "cpu-s/Msample")
			b.ReportMetric(float64(rss)/(1<<20), "peak-rss-MiB")
			if tc.offline {
				b.ReportMetric(float64(outbox)/float64(samples), "disk-bytes/sample")
			} else {
				b.ReportMetric(float64(wan)/float64(samples), "wan-bytes/sample")
			}
			if b.Failed() {
				os.Stderr.Write(logs.Bytes())
			}
		})
	}
}

// profileChild takes a CPU profile of the relay on port for the first
// seconds of the benchmark loop, when TILLPIPE_BENCH_CPUPROFILE names a file
// for it (the sub-benchmark's name is appended; the length is
// TILLPIPE_BENCH_CPUPROFILE_SECONDS, default 3: keep it under -benchtime).
// Unlike BenchmarkRelayInProcess's profile it holds the relay alone. The
// returned func waits for the profile and writes it.
func profileChild(b *testing.B, port int) func() {
	path := os.Getenv("TILLPIPE_BENCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	path += "." + strings.NewReplacer("/", "_", "=", "").Replace(b.Name())
	seconds := cmp.Or(os.Getenv("TILLPIPE_BENCH_CPUPROFILE_SECONDS"), "3")
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%s", port, seconds))
		if err != nil {
			b.Errorf("cpu profile: %v", err)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: %s", resp.Status, body)
		}
		if err == nil {
			err = os.WriteFile(path, body, 0o644)
		}
		if err != nil {
			b.Errorf("cpu profile: %v", err)
		}
	}()
	return func() { <-done }
}

// BenchmarkRelayInProcess is BenchmarkRelay's online load against a relay
// started in-process with run, for -cpuprofile and -memprofile: the profile
// also holds the load generator (fleetsim, snappy encoding, HTTP client).
func BenchmarkRelayInProcess(b *testing.B) {
	c := startCentralB(b)
	dir := b.TempDir()
	port := testenv.FreePort(b)
	args := []string{"-store", "s1", "-data-dir", dir, "-nats-url", c.nats.URL(), "-listen", fmt.Sprintf("127.0.0.1:%d", port), "-log-level", "warn",
		"-memory-limit", "0"} // the limit would cover the load generator and NATS too
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, func(string) string { return "" }, io.Discard) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	waitHealthy(b, fmt.Sprintf("http://127.0.0.1:%d/healthz", port), done)
	f := newFleet("s1", 20)
	url := fmt.Sprintf("http://127.0.0.1:%d/api/v1/write", port)
	clients := make([]*clientT, 8)
	for i := range clients {
		clients[i] = newClientT(b, url)
	}
	ts := time.Now().Add(-24 * time.Hour).UnixMilli()
	samples := 0
	bodies := make([][]byte, len(f.tills))
	for b.Loop() {
		b.StopTimer()
		for i := range f.tills {
			bodies[i], _ = f.scrape(i, ts)
		}
		ts += 15000
		b.StartTimer()
		var wg sync.WaitGroup
		for w := range clients {
			wg.Go(func() {
				for i := w; i < len(bodies); i += len(clients) {
					if err := clients[w].Send(context.Background(), bodies[i]); err != nil {
						b.Error(err)
					}
				}
			})
		}
		wg.Wait()
		samples += 400 * len(f.tills)
	}
	b.ReportMetric(float64(samples)/b.Elapsed().Seconds(), "samples/s")
	waitOutboxSealed(b, port, samples)
}
