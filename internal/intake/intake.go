// Package intake is the storerelay's remote-write endpoint. It accepts
// Prometheus remote-write v1 (protobuf, snappy or zstd), checks the bearer
// token, validates every series, stamps the store label, enforces the
// per-device series limit, classifies each series by the priority rules
// and appends one inbox record per request, with a section per class
// (see the seal package's record.go). It answers 2xx only after the record
// is fsync'd.
//
// Status codes, each with a one-line reason in the body and counted in
// samples_rejected_total{reason} (samples that could be decoded) and
// requests_rejected_total{reason}:
//
//	401 unauthorized      tokens are configured and the request has none valid
//	415 unsupported_type  remote-write 2.0 or another content type
//	413 too_large         the body, compressed or not, is over the limit
//	400 bad_encoding      the body does not decompress
//	400 bad_protobuf      the body is not a WriteRequest
//	400 invalid_labels    a label name is invalid or repeated, a value not UTF-8
//	400 no_samples        a series has no sample
//	400 series_limit      every series of the request is new to a device at its limit
//	429 inbox_full        the inbox is at its limit (Retry-After set)
//	503 disk_full         the disk is full
//	503 shutting_down     the relay is stopping
//	500 internal          any other buffer error
//
// A request is all or nothing for the 400s above but one: a series over
// the device's limit is dropped and counted (series_limit) while the rest
// of the request is accepted with 204, so known series keep flowing; only
// when nothing is left is the request answered 400, not 429, because a
// retry cannot succeed and must not block the client's queue.
package intake

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"

	"tillpipe/internal/buffer"
	"tillpipe/internal/classify"
	"tillpipe/internal/obs"
	"tillpipe/internal/remotewrite"
	"tillpipe/internal/seal"
	"tillpipe/internal/wire"
)

// ErrInvalidOption is wrapped by every error about a bad [Options] field.
var ErrInvalidOption = errors.New("intake: invalid option")

// Rejection reasons, the values of the reason label.
const (
	ReasonUnauthorized = "unauthorized"
	ReasonUnsupported  = "unsupported_type"
	ReasonTooLarge     = "too_large"
	ReasonBadEncoding  = "bad_encoding"
	ReasonBadProtobuf  = "bad_protobuf"
	ReasonLabels       = "invalid_labels"
	ReasonNoSamples    = "no_samples"
	ReasonSeriesLimit  = "series_limit"
	ReasonInboxFull    = "inbox_full"
	ReasonDiskFull     = "disk_full"
	ReasonShutdown     = "shutting_down"
	ReasonInternal     = "internal"
)

var reasons = []string{
	ReasonUnauthorized, ReasonUnsupported, ReasonTooLarge, ReasonBadEncoding, ReasonBadProtobuf,
	ReasonLabels, ReasonNoSamples, ReasonSeriesLimit, ReasonInboxFull, ReasonDiskFull, ReasonShutdown, ReasonInternal,
}

// Defaults for zero [Options] fields.
const (
	DefaultMaxBodyBytes  = 8 << 20
	DefaultInboxMaxBytes = 64 << 20
	DefaultSeriesWindow  = time.Hour
	DefaultRetryAfter    = 5 * time.Second
)

// Options configure a [Handler]. The zero value of every field but Store
// and Inbox means its default.
type Options struct {
	// Store is stamped as the store label on every series (required).
	Store string
	// Inbox receives one record per request (required); see
	// [seal.OpenInbox].
	Inbox *buffer.Group
	// InboxMaxBytes: when the inbox holds this much, requests get 429
	// (default 64 MiB).
	InboxMaxBytes int64
	// Rules classify series (default [classify.Default]).
	Rules *classify.Rules
	// MaxBodyBytes bounds a request body, compressed and decompressed
	// (default 8 MiB).
	MaxBodyBytes int64
	// MaxSeriesPerDevice bounds the distinct series a device may have in
	// SeriesWindow; 0: unlimited. The device is the device label, else the
	// instance label, else the client's IP address.
	MaxSeriesPerDevice int
	// SeriesWindow is the window of the series limit (default 1 h).
	SeriesWindow time.Duration
	// Tokens, if set, are the bearer tokens a request must carry.
	Tokens *Tokens
	// RetryAfter is sent with 429 (default 5 s).
	RetryAfter time.Duration
	Logger     *slog.Logger
	// Registerer receives the intake's metrics; nil: none.
	Registerer prometheus.Registerer
	// Now is the clock of the series window (default time.Now).
	Now func() time.Time
}

// Handler serves POST /api/v1/write. It is safe for concurrent use.
type Handler struct {
	opts       Options
	storeField []byte // the store label, encoded as a TimeSeries label field
	log        *slog.Logger
	rules      *classify.Rules
	queue      *buffer.Queue // the inbox's
	devices    *devices
	tokens     atomic.Pointer[Tokens]
	closed     atomic.Bool

	received        *prometheus.CounterVec
	rejected        *prometheus.CounterVec
	rejectedReqs    *prometheus.CounterVec
	receivedByClass [len(wire.Classes) + 1]prometheus.Counter

	pool sync.Pool // *request
}

// New returns a Handler.
func New(opts Options) (*Handler, error) {
	if opts.Store == "" {
		return nil, fmt.Errorf("store is empty: %w", ErrInvalidOption)
	}
	if opts.Inbox == nil {
		return nil, fmt.Errorf("inbox is nil: %w", ErrInvalidOption)
	}
	if opts.InboxMaxBytes <= 0 {
		opts.InboxMaxBytes = DefaultInboxMaxBytes
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.MaxSeriesPerDevice < 0 {
		return nil, fmt.Errorf("max series per device %d: %w", opts.MaxSeriesPerDevice, ErrInvalidOption)
	}
	if opts.SeriesWindow <= 0 {
		opts.SeriesWindow = DefaultSeriesWindow
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = DefaultRetryAfter
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := &Handler{
		opts:    opts,
		log:     obs.Discard(opts.Logger).With("component", "intake"),
		rules:   opts.Rules,
		devices: newDevices(opts.MaxSeriesPerDevice, opts.SeriesWindow, opts.Now()),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "samples_received_total", Help: "Samples accepted into the inbox, by class.",
		}, []string{"class"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "samples_rejected_total", Help: "Samples refused at intake, by reason (bodies that cannot be decoded count 0 samples; see requests_rejected_total).",
		}, []string{"reason"}),
		rejectedReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "requests_rejected_total", Help: "Write requests refused (fully or, for series_limit, partly), by reason.",
		}, []string{"reason"}),
	}
	if h.rules == nil {
		h.rules = classify.Default()
	}
	h.storeField = appendLabel(nil, StoreLabel, opts.Store, labelSize(StoreLabel, opts.Store))
	h.tokens.Store(opts.Tokens)
	if h.queue = seal.InboxQueue(opts.Inbox); h.queue == nil {
		return nil, fmt.Errorf("inbox has no request queue: %w", ErrInvalidOption)
	}
	for _, c := range wire.Classes {
		h.receivedByClass[c] = h.received.WithLabelValues(c.String())
	}
	for _, r := range reasons {
		h.rejected.WithLabelValues(r)
		h.rejectedReqs.WithLabelValues(r)
	}
	if reg := opts.Registerer; reg != nil {
		active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "series_active", Help: "Distinct series tracked for the per-device limit, over all devices.",
		}, func() float64 { return float64(h.devices.active.Load()) })
		for _, c := range []prometheus.Collector{h.received, h.rejected, h.rejectedReqs, active} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register intake metrics: %w", err)
			}
		}
	}
	h.pool.New = func() any { return new(request) }
	return h, nil
}

// SetTokens replaces the bearer tokens (nil: no authentication), e.g. on SIGHUP.
func (h *Handler) SetTokens(t *Tokens) { h.tokens.Store(t) }

// Close makes the handler answer 503 from now on; the HTTP server's
// shutdown waits for requests in flight.
func (h *Handler) Close() { h.closed.Store(true) }

// request is the per-request scratch state, pooled.
type request struct {
	scratch, body []byte
	series        []seriesRef
	samples       []prompb.Sample
	labels        []prompb.Label // of the series peek did not find in a cache
	labelBuf      []byte
	rec           record
	digest        xxhash.Digest
	mh            maphash.Hash
}

// maxPooledBytes keeps one huge request from pinning its buffers forever.
const maxPooledBytes = 4 << 20

func (h *Handler) put(rq *request) {
	if cap(rq.scratch) > maxPooledBytes || cap(rq.body) > maxPooledBytes || cap(rq.rec.buf) > maxPooledBytes || cap(rq.rec.out) > maxPooledBytes {
		return
	}
	h.pool.Put(rq)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.closed.Load() {
		h.reject(w, ReasonShutdown, http.StatusServiceUnavailable, 0, "relay is shutting down")
		return
	}
	if t := h.tokens.Load(); t != nil {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !t.Valid(strings.TrimSpace(tok)) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="storerelay"`)
			h.reject(w, ReasonUnauthorized, http.StatusUnauthorized, 0, "missing or invalid bearer token")
			return
		}
	}
	if msg := checkContentType(r.Header.Get("Content-Type")); msg != "" {
		h.reject(w, ReasonUnsupported, http.StatusUnsupportedMediaType, 0, msg)
		return
	}
	rq := h.pool.Get().(*request)
	defer h.put(rq)
	var err error
	rq.scratch, rq.body, err = remotewrite.ReadBody(r, h.opts.MaxBodyBytes, rq.scratch, rq.body)
	if err != nil {
		reason := ReasonBadEncoding
		if errors.Is(err, remotewrite.ErrTooLarge) {
			reason = ReasonTooLarge
		}
		h.reject(w, reason, remotewrite.StatusFor(err), 0, err.Error())
		return
	}
	if err := rq.decode(); err != nil {
		h.reject(w, ReasonBadProtobuf, http.StatusBadRequest, 0, "unmarshal WriteRequest: "+err.Error())
		return
	}
	samples := len(rq.samples)
	if err := h.peek(rq, clientIP(r)); err != nil {
		reason := ReasonLabels
		switch {
		case errors.Is(err, errBadProtobuf):
			h.reject(w, ReasonBadProtobuf, http.StatusBadRequest, 0, "unmarshal WriteRequest: "+err.Error())
			return
		case errors.Is(err, errNoSamples):
			reason = ReasonNoSamples
		}
		h.reject(w, reason, http.StatusBadRequest, samples, err.Error())
		return
	}
	if len(rq.series) == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if in := h.opts.Inbox.Bytes(); in+int64(len(rq.body)) > h.opts.InboxMaxBytes {
		w.Header().Set("Retry-After", strconv.Itoa(int(h.opts.RetryAfter.Round(time.Second)/time.Second)))
		h.reject(w, ReasonInboxFull, http.StatusTooManyRequests, samples, fmt.Sprintf("inbox full (%d bytes, limit %d); retry later", in, h.opts.InboxMaxBytes))
		return
	}
	limited := h.split(rq)
	if limited == samples {
		h.reject(w, ReasonSeriesLimit, http.StatusBadRequest, samples,
			fmt.Sprintf("every series is new to a device at its limit of %d series", h.opts.MaxSeriesPerDevice))
		return
	}
	if limited > 0 {
		h.rejected.WithLabelValues(ReasonSeriesLimit).Add(float64(limited))
		h.rejectedReqs.WithLabelValues(ReasonSeriesLimit).Inc()
	}
	if _, err := h.queue.Append(r.Context(), rq.rec.finish(), rq.rec.samples()); err != nil {
		reason, code := ReasonInternal, http.StatusInternalServerError
		switch {
		case errors.Is(err, buffer.ErrDiskFull):
			reason, code = ReasonDiskFull, http.StatusServiceUnavailable
		case errors.Is(err, buffer.ErrClosed):
			reason, code = ReasonShutdown, http.StatusServiceUnavailable
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			reason, code = ReasonShutdown, http.StatusServiceUnavailable
		}
		h.log.Warn("append to inbox", "err", err)
		h.reject(w, reason, code, samples-limited, "buffer: "+err.Error())
		return
	}
	for _, c := range wire.Classes {
		if n := rq.rec.hdr.Section(c).Samples; n > 0 {
			h.receivedByClass[c].Add(float64(n))
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// peek is the first pass over a decoded request. For every series whose
// label fields are one run, it hashes them as they are (store left out) and
// asks the device whether it has that series: a known series was validated
// and classified when it was new, and its raw label fields are what the
// relay would encode, so they are copied with the store label spliced in.
// The labels of the other series are parsed and validated. It returns the error of
// the first invalid series, in request order; an error wrapping
// errBadProtobuf, for labels that do not parse, takes precedence. It changes
// nothing a rejected request must not change (only time-based rotation), so
// the request can still be refused after it.
func (h *Handler) peek(rq *request, addr string) error {
	now := h.opts.Now().UnixNano()
	h.devices.sweep(now)
	rq.mh.SetSeed(h.devices.seed)
	var dl deviceLock
	defer dl.unlock()
	var firstErr error
	for i := range rq.series {
		ref := &rq.series[i]
		ref.hit, ref.spliced, ref.dev, ref.class = hitNone, false, nil, 0
		if ref.contiguous && ref.s1 > ref.s0 {
			raw := ref.raw(rq.body)
			if key, sp, ok := scanLabels(raw, addr); ok {
				dev := dl.lock(h.devices, key, now)
				a, b := raw[:sp.cut0], raw[sp.cut1:]
				if sp.cut0 == sp.cut1 {
					a, b = raw, nil // no store label to leave out: one run
				}
				id := h.seriesID(rq, a, b)
				if c, hit := h.devices.peek(dev, id); hit != hitNone {
					ref.devKey, ref.id, ref.sp, ref.spliced = key, id, sp, true
					ref.class, ref.hit, ref.dev, ref.epoch = c, hit, dev, dev.epoch
					continue
				}
			}
		}
		if err := rq.parseLabels(ref); err != nil {
			return err
		}
		if firstErr != nil {
			continue
		}
		ls := rq.labels[ref.l0:ref.l1]
		if err := validate(&prompb.TimeSeries{Labels: ls, Samples: rq.samples[ref.s0:ref.s1]}); err != nil {
			firstErr = err
			continue
		}
		ref.devKey, ref.id = h.identify(rq, ls, addr)
		if ref.contiguous {
			ref.sp, ref.spliced, rq.labelBuf = spliceOf(ref.raw(rq.body), ls, rq.labelBuf)
		}
	}
	return firstErr
}

// seriesID hashes a series' label fields without store, given in two parts.
func (h *Handler) seriesID(rq *request, a, b []byte) seriesID {
	if len(b) == 0 {
		return seriesID{h: xxhash.Sum64(a) & h.devices.hMask, v: maphash.Bytes(h.devices.seed, a)}
	}
	d := &rq.digest
	d.Reset()
	_, _ = d.Write(a)
	_, _ = d.Write(b)
	m := &rq.mh
	m.Reset()
	_, _ = m.Write(a)
	_, _ = m.Write(b)
	return seriesID{h: d.Sum64() & h.devices.hMask, v: m.Sum64()}
}

// deviceLock holds at most one device locked, for a run of series of the
// same device.
type deviceLock struct {
	dev *device
	key string
}

// lock returns key's device, locked and rotated if due, unlocking the one
// held before if it is another.
func (dl *deviceLock) lock(d *devices, key string, now int64) *device {
	if dl.dev != nil {
		if dl.key == key {
			return dl.dev
		}
		dl.unlock()
	}
	for {
		dev := d.get(key, now)
		dev.mu.Lock()
		if !dev.gone { // else sweep dropped it between get and Lock
			d.rotate(dev, now)
			dl.dev, dl.key = dev, key
			return dev
		}
		dev.mu.Unlock()
	}
}

func (dl *deviceLock) unlock() {
	if dl.dev != nil {
		dl.dev.mu.Unlock()
		dl.dev = nil
	}
}

// split is the second pass over a request [Handler.peek] accepted: it
// applies the series limit (moving known series to the current generation)
// and classifies the series new to their device, then encodes the request as one inbox record
// with the store label stamped, class by class. It returns the samples
// dropped by the limit.
func (h *Handler) split(rq *request) (limited int) {
	now := h.opts.Now().UnixNano()
	var dl deviceLock
	for i := range rq.series {
		ref := &rq.series[i]
		dev := dl.lock(h.devices, ref.devKey, now)
		if ref.hit == hitCur && ref.dev == dev && ref.epoch == dev.epoch {
			continue // still in cur: nothing leaves it without an epoch change
		}
		var ls []prompb.Label
		if ref.hit == hitNone {
			ls = rq.labels[ref.l0:ref.l1]
		}
		c, ok := h.devices.lookup(dev, ref.id, h.rules, ref.class, ls)
		if !ok {
			limited += int(ref.s1 - ref.s0)
			c = 0
		}
		ref.class = c
	}
	dl.unlock()
	rq.rec.reset()
	for _, c := range wire.Classes {
		sec := rq.rec.hdr.Section(c)
		start := len(rq.rec.buf)
		for i := range rq.series {
			ref := &rq.series[i]
			if ref.class != c {
				continue
			}
			if ref.spliced {
				rq.rec.appendSpliced(sec, ref.raw(rq.body), ref.sp, h.storeField, rq.samples[ref.s0:ref.s1])
			} else {
				rq.rec.appendSeries(sec, rq.labels[ref.l0:ref.l1], rq.samples[ref.s0:ref.s1], h.opts.Store)
			}
		}
		sec.Len = uint32(len(rq.rec.buf) - start)
	}
	return limited
}

// identify returns the series' device and its [seriesID], from its labels
// encoded as appendLabel does, store left out.
func (h *Handler) identify(rq *request, ls []prompb.Label, addr string) (string, seriesID) {
	b := rq.labelBuf[:0]
	device, instance := "", ""
	for i := range ls {
		l := &ls[i]
		switch l.Name {
		case StoreLabel:
			continue
		case "device":
			device = l.Value
		case "instance":
			instance = l.Value
		}
		b = appendLabel(b, l.Name, l.Value, labelSize(l.Name, l.Value))
	}
	rq.labelBuf = b
	id := h.seriesID(rq, b, nil)
	switch {
	case device != "":
		return device, id
	case instance != "":
		return instance, id
	}
	return addr, id
}

func (h *Handler) reject(w http.ResponseWriter, reason string, code, samples int, msg string) {
	h.rejectedReqs.WithLabelValues(reason).Inc()
	if samples > 0 {
		h.rejected.WithLabelValues(reason).Add(float64(samples))
	}
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	h.log.Debug("reject write", "reason", reason, "status", code, "samples", samples, "msg", msg)
	http.Error(w, reason+": "+msg, code)
}

// checkContentType returns why ct is refused, or "" if it is remote-write v1.
func checkContentType(ct string) string {
	if ct == "" {
		return ""
	}
	mt, params, _ := strings.Cut(ct, ";")
	if strings.TrimSpace(strings.ToLower(mt)) != "application/x-protobuf" {
		return fmt.Sprintf("content-type %q: want application/x-protobuf (remote-write v1)", ct)
	}
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(k, "proto") && v != "prometheus.WriteRequest" {
			return fmt.Sprintf("proto %q not supported: this relay speaks remote-write 1.0 (prometheus.WriteRequest) only", v)
		}
	}
	return ""
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
