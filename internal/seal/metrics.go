package seal

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	batches  *prometheus.CounterVec
	samples  *prometheus.CounterVec
	rawBytes *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	errors   *prometheus.CounterVec
	// pressureSeals counts batches sealed early for a full inbox;
	// stateWrites, state files written (guard.go).
	pressureSeals *prometheus.CounterVec
	stateWrites   *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "batches_sealed_total", Help: "Batches sealed into the outbox, by class.",
		}, []string{"class"}),
		samples: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealed_samples_total", Help: "Samples sealed into the outbox, by class.",
		}, []string{"class"}),
		rawBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealed_raw_bytes_total", Help: "Uncompressed payload bytes sealed, by class.",
		}, []string{"class"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealed_bytes_total", Help: "Frame bytes (header and compressed payload) sealed into the outbox, by class.",
		}, []string{"class"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "seal_errors_total", Help: "Seal attempts that failed and will be retried, by class.",
		}, []string{"class"}),
		pressureSeals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pressure_seals_total", Help: "Batches sealed before their limits because they held back the commit of a full inbox, by class.",
		}, []string{"class"}),
		stateWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "seal_state_writes_total", Help: "Seal state files written because the outbox might drop a batch, by class.",
		}, []string{"class"}),
	}
	for _, c := range ClassNames {
		m.batches.WithLabelValues(c)
		m.samples.WithLabelValues(c)
		m.rawBytes.WithLabelValues(c)
		m.bytes.WithLabelValues(c)
		m.errors.WithLabelValues(c)
		m.pressureSeals.WithLabelValues(c)
		m.stateWrites.WithLabelValues(c)
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.batches, m.samples, m.rawBytes, m.bytes, m.errors, m.pressureSeals, m.stateWrites}
}

// backlog reports, at scrape time, what each class holds on disk that has
// not gone out yet. The inbox is shared by the classes, so per class it
// counts the outbox batches not yet acknowledged by JetStream plus the
// bytes and age of the class's open batch; inbox_bytes is the whole inbox.
type backlog struct {
	s             *Stage
	bytes, oldest *prometheus.Desc
	inboxBytes    *prometheus.Desc
}

func newBacklog(s *Stage) *backlog {
	return &backlog{
		s: s,
		bytes: prometheus.NewDesc("backlog_bytes",
			"Bytes not yet acknowledged upstream, by class: the open batch (uncompressed) plus unsent outbox batches.",
			[]string{"class"}, nil),
		oldest: prometheus.NewDesc("backlog_oldest_seconds",
			"Age of the oldest record not yet acknowledged upstream, by class (0 when empty).",
			[]string{"class"}, nil),
		inboxBytes: prometheus.NewDesc("inbox_bytes",
			"Bytes of the inbox on disk; the intake answers 429 when it reaches its limit.", nil, nil),
	}
}

func (b *backlog) Describe(ch chan<- *prometheus.Desc) {
	ch <- b.bytes
	ch <- b.oldest
	ch <- b.inboxBytes
}

func (b *backlog) Collect(ch chan<- prometheus.Metric) {
	now := b.s.opts.Now()
	for _, cs := range b.s.classes {
		out := cs.out.Stats()
		cs.mu.Lock()
		open, since := cs.openBytes, cs.openSince
		cs.mu.Unlock()
		oldest := out.OldestPending
		if !since.IsZero() && (oldest.IsZero() || since.Before(oldest)) {
			oldest = since
		}
		age := 0.0
		if !oldest.IsZero() {
			age = max(now.Sub(oldest).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(b.bytes, prometheus.GaugeValue, float64(int64(open)+out.PendingBytes), cs.class.String())
		ch <- prometheus.MustNewConstMetric(b.oldest, prometheus.GaugeValue, age, cs.class.String())
	}
	ch <- prometheus.MustNewConstMetric(b.inboxBytes, prometheus.GaugeValue, float64(b.s.inbox.Bytes()))
}
