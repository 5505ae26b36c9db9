package buffer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"
)

const benchRecordBytes = 4 << 10

// BenchmarkAppend appends 4 KiB records from 1, 8 and 64 goroutines under
// each sync policy. Under SyncAlways records/s growing with the number of
// appenders shows group commit at work.
func BenchmarkAppend(b *testing.B) {
	for _, policy := range []SyncPolicy{SyncAlways, SyncInterval} {
		for _, appenders := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("sync=%v/appenders=%d", policy, appenders), func(b *testing.B) {
				q := mustOpen(b, b.TempDir(), Options{Sync: policy, SyncInterval: 100 * time.Millisecond, SegmentBytes: 64 << 20})
				defer q.Close()
				payload := rec(1, benchRecordBytes)
				work := make(chan struct{})
				var wg sync.WaitGroup
				for range appenders {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range work {
							if _, err := q.Append(context.Background(), payload, 100); err != nil {
								b.Error(err)
							}
						}
					}()
				}
				b.ReportAllocs()
				b.SetBytes(benchRecordBytes)
				for b.Loop() {
					work <- struct{}{}
				}
				close(work)
				wg.Wait()
				st := q.Stats()
				sec := b.Elapsed().Seconds()
				b.ReportMetric(float64(b.N)/sec, "records/s")
				b.ReportMetric(float64(b.N)*benchRecordBytes/sec/1e6, "MB/s")
				b.ReportMetric(float64(st.Appends)/float64(max(st.Fsyncs, 1)), "records/fsync")
			})
		}
	}
}

// BenchmarkReadSequential reads 4 KiB records in order, as a backlog drain
// does.
func BenchmarkReadSequential(b *testing.B) {
	q := mustOpen(b, b.TempDir(), Options{Sync: SyncInterval, SegmentBytes: 8 << 20})
	defer q.Close()
	const records = 20000 // 80 MiB
	payload := rec(1, benchRecordBytes)
	for range records {
		mustAppend(b, q, payload, 100)
	}
	buf := make([]byte, 0, benchRecordBytes)
	var idx uint64
	b.ReportAllocs()
	b.SetBytes(benchRecordBytes)
	for b.Loop() {
		var err error
		buf, idx, err = q.Read(idx, buf[:0])
		if errors.Is(err, io.EOF) {
			idx = 0
			buf, idx, err = q.Read(idx, buf[:0])
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/sec, "records/s")
	b.ReportMetric(float64(b.N)*benchRecordBytes/sec/1e6, "MB/s")
}
