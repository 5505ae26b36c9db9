package intake

import (
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"tillpipe/internal/fleetsim"
)

// BenchmarkScanLabels reads the label fields of a till's 400 series as the
// known-series path does: scanLabels (canonical reader, as the clients
// encode) against the general field walk it falls back to.
func BenchmarkScanLabels(b *testing.B) {
	till := fleetsim.NewTill("s1", "till-1", 1)
	rq := &request{body: (&prompb.WriteRequest{Timeseries: till.AppendSeries(nil, 1_700_000_000_000)}).MarshalProtobuf(nil)}
	if err := rq.decode(); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		scan func([]byte, string) (string, splice, bool)
	}{{"canonical", scanLabels}, {"generic", scanLabelsGeneric}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				for i := range rq.series {
					if _, _, ok := bc.scan(rq.series[i].raw(rq.body), "addr"); !ok {
						b.Fatal("not read")
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rq.series)), "ns/series")
		})
	}
}
