package ingester

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tillpipe/internal/wire"
)

// Values of the result label of batches_total: what became of one wire batch
// (one JetStream message).
const (
	resultWritten    = "written"    // written to the backend and acked
	resultDeadLetter = "deadletter" // copied to the dead-letter stream and terminated
	resultNak        = "nak"        // handed back to JetStream for redelivery
)

// metrics are the ingester's Prometheus metrics. Names are relative to the
// registerer's prefix (tillpipe_ingester_ in cmd/ingester).
type metrics struct {
	samplesWritten  *prometheus.CounterVec              // {class}
	batches         *prometheus.CounterVec              // {class, result}
	backendRequests *prometheus.CounterVec              // {code}
	backendLatency  prometheus.Histogram                //
	deadLetter      *prometheus.CounterVec              // {reason}
	backendUp       prometheus.Gauge                    //
	ackErrors       *prometheus.CounterVec              // {class}
	fetchErrors     *prometheus.CounterVec              // {class}
	newest          [len(wire.Classes) + 1]atomic.Int64 // by class: newest sample written, ms
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		samplesWritten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "samples_written_total",
			Help: "Samples the backend accepted (2xx), by priority class.",
		}, []string{"class"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "batches_total",
			Help: "Wire batches (JetStream messages) handled, by class and result: written, deadletter or nak.",
		}, []string{"class", "result"}),
		backendRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backend_requests_total",
			Help: `Remote-write requests to the backend by answer: "2xx", the HTTP status code, or "network" when there was no answer.`,
		}, []string{"code"}),
		backendLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "backend_latency_seconds",
			Help:    "Duration of one remote-write request to the backend, whatever its answer.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
		deadLetter: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deadletter_total",
			Help: "Batches copied to the dead-letter stream and terminated, by reason.",
		}, []string{"reason"}),
		backendUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "backend_up",
			Help: "1 while the backend answers, 0 while it fails with 5xx, 429 or no answer and fetching is paused.",
		}),
		ackErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ack_errors_total",
			Help: "Acks JetStream did not confirm after a successful write; the batch may be written twice.",
		}, []string{"class"}),
		fetchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fetch_errors_total",
			Help: "Failed pull requests on a class's consumer.",
		}, []string{"class"}),
	}
	m.backendUp.Set(1)
	if reg == nil {
		return m
	}
	reg.MustRegister(m.samplesWritten, m.batches, m.backendRequests, m.backendLatency, m.deadLetter, m.backendUp, m.ackErrors, m.fetchErrors)
	for _, c := range wire.Classes {
		m.samplesWritten.WithLabelValues(c.String())
		for _, r := range []string{resultWritten, resultDeadLetter, resultNak} {
			m.batches.WithLabelValues(c.String(), r)
		}
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "lag_seconds",
			Help:        "Now minus the newest sample written for the class; 0 until one is written.",
			ConstLabels: prometheus.Labels{"class": c.String()},
		}, func() float64 { return m.lag(c, time.Now()) }))
	}
	return m
}

// written records that samples of class up to newestMillis were accepted.
func (m *metrics) written(c wire.Class, samples int, newestMillis int64) {
	m.samplesWritten.WithLabelValues(c.String()).Add(float64(samples))
	n := &m.newest[c]
	for {
		old := n.Load()
		if newestMillis <= old || n.CompareAndSwap(old, newestMillis) {
			return
		}
	}
}

func (m *metrics) lag(c wire.Class, now time.Time) float64 {
	ms := m.newest[c].Load()
	if ms == 0 {
		return 0
	}
	return math.Max(0, float64(now.UnixMilli()-ms)/1000)
}
