// Package remotewrite speaks Prometheus remote-write v1 over HTTP: a client
// that sends WriteRequests (the collector to its relay, the ingester to the
// backend) and a request decoder for servers (the relay's intake).
//
// The client follows the remote-write spec's retry rules: a network error, a
// 5xx or a 429 is a [RecoverableError] (carrying Retry-After when the server
// sends one); any other non-2xx answer is a [StatusError] that must not be
// retried.
package remotewrite

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/net/http/httpguts"
)

// ErrInvalidOption is wrapped by every error about a bad [ClientOptions] field.
var ErrInvalidOption = errors.New("invalid option")

// ClientOptions configures a [Client]. The zero value of every field but URL
// means its default.
type ClientOptions struct {
	// URL is the remote-write endpoint, e.g. http://127.0.0.1:8428/api/v1/write.
	URL string
	// Encoding is the body compression: "snappy" (default, the spec's) or
	// "zstd" (VictoriaMetrics and the tillpipe relay accept it).
	Encoding string
	// Headers are added to every request (a tenant header for Mimir, say).
	Headers map[string]string
	// BearerToken, when set, is sent as "Authorization: Bearer <token>".
	BearerToken string
	// TLS configures HTTPS; nil uses Go's defaults.
	TLS *tls.Config
	// Timeout bounds one request, through its context (no goroutine and
	// timer per request, as http.Client.Timeout starts); default 30s. With
	// HTTPClient set, 0 adds no bound of its own.
	Timeout time.Duration
	// UserAgent defaults to "tillpipe".
	UserAgent string
	// HTTPClient replaces the client built from TLS and Timeout. When its
	// Transport is a [Poster] and the client has no Timeout and no cookie
	// Jar, requests go to the Poster directly (the collector's
	// oneconn.Transport) and redirects are not followed.
	HTTPClient *http.Client
}

// Poster is a transport that makes a POST whose head is already written
// out: the request line and the header lines, each ending in CRLF, without
// Content-Length, which it adds. It returns the answer with its body read
// whole, bounded by ctx and by deadline when that is not zero. The client
// builds each head once and calls Post with it for every request: no
// http.Request, context timer or http.Client machinery per request, which
// a till's collector pays cold every 15 s (package oneconn, whose
// Transport is one).
type Poster interface {
	Post(ctx context.Context, u *url.URL, head, body []byte, deadline time.Time) (*http.Response, error)
}

// Client sends remote-write requests. It is safe for concurrent use.
type Client struct {
	url      string
	u        *url.URL // url parsed, shared read-only by every request
	encoding string
	// header holds the headers of a request by body encoding, built once
	// and shared read-only by every request (a RoundTripper must not
	// modify a request; http.Client copies the header it changes).
	header  map[string]http.Header
	hc      *http.Client
	poster  Poster            // hc's Transport, used directly
	head    map[string][]byte // the request heads poster writes, by encoding
	timeout time.Duration     // per request; 0: none

	bufs sync.Pool // *[]byte compression buffers
}

// NewClient returns a client for opts.
func NewClient(opts ClientOptions) (*Client, error) {
	if opts.URL == "" {
		return nil, fmt.Errorf("remote-write URL is empty: %w", ErrInvalidOption)
	}
	if !strings.HasPrefix(opts.URL, "http://") && !strings.HasPrefix(opts.URL, "https://") {
		return nil, fmt.Errorf("remote-write URL %q is not http(s): %w", opts.URL, ErrInvalidOption)
	}
	enc := opts.Encoding
	switch enc {
	case "":
		enc = "snappy"
	case "snappy", "zstd":
	default:
		return nil, fmt.Errorf("encoding %q (want snappy or zstd): %w", enc, ErrInvalidOption)
	}
	u, err := url.Parse(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("remote-write URL: %w: %w", err, ErrInvalidOption)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("remote-write URL %q has no host: %w", opts.URL, ErrInvalidOption)
	}
	// A header net/http would refuse at every request (its Transport) or
	// change (Request.Write): refused here, once, naming the field only,
	// as the value may be a secret.
	if opts.BearerToken != "" && !httpguts.ValidHeaderFieldValue(opts.BearerToken) {
		return nil, fmt.Errorf("bearer token has a character an HTTP header cannot carry (a newline?): %w", ErrInvalidOption)
	}
	for k, v := range opts.Headers {
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) {
			return nil, fmt.Errorf("header %q: invalid name or value: %w", k, ErrInvalidOption)
		}
	}
	c := &Client{url: opts.URL, u: u, encoding: enc, hc: opts.HTTPClient, timeout: max(opts.Timeout, 0), header: make(map[string]http.Header, 2)}
	ua := opts.UserAgent
	if ua == "" {
		ua = "tillpipe"
	}
	for _, e := range []string{"snappy", "zstd"} {
		h := http.Header{}
		h.Set("Content-Type", "application/x-protobuf")
		h.Set("Content-Encoding", e)
		h.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
		h.Set("User-Agent", ua)
		if opts.BearerToken != "" {
			h.Set("Authorization", "Bearer "+opts.BearerToken)
		}
		for k, v := range opts.Headers {
			h.Set(k, v)
		}
		c.header[e] = h
	}
	if hc := opts.HTTPClient; hc != nil && hc.Timeout == 0 && hc.Jar == nil {
		if p, ok := hc.Transport.(Poster); ok {
			c.poster, c.head = p, make(map[string][]byte, 2)
			for e, h := range c.header {
				c.head[e] = requestHead(u, h)
			}
		}
	}
	if c.hc == nil {
		if c.timeout == 0 {
			c.timeout = 30 * time.Second
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = opts.TLS
		tr.MaxIdleConnsPerHost = 16
		c.hc = &http.Client{Transport: tr}
	}
	return c, nil
}

// Encoding is the body compression this client uses.
func (c *Client) Encoding() string { return c.encoding }

// Send compresses body, a marshaled WriteRequest, and POSTs it. It returns
// nil on 2xx, a *RecoverableError when a retry may succeed and a *StatusError
// otherwise.
func (c *Client) Send(ctx context.Context, body []byte) error {
	bp, _ := c.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer c.bufs.Put(bp)
	*bp = Compress((*bp)[:0], body, c.encoding)
	return c.post(ctx, *bp, c.encoding)
}

// SendSnappy posts compressed, a WriteRequest compressed already with
// snappy (the spec's encoding, whatever the client's Encoding), as Send
// does. A caller that holds requests compressed, or retries them, saves
// compressing them again.
func (c *Client) SendSnappy(ctx context.Context, compressed []byte) error {
	return c.post(ctx, compressed, "snappy")
}

func (c *Client) post(ctx context.Context, compressed []byte, encoding string) error {
	if c.poster != nil {
		var deadline time.Time
		if c.timeout > 0 {
			deadline = time.Now().Add(c.timeout)
		}
		resp, err := c.poster.Post(ctx, c.u, c.head[encoding], compressed, deadline)
		if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("no answer within %s: %w", c.timeout, context.DeadlineExceeded)
		}
		return c.answer(ctx, resp, err)
	}
	rctx := ctx
	if c.timeout > 0 {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel() // after the body is read below
	}
	// What http.NewRequestWithContext builds, without parsing the URL and
	// building the header again for every request.
	body := func() (io.ReadCloser, error) {
		if len(compressed) == 0 {
			return http.NoBody, nil
		}
		return io.NopCloser(bytes.NewReader(compressed)), nil
	}
	rb, _ := body()
	req := (&http.Request{
		Method: http.MethodPost, URL: c.u, Host: c.u.Host, Header: c.header[encoding],
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Body: rb, GetBody: body, ContentLength: int64(len(compressed)),
	}).WithContext(rctx)
	resp, err := c.hc.Do(req)
	return c.answer(ctx, resp, err)
}

// answer turns the outcome of a POST into Send's error: nil for a 2xx,
// a StatusError for another status (recoverable for a 5xx or 429), a
// recoverable error for a failure without an answer unless ctx ended.
func (c *Client) answer(ctx context.Context, resp *http.Response, err error) error {
	if err != nil {
		if ctx.Err() != nil { // the caller's context; the request's timeout is recoverable
			return fmt.Errorf("post remote-write to %s: %w", c.url, ctx.Err())
		}
		return &RecoverableError{Err: fmt.Errorf("post remote-write to %s: %w", c.url, err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	line := strings.TrimSpace(string(msg))
	if i := strings.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	serr := &StatusError{StatusCode: resp.StatusCode, Body: line}
	if resp.StatusCode/100 == 5 || resp.StatusCode == http.StatusTooManyRequests {
		return &RecoverableError{StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), Err: serr}
	}
	return serr
}

// requestHead is the head of a POST to u with header h (valid names and
// values, checked by NewClient), as http.Request writes it but for the
// order (Host first, then h's sorted), without Content-Length: what a
// Poster writes.
func requestHead(u *url.URL, h http.Header) []byte {
	host := u.Host
	// An IPv6 zone is the client's own business (net/http drops it too).
	if i := strings.Index(host, "%"); strings.HasPrefix(host, "[") && i > 0 {
		if j := strings.LastIndex(host, "]"); j > i {
			host = host[:i] + host[j:]
		}
	}
	var b bytes.Buffer
	b.WriteString("POST " + u.RequestURI() + " HTTP/1.1\r\nHost: " + host + "\r\n")
	_ = h.Write(&b) // a bytes.Buffer does not fail
	return b.Bytes()
}

// Compress appends body compressed with encoding ("snappy" or "zstd") to dst.
func Compress(dst, body []byte, encoding string) []byte {
	if encoding == "zstd" {
		return zstdEncoder.EncodeAll(body, dst)
	}
	n := snappy.MaxEncodedLen(len(body))
	start := len(dst)
	dst = grow(dst, n)
	out := snappy.Encode(dst[start:start+n], body)
	return dst[:start+len(out)]
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

// zstdEncoder is shared: EncodeAll is safe for concurrent use.
var zstdEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))

// StatusError is a non-2xx answer. Body holds the first line of the server's
// message.
type StatusError struct {
	StatusCode int
	Body       string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("remote-write answered %d: %s", e.StatusCode, e.Body)
}

// RecoverableError is a failure that may succeed when retried: no
// connection, a 5xx or a 429. RetryAfter is the server's Retry-After, zero
// when absent.
type RecoverableError struct {
	StatusCode int // 0 for network errors
	RetryAfter time.Duration
	Err        error
}

func (e *RecoverableError) Error() string { return e.Err.Error() }
func (e *RecoverableError) Unwrap() error { return e.Err }

// IsRecoverable reports whether err is worth retrying.
func IsRecoverable(err error) bool {
	var re *RecoverableError
	return errors.As(err, &re)
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or bad.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
