package wire

import (
	"fmt"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"tillpipe/internal/fleetsim"
)

// benchBatches are the batch shapes of the benchmarks: what a store relay
// seals live, and what it drains after an outage.
var benchBatches = []struct {
	name    string
	tills   int
	samples int // per series, 15 s apart
}{
	{"store", 20, 1},    // 20 tills x 400 series x 1 sample
	{"backlog", 20, 40}, // the same series x 40 samples (10 minutes)
}

// benchRequest builds a realistic batch from fleetsim tills: one TimeSeries
// per series with perSeries samples at 15 s steps.
func benchRequest(tills, perSeries int) (*prompb.WriteRequest, int) {
	const t0, step = 1_767_225_600_000, 15_000
	wr := &prompb.WriteRequest{}
	var scratch []prompb.TimeSeries
	for i := range tills {
		till := fleetsim.NewTill("s0042", fmt.Sprintf("till-%02d", i+1), int64(i+1))
		first := len(wr.Timeseries)
		wr.Timeseries = till.AppendSeries(wr.Timeseries, t0)
		for k := 1; k < perSeries; k++ {
			scratch = till.AppendSeries(scratch[:0], t0+int64(k)*step)
			for j := range scratch {
				ts := &wr.Timeseries[first+j]
				ts.Samples = append(ts.Samples, scratch[j].Samples...)
			}
		}
	}
	return wr, len(wr.Timeseries) * perSeries
}

func BenchmarkEncode(b *testing.B) {
	for _, c := range []Codec{CodecSnappy, CodecZstd} {
		for _, bb := range benchBatches {
			wr, n := benchRequest(bb.tills, bb.samples)
			b.Run(c.String()+"/"+bb.name, func(b *testing.B) {
				b.ReportAllocs()
				// Warm up outside the measurement (b.Loop resets the timer and
				// the allocation counts): dst and the scratch pool grow once.
				h := fixedHeader(c)
				dst, err := AppendBatch(nil, &h, wr)
				if err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					h := fixedHeader(c)
					if dst, err = AppendBatch(dst[:0], &h, wr); err != nil {
						b.Fatal(err)
					}
				}
				samples := float64(n)
				b.ReportMetric(samples*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
				b.ReportMetric(float64(len(dst))/samples, "bytes/sample")
			})
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, c := range []Codec{CodecSnappy, CodecZstd} {
		for _, bb := range benchBatches {
			wr, n := benchRequest(bb.tills, bb.samples)
			h := fixedHeader(c)
			frame, err := AppendBatch(nil, &h, wr)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(c.String()+"/"+bb.name, func(b *testing.B) {
				b.ReportAllocs()
				// Warm up outside the measurement: the Decoder's buffers grow once.
				d := NewDecoder(DecoderOptions{})
				if _, err := d.Decode(frame); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					if _, err := d.Decode(frame); err != nil {
						b.Fatal(err)
					}
				}
				samples := float64(n)
				b.ReportMetric(samples*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
				b.ReportMetric(float64(len(frame))/samples, "bytes/sample")
			})
		}
	}
}

// BenchmarkEncodeLevel compares the zstd levels on an already-marshaled
// payload, as the store relay seals it ([AppendFrameLevel]).
func BenchmarkEncodeLevel(b *testing.B) {
	for _, l := range []struct {
		name  string
		level Level
	}{{"default", LevelDefault}, {"fastest", LevelFastest}} {
		for _, bb := range benchBatches {
			wr, n := benchRequest(bb.tills, bb.samples)
			raw := wr.MarshalProtobuf(nil)
			b.Run(l.name+"/"+bb.name, func(b *testing.B) {
				b.ReportAllocs()
				h := fixedHeader(CodecZstd)
				h.Payload = PayloadRemoteWriteV1
				dst, err := AppendFrameLevel(nil, &h, raw, l.level)
				if err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					h := fixedHeader(CodecZstd)
					h.Payload = PayloadRemoteWriteV1
					if dst, err = AppendFrameLevel(dst[:0], &h, raw, l.level); err != nil {
						b.Fatal(err)
					}
				}
				samples := float64(n)
				b.ReportMetric(samples*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
				b.ReportMetric(float64(len(dst))/samples, "bytes/sample")
			})
		}
	}
}
