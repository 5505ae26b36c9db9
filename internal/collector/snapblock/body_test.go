package snapblock

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/golang/snappy"
)

// testBody is a remote-write WriteRequest laid out as the collector's
// body marshals it: per series the label set, then the sample
// [0x09 value(8)] [0x10 timestamp(6)], whose 15 bytes from the value on
// are volatile.
type testBody struct {
	buf []byte
	vol []Range
}

// newTestBody returns a body of 30 containers with 37 series each (1,110
// series, about 160 KB), stamped ts.
func newTestBody(rng *rand.Rand, ts int64) *testBody {
	metrics := []string{
		"container_cpu_usage_seconds_total", "container_cpu_user_seconds_total", "container_cpu_system_seconds_total",
		"container_cpu_cfs_periods_total", "container_cpu_cfs_throttled_periods_total", "container_cpu_cfs_throttled_seconds_total",
		"container_memory_usage_bytes", "container_memory_working_set_bytes", "container_memory_rss", "container_memory_cache",
		"container_memory_swap", "container_memory_mapped_file", "container_memory_failcnt", "container_memory_max_usage_bytes",
		"container_spec_memory_limit_bytes", "container_spec_cpu_quota", "container_spec_cpu_period", "container_spec_cpu_shares",
		"container_oom_events_total", "container_threads", "container_threads_max", "container_processes",
		"container_fs_reads_bytes_total", "container_fs_writes_bytes_total", "container_fs_reads_total", "container_fs_writes_total",
		"container_pressure_cpu_waiting_seconds_total", "container_pressure_cpu_stalled_seconds_total",
		"container_pressure_memory_waiting_seconds_total", "container_pressure_memory_stalled_seconds_total",
		"container_pressure_io_waiting_seconds_total", "container_pressure_io_stalled_seconds_total",
		"container_start_time_seconds", "container_last_seen", "till_container_restarts_total", "till_container_oom_killed",
		"till_container_health",
	}
	apps := []string{"pos-api", "printer-bridge", "scale-svc", "payment-term", "loyalty-sync", "receipt-store"}
	label := func(dst []byte, name, value string) []byte {
		dst = append(dst, 0x0a, byte(4+len(name)+len(value)), 0x0a, byte(len(name)))
		dst = append(dst, name...)
		dst = append(dst, 0x12, byte(len(value)))
		return append(dst, value...)
	}
	tb := &testBody{}
	var ls []byte
	for c := range 30 {
		app := apps[c%len(apps)]
		container := fmt.Sprintf("%s-%d", app, c)
		image := fmt.Sprintf("registry/%s:1.%d.%d", app, c%3, c%7)
		for _, m := range metrics {
			ls = label(ls[:0], "__name__", m)
			ls = label(ls, "container", container)
			ls = label(ls, "device", "till-042")
			ls = label(ls, "image", image)
			tb.buf = append(tb.buf, 0x0a)
			tb.buf = binary.AppendUvarint(tb.buf, uint64(len(ls)+2+15+2))
			tb.buf = append(tb.buf, ls...)
			tb.buf = append(tb.buf, 0x12, 9+1+6, 0x09)
			start := len(tb.buf)
			tb.buf = append(tb.buf, make([]byte, 8)...)
			tb.buf = append(tb.buf, 0x10)
			tb.buf = binary.AppendUvarint(tb.buf, uint64(ts))
			if len(tb.buf)-start != 15 {
				panic(fmt.Sprintf("timestamp %d does not take 6 bytes", ts))
			}
			tb.vol = append(tb.vol, Range{int32(start), int32(len(tb.buf))})
		}
	}
	tb.stamp(rng, ts)
	return tb
}

// stamp writes new sample values and the timestamp ts in place.
func (tb *testBody) stamp(rng *rand.Rand, ts int64) {
	for _, r := range tb.vol {
		v := math.Float64bits(math.Round(rng.Float64()*1e9) / 1000)
		binary.LittleEndian.PutUint64(tb.buf[r.Start:], v)
		binary.PutUvarint(tb.buf[r.Start+9:], uint64(ts))
	}
}

const bodyTS = 1_786_000_000_000 // Aug 2026 in ms: a 6-byte varint

func TestEncodePatch_Body(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	tb := newTestBody(rng, bodyTS)
	if n := len(tb.vol); n < 1000 || len(tb.buf) < 150_000 {
		t.Fatalf("body of %d bytes with %d series, want about 167 KB and 1,100", len(tb.buf), n)
	}
	var b Block
	enc, err := b.Encode(tb.buf, tb.vol)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkBlock(&b, enc, tb.buf); err != nil {
		t.Fatal(err)
	}
	size := len(enc)
	ref := len(snappy.Encode(nil, tb.buf))
	t.Logf("body %d bytes, %d series: snapblock %d bytes, snappy %d bytes (%.2fx)", len(tb.buf), len(tb.vol), size, ref, float64(size)/float64(ref))
	if float64(size) > 1.6*float64(ref) {
		t.Errorf("snapblock encodes the body to %d bytes, more than 1.6 times snappy's %d", size, ref)
	}
	for cycle := range int64(5) {
		tb.stamp(rng, bodyTS+15_000*(cycle+1))
		enc, err := b.Patch(tb.buf)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkBlock(&b, enc, tb.buf); err != nil {
			t.Fatalf("cycle %d: %v", cycle, err)
		}
	}
}

func TestEncodePatch_Allocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts need a full run")
	}
	rng := rand.New(rand.NewPCG(9, 10))
	tb := newTestBody(rng, bodyTS)
	var b Block
	if _, err := b.Encode(tb.buf, tb.vol); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(20, func() {
		if _, err := b.Encode(tb.buf, tb.vol); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Encode allocates %v times on repeat, want 0 (its hash table is on the stack)", n)
	}
	if n := testing.AllocsPerRun(20, func() {
		if _, err := b.Patch(tb.buf); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Patch allocates %v times, want 0", n)
	}
}

// benchBody returns the body to encode and sets b's bytes per op to its
// size.
func benchBody(b *testing.B) *testBody {
	tb := newTestBody(rand.New(rand.NewPCG(11, 12)), bodyTS)
	b.SetBytes(int64(len(tb.buf)))
	b.ReportAllocs()
	return tb
}

// reportBlock reports the size of out, the last block, and the samples
// (series) handled per second; call it after the b.Loop loop.
func reportBlock(b *testing.B, tb *testBody, out []byte) {
	b.ReportMetric(float64(len(out)), "out-bytes/op")
	b.ReportMetric(float64(len(tb.vol))*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}

func BenchmarkEncode(b *testing.B) {
	tb := benchBody(b)
	var blk Block
	var out []byte
	for b.Loop() {
		var err error
		if out, err = blk.Encode(tb.buf, tb.vol); err != nil {
			b.Fatal(err)
		}
	}
	reportBlock(b, tb, out)
}

func BenchmarkPatch(b *testing.B) {
	tb := benchBody(b)
	var blk Block
	out, err := blk.Encode(tb.buf, tb.vol)
	if err != nil {
		b.Fatal(err)
	}
	tb.stamp(rand.New(rand.NewPCG(13, 14)), bodyTS+15_000)
	for b.Loop() {
		if out, err = blk.Patch(tb.buf); err != nil {
			b.Fatal(err)
		}
	}
	reportBlock(b, tb, out)
}

func BenchmarkSnappyEncode(b *testing.B) {
	tb := benchBody(b)
	var out []byte
	for b.Loop() {
		out = snappy.Encode(out[:cap(out)], tb.buf)
	}
	reportBlock(b, tb, out)
}
