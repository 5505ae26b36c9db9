package uplink

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"tillpipe/internal/wire"
)

// Values of the reason label of uplink_errors_total.
const (
	ReasonTimeout      = "timeout"      // no PubAck within AckTimeout
	ReasonDisconnected = "disconnected" // the link dropped with the batch in flight, or was down
	ReasonPermission   = "permission"   // central refused the subject for this store's user
	ReasonNoStream     = "no_stream"    // no stream listens on the subject (yet)
	ReasonInvalid      = "invalid"      // an outbox record is not a wire frame; it is skipped
	ReasonOther        = "other"        // any other refusal (stream full, ...)
)

var reasons = []string{ReasonTimeout, ReasonDisconnected, ReasonPermission, ReasonNoStream, ReasonInvalid, ReasonOther}

type metrics struct {
	bytes   *prometheus.CounterVec
	samples *prometheus.CounterVec
	batches *prometheus.CounterVec
	errors  *prometheus.CounterVec
	latency prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, connected, rate func() float64) (*metrics, error) {
	m := &metrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_bytes_total",
			Help: "Bytes handed to the uplink (frame, subject and headers), resends included; what the rate limit meters.",
		}, []string{"class"}),
		samples: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_samples_total",
			Help: "Samples in batches central acknowledged.",
		}, []string{"class"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_batches_total",
			Help: "Batches central acknowledged (duplicates included).",
		}, []string{"class"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_errors_total",
			Help: "Failed publishes by reason; every one but invalid is sent again.",
		}, []string{"reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "uplink_publish_latency_seconds",
			Help:    "Time from publish to PubAck.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
	}
	for _, c := range wire.Classes {
		m.bytes.WithLabelValues(c.String())
		m.samples.WithLabelValues(c.String())
		m.batches.WithLabelValues(c.String())
	}
	for _, r := range reasons {
		m.errors.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{
		m.bytes, m.samples, m.batches, m.errors, m.latency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "uplink_connected",
			Help: "1 while the connection to central is up.",
		}, connected),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "uplink_rate_limit_bytes",
			Help: "Uplink limit in bytes/s; 0 means unlimited.",
		}, rate),
	}
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register uplink metrics: %w", err)
	}
	return m, nil
}
