package uplink

import (
	"fmt"
	"testing"
	"time"

	"tillpipe/internal/testenv"
	"tillpipe/internal/wire"
)

// BenchmarkPublish measures publish-to-commit throughput against an
// in-process nats-server over loopback with an unlimited rate: each
// iteration appends 1024 batches and waits until the outbox is committed.
func BenchmarkPublish(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("batch=%dKiB", size>>10), func(b *testing.B) {
			n := testenv.StartNATS(b, testenv.NATSOptions{})
			admin := adminJS(b, n.URL())
			ensure(b, admin)
			h := newHarness(b, n, dial(b, n.URL(), ""), admin, Options{DisableConfigWatch: true})
			h.run()
			const perIter = 1024
			frames := make([][]byte, perIter)
			b.ReportAllocs()
			b.SetBytes(int64(perIter * size))
			for b.Loop() {
				b.StopTimer()
				for i := range frames {
					_, frames[i] = h.frame(wire.ClassNormal, size)
				}
				b.StartTimer()
				q := h.outbox.Queue("normal")
				for _, f := range frames {
					if _, err := q.Append(b.Context(), f, 1); err != nil {
						b.Fatal(err)
					}
				}
				waitUntil(b, time.Minute, "commit", h.committedToEnd)
			}
			b.ReportMetric(float64(b.N*perIter)/b.Elapsed().Seconds(), "batches/s")
		})
	}
}
