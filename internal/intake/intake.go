// Package intake is the storerelay's remote-write endpoint. It accepts
// Prometheus remote-write 1.0 and 2.0 (protobuf, snappy or zstd), checks
// the bearer token, validates every series, stamps the store label,
// enforces the per-device series limit, classifies each series by the
// priority rules and appends one inbox record per request, with a section
// per class (see the seal package's record.go). It answers 2xx only after
// the record is fsync'd.
//
// Status codes, each with a one-line reason in the body and counted in
// samples_rejected_total{reason} (samples that could be decoded) and
// requests_rejected_total{reason}:
//
//	401 unauthorized       tokens are configured and the request has none valid
//	415 unsupported_type   another content type or proto; for 2.0, a Content-Encoding other than snappy or zstd
//	413 too_large          the body, compressed or not, is over the limit (for 2.0, also its series spelled out as 1.0)
//	400 bad_encoding       the body does not decompress
//	400 bad_protobuf       the body is not a WriteRequest (1.0) or a well-formed Request (2.0, see rw2.go)
//	400 invalid_labels     a label name is invalid or repeated, a value not UTF-8
//	400 no_samples         a series has no sample (2.0: neither a float nor a histogram sample)
//	400 series_limit       every series of the request is new to a device at its limit
//	400 native_histograms  2.0: the request carries native histogram samples (a partial write, see below)
//	400 exemplars          2.0: the request carries exemplars (a partial write, see below)
//	429 inbox_full         the inbox is at its limit (Retry-After set)
//	503 disk_full          the disk is full
//	503 shutting_down      the relay is stopping
//	500 internal           any other buffer error
//
// A request is all or nothing for the 400s above but series_limit (and,
// for 2.0, the partial writes below): a series over the device's limit is
// dropped and counted while the rest of the request is accepted with 204,
// so known series keep flowing; only when nothing is left is the request
// answered 400, not 429, because a retry cannot succeed and must not block
// the client's queue.
//
// Remote-write 2.0 (Content-Type application/x-protobuf;proto=io.prometheus.write.v2.Request)
// has the same body limits and encodings. Its body is converted to the
// 1.0 series it carries (labels resolved from the symbols table, float
// samples) and takes the 1.0 path from there, so validation, the store
// label, the series limit, classes, the inbox record and the counters are
// the same. Every 2.0 answer past content negotiation carries the
// X-Prometheus-Remote-Write-{Samples,Histograms,Exemplars}-Written
// headers. The relay's batches carry float samples only, and the spec
// forbids a 2xx unless everything the receiver knows of was written, so a
// 2.0 request with native histogram samples or exemplars, or with series
// over the limit, is a partial write: its float samples are written as for
// 1.0, and it is answered 400 (reason: series_limit, native_histograms or
// exemplars, in that order) with the samples written in the header. Series
// metadata and start timestamps are dropped and counted in
// rw2_dropped_total{part}, which also counts refused exemplars; refused
// histogram samples count in samples_rejected_total{reason="native_histograms"}.
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
	ReasonHistograms   = "native_histograms" // remote-write 2.0 only
	ReasonExemplars    = "exemplars"         // remote-write 2.0 only
	ReasonInboxFull    = "inbox_full"
	ReasonDiskFull     = "disk_full"
	ReasonShutdown     = "shutting_down"
	ReasonInternal     = "internal"
)

var reasons = []string{
	ReasonUnauthorized, ReasonUnsupported, ReasonTooLarge, ReasonBadEncoding, ReasonBadProtobuf,
	ReasonLabels, ReasonNoSamples, ReasonSeriesLimit, ReasonHistograms, ReasonExemplars, ReasonInboxFull, ReasonDiskFull,
	ReasonShutdown, ReasonInternal,
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
	rw2Dropped      *prometheus.CounterVec
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
			Name: "requests_rejected_total", Help: "Write requests refused (fully or, for series_limit and the remote-write 2.0 partial writes, partly), by reason.",
		}, []string{"reason"}),
		rw2Dropped: newRW2Dropped(),
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
		for _, c := range []prometheus.Collector{h.received, h.rejected, h.rejectedReqs, h.rw2Dropped, active} {
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
	v2            v2Scratch
}

// maxPooledBytes keeps one huge request from pinning its buffers forever.
const maxPooledBytes = 4 << 20

func (h *Handler) put(rq *request) {
	if cap(rq.scratch) > maxPooledBytes || cap(rq.body) > maxPooledBytes || cap(rq.rec.buf) > maxPooledBytes || cap(rq.rec.out) > maxPooledBytes || rq.v2.big() {
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
	v2, msg := checkContentType(r.Header.Get("Content-Type"))
	if v2 && msg == "" {
		msg = checkEncodingV2(r.Header.Get("Content-Encoding"))
	}
	if msg != "" {
		h.reject(w, ReasonUnsupported, http.StatusUnsupportedMediaType, 0, msg)
		return
	}
	if v2 {
		setWritten(w.Header(), 0) // until something is
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
	if v2 {
		h.serveV2(w, r, rq)
		return
	}
	if err := rq.decode(); err != nil {
		h.reject(w, ReasonBadProtobuf, http.StatusBadRequest, 0, "unmarshal WriteRequest: "+err.Error())
		return
	}
	if _, _, ok := h.accept(w, r, rq); ok {
		w.WriteHeader(http.StatusNoContent)
	}
}

// accept takes a decoded request through validation, the series limit and
// classification into one inbox record. It answers every refusal itself
// and returns ok false then; else it answers nothing and returns the
// samples written and those dropped by the series limit.
func (h *Handler) accept(w http.ResponseWriter, r *http.Request, rq *request) (written, limited int, ok bool) {
	samples := len(rq.samples)
	if err := h.peek(rq, clientIP(r)); err != nil {
		reason := ReasonLabels
		switch {
		case errors.Is(err, errBadProtobuf):
			h.reject(w, ReasonBadProtobuf, http.StatusBadRequest, 0, "unmarshal WriteRequest: "+err.Error())
			return 0, 0, false
		case errors.Is(err, errNoSamples):
			reason = ReasonNoSamples
		}
		h.reject(w, reason, http.StatusBadRequest, samples, err.Error())
		return 0, 0, false
	}
	if len(rq.series) == 0 {
		return 0, 0, true
	}
	if in := h.opts.Inbox.Bytes(); in+int64(len(rq.body)) > h.opts.InboxMaxBytes {
		w.Header().Set("Retry-After", strconv.Itoa(int(h.opts.RetryAfter.Round(time.Second)/time.Second)))
		h.reject(w, ReasonInboxFull, http.StatusTooManyRequests, samples, fmt.Sprintf("inbox full (%d bytes, limit %d); retry later", in, h.opts.InboxMaxBytes))
		return 0, 0, false
	}
	limited = h.split(rq)
	if limited == samples {
		h.reject(w, ReasonSeriesLimit, http.StatusBadRequest, samples,
			fmt.Sprintf("every series is new to a device at its limit of %d series", h.opts.MaxSeriesPerDevice))
		return 0, 0, false
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
		return 0, 0, false
	}
	for _, c := range wire.Classes {
		if n := rq.rec.hdr.Section(c).Samples; n > 0 {
			h.receivedByClass[c].Add(float64(n))
		}
	}
	return samples - limited, limited, true
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

// checkContentType tells whether ct is remote-write 2.0 and, if it is
// neither 1.0 nor 2.0, why it is refused.
func checkContentType(ct string) (v2 bool, msg string) {
	if ct == "" {
		return false, ""
	}
	mt, params, _ := strings.Cut(ct, ";")
	if strings.TrimSpace(strings.ToLower(mt)) != "application/x-protobuf" {
		return false, fmt.Sprintf("content-type %q: want application/x-protobuf (remote-write 1.0 or 2.0)", ct)
	}
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if !strings.EqualFold(k, "proto") {
			continue
		}
		switch v {
		case "prometheus.WriteRequest":
		case protoV2:
			v2 = true
		default:
			return false, fmt.Sprintf("proto %q not supported: this relay speaks remote-write 1.0 (prometheus.WriteRequest) and 2.0 (%s)", v, protoV2)
		}
	}
	return v2, ""
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
