package ingester

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tillpipe/internal/stream"
	"tillpipe/internal/testenv"
)

// cpuSeconds reads utime+stime of pid from /proc/<pid>/stat.
func cpuSeconds(tb testing.TB, pid int) float64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are fields 14 and 15.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	const clkTck = 100 // USER_HZ on Linux
	return (ut + st) / clkTck
}

// BenchmarkIngester measures cmd/ingester, as a child process, draining
// relay-shaped batches (fleetsim data, zstd wire frames: 20 stores of 23
// tills, two scrapes, one batch per store, class and scrape) from JetStream
// into a counting remote-write sink or VictoriaMetrics. cpu-s/Msamples is the
// child's own utime+stime: NATS, the publisher and the backend are not in it.
func BenchmarkIngester(b *testing.B) {
	bs := fleet(20, 23, 2, time.Now().Add(-6*time.Hour).Truncate(time.Second), "bench")
	frames := make([][]byte, len(bs))
	perIter := 0
	for i := range bs {
		frames[i] = bs[i].frame(b)
		perIter += bs[i].samples()
	}
	// written reports the samples the backend has: the sink counts them in
	// this process; for VictoriaMetrics the ingester's metric is polled,
	// which costs the child a little CPU (counted against it).
	type backend struct {
		url     string
		written func(p *proc) float64
	}
	backends := []struct {
		name     string
		encoding string
		start    func(b *testing.B) backend
	}{
		{"sink/snappy", "snappy", func(b *testing.B) backend {
			s := startSink(b, nil)
			return backend{s.url(), func(*proc) float64 { return float64(s.samples.Load()) }}
		}},
		{"sink/zstd", "zstd", func(b *testing.B) backend {
			s := startSink(b, nil)
			return backend{s.url(), func(*proc) float64 { return float64(s.samples.Load()) }}
		}},
		{"victoriametrics/zstd", "zstd", func(b *testing.B) backend {
			vm := testenv.StartVictoriaMetrics(b)
			return backend{vm.WriteURL(), func(p *proc) float64 {
				time.Sleep(50 * time.Millisecond)
				return p.metric("tillpipe_ingester_samples_written_total")
			}}
		}},
	}
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			env := startJetStream(b)
			bk := be.start(b)
			p := startProc(b, env.nats.URL(), bk.url, "-backend-encoding", be.encoding, "-log-level", "warn")
			iter := 0
			written := 0
			cpu0 := cpuSeconds(b, p.cmd.Process.Pid)
			for b.Loop() {
				iter++
				for i := range bs {
					msg := nats.NewMsg(stream.Subject(bs[i].store, bs[i].class.String()))
					msg.Data = frames[i]
					msg.Header.Set(jetstream.MsgIDHeader, stream.MsgID(bs[i].store, bs[i].class.String(), uint64(iter)<<32|bs[i].seq))
					if _, err := env.js.PublishMsgAsync(msg); err != nil {
						b.Fatal(err)
					}
				}
				select {
				case <-env.js.PublishAsyncComplete():
				case <-time.After(time.Minute):
					b.Fatal("publish did not complete")
				}
				written += perIter
				for bk.written(p) < float64(written) {
					time.Sleep(2 * time.Millisecond)
				}
			}
			cpu := cpuSeconds(b, p.cmd.Process.Pid) - cpu0
			b.ReportMetric(float64(written)/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(cpu/(float64(written)/1e6), "cpu-s/Msamples")
			b.ReportMetric(float64(p.rssKiB())/1024, "rss-MiB")
			if err := p.term(); err != nil {
				b.Errorf("exit after SIGTERM: %v", err)
			}
		})
	}
}
