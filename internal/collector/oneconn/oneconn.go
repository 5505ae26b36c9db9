// Package oneconn is an http.RoundTripper for a client that sends one
// request at a time to one server, as the collector does to its relay: it
// keeps one connection and makes each exchange on the calling goroutine,
// writing the request with [http.Request.Write] and reading the answer with
// [http.ReadResponse].
//
// net/http's Transport runs a reader and a writer goroutine per connection
// and hands every request and answer between them and the caller. This
// transport has none of that, and none of what the collector does not
// need either: no HTTP/2 (HTTPS is HTTP/1.1 with ALPN "http/1.1"), no
// proxy from the environment (the relay is on the store's network), no
// compression negotiation, one request at a time (a second caller waits
// for the first).
//
// With one P, as the collector runs, a 15 KB POST to a loopback server
// costs 18.5 µs and 53 allocations here against 22.3 µs and 67 through
// net/http (BenchmarkRoundTrip -cpu 1, the in-process server included).
// At the collector's 15 s, where every hand-off is taken cold, the
// collector measured 0.04-0.17 ms a cycle less side by side
// (internal/collector's doc). With two Ps net/http's overlapping reader
// and writer finish sooner in wall time (25 against 33 µs); the collector
// does not wait on that.
//
// Post is RoundTrip for a caller that has the request's head already
// written out (package remotewrite's Client, which builds it once): no
// http.Request, http.Client or context timer per request, and on a
// rawsys.Conn the head and body go out in one writev(2) without being
// copied into the write buffer. Cold, as at the collector's 15 s
// (remotewrite's BenchmarkSendSnappyCold: caches evicted before each
// request, 28 KB to an in-process server that drains it, GOMAXPROCS 1,
// the two ways alternated), a request cost 125-141 µs of CPU against
// 165-188 through http.Client and RoundTrip, server included: 33-47 µs
// less in each of three runs of 300.
//
// The answer's body is read whole before RoundTrip returns, up to MaxBody
// bytes (the rest is discarded with the connection), so the connection is
// free for the next request whatever the caller does with the body. A
// request on a kept connection that fails before any answer arrives (the
// server closed it while idle) is retried once on a new connection when its
// body can be rewound (http.NewRequest sets GetBody for bytes.Reader
// bodies), as net/http's Transport does.
//
// What the single goroutine cannot do: read an answer while a write is
// blocked. A server that answers before reading a body too big for the
// socket buffers (a 413) and then closes may reset the connection before
// the answer is read; the caller then gets the write's error. The
// collector's requests (28 KB for 30 containers) are far below the relay's
// limit and fit in the buffers, so its 413 comes from a request written
// whole, and is read.
package oneconn

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxBody bounds the answer body kept when Transport.MaxBody is 0.
const DefaultMaxBody = 64 << 10

// Transport is an http.RoundTripper over one kept connection. The zero
// value dials with a net.Dialer and uses Go's TLS defaults. It is safe for
// concurrent use; requests are made one at a time.
type Transport struct {
	// Dial opens the connection; nil uses a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS configures https requests; nil uses Go's defaults. ServerName
	// defaults to the request's host.
	TLS *tls.Config
	// MaxBody bounds the answer body read into memory; 0 means
	// DefaultMaxBody.
	MaxBody int64

	mu   sync.Mutex // held for a whole exchange
	conn net.Conn   // nil: none open
	addr string     // scheme and host:port of conn
	br   *bufio.Reader
	bw   *bufio.Writer

	postTarget atomic.Pointer[postTarget] // Post's last URL
	head       []byte                     // the head Post writes, with Content-Length
}

// postTarget is a URL given to Post and the target of its requests.
type postTarget struct {
	u    *url.URL
	addr string
}

var _ http.RoundTripper = (*Transport)(nil)

// RoundTrip sends req and returns the answer, its body already read.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.roundTrip(req)
	if err != nil && req.Body != nil {
		req.Body.Close() // as a RoundTripper must, even on errors
	}
	return resp, err
}

func (t *Transport) roundTrip(req *http.Request) (*http.Response, error) {
	addr, err := target(req.URL)
	if err != nil {
		return nil, err
	}
	rewindable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	first := true
	return t.do(req.Context(), req.URL, addr, rewindable, time.Time{}, func(ctx context.Context) (*http.Response, bool, error) {
		if !first {
			body, err := req.GetBody()
			if err != nil {
				return nil, false, fmt.Errorf("rewind request body: %w", err)
			}
			r := *req
			r.Body = body
			req = &r
		}
		first = false
		return t.exchange(ctx, func() error {
			if err := req.Write(t.bw); err != nil {
				return err
			}
			return t.bw.Flush()
		}, req, time.Time{})
	})
}

// Post sends a request whose head is already written out to u's host:
// head is the request line and header lines, each ending in CRLF, without
// Content-Length, which Post adds for body. It is RoundTrip without an
// http.Request, for a caller that sends the same head again and again (the
// collector's relay client, package remotewrite): nothing is built or
// copied for the request, and on a connection with a WriteV method
// (rawsys.Conn) head and body go out in one writev(2) from where they lie.
// The answer comes back as from RoundTrip, its body read whole. A deadline
// that is not zero bounds the exchange, as ctx does, without a timer of
// its own; redirects are not followed.
func (t *Transport) Post(ctx context.Context, u *url.URL, head, body []byte, deadline time.Time) (*http.Response, error) {
	pt := t.postTarget.Load()
	if pt == nil || pt.u != u {
		addr, err := target(u)
		if err != nil {
			return nil, err
		}
		pt = &postTarget{u, addr}
		t.postTarget.Store(pt)
	}
	return t.do(ctx, u, pt.addr, true, deadline, func(ctx context.Context) (*http.Response, bool, error) {
		t.head = append(strconv.AppendInt(append(append(t.head[:0], head...), "Content-Length: "...), int64(len(body)), 10), "\r\n\r\n"...)
		if vw, ok := t.conn.(interface {
			WriteV(a, b []byte) (int, error)
		}); ok {
			return t.exchange(ctx, func() error { _, err := vw.WriteV(t.head, body); return err }, nil, deadline)
		}
		return t.exchange(ctx, func() error {
			t.bw.Write(t.head)
			t.bw.Write(body)
			return t.bw.Flush()
		}, nil, deadline)
	})
}

// do makes one exchange on the kept connection to addr, connecting first
// when there is none, and once more on a new connection when a kept one
// failed before any answer came (the server closed it while idle) and the
// request can be sent again.
func (t *Transport) do(ctx context.Context, u *url.URL, addr string, rewindable bool, deadline time.Time, exchange func(context.Context) (*http.Response, bool, error)) (*http.Response, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn != nil && t.addr != addr {
		t.drop()
	}
	for attempt := 0; ; attempt++ {
		reused := t.conn != nil
		if !reused {
			dctx := ctx
			if !deadline.IsZero() { // rare: a timer for the dial only
				var cancel context.CancelFunc
				dctx, cancel = context.WithDeadline(ctx, deadline)
				defer cancel()
			}
			if err := t.connect(dctx, u.Scheme, addr, u.Hostname()); err != nil {
				return nil, err
			}
		}
		resp, answered, err := exchange(ctx)
		if err == nil {
			return resp, nil
		}
		t.drop()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if reused && !answered && attempt == 0 && rewindable && !errors.Is(err, os.ErrDeadlineExceeded) {
			continue // the server closed the kept connection: once more on a new one
		}
		return nil, err
	}
}

// target is the scheme and host:port u names.
func target(u *url.URL) (string, error) {
	if u == nil {
		return "", errors.New("oneconn: request has no URL")
	}
	port := u.Port()
	switch u.Scheme {
	case "http":
		if port == "" {
			port = "80"
		}
	case "https":
		if port == "" {
			port = "443"
		}
	default:
		return "", fmt.Errorf("oneconn: unsupported scheme %q", u.Scheme)
	}
	if u.Hostname() == "" {
		return "", errors.New("oneconn: request URL has no host")
	}
	return u.Scheme + "://" + net.JoinHostPort(u.Hostname(), port), nil
}

func (t *Transport) connect(ctx context.Context, scheme, addr, host string) error {
	hostport := addr[len(scheme)+len("://"):]
	dial := t.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	c, err := dial(ctx, "tcp", hostport)
	if err != nil {
		return err
	}
	if scheme == "https" {
		cfg := &tls.Config{}
		if t.TLS != nil {
			cfg = t.TLS.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return err
		}
		c = tc
	}
	t.conn, t.addr = c, addr
	if t.br == nil {
		t.br = bufio.NewReaderSize(c, 4<<10)
		// Headers and the body of a till's request (28 KB for 30
		// containers, as package snapblock encodes it) in one write(2):
		// one wake-up of the relay, not two. Only the pages a request
		// fills are touched.
		t.bw = bufio.NewWriterSize(c, 64<<10)
	} else {
		t.br.Reset(c)
		t.bw.Reset(c)
	}
	return nil
}

// exchange writes a request on the open connection with write and reads
// the answer whole; req, when not nil, is the request written (for
// http.ReadResponse and its Close). answered reports whether any of the
// answer had arrived when it failed.
func (t *Transport) exchange(ctx context.Context, write func() error, req *http.Request, deadline time.Time) (resp *http.Response, answered bool, err error) {
	conn := t.conn
	// ctx ending (cancelled, or its deadline) ends a write or read in
	// progress: a deadline in the past wakes it from the netpoller. The
	// connection has no deadline of its own but the caller's, reset after
	// the exchange so that no timer of the netpoller outlives it and wakes
	// the process between two requests.
	_ = conn.SetDeadline(deadline)
	if !deadline.IsZero() {
		defer conn.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	werr := write()
	var oe *net.OpError
	if werr != nil && !errors.As(werr, &oe) {
		return nil, false, werr // not the connection's: nothing to read
	}
	// A server may answer before it has read the whole request and close
	// (a 413 for a body over its limit; a TLS 1.3 server's alert for a
	// missing client certificate): its answer says more than the write's
	// broken pipe.
	if _, err := t.br.Peek(1); err != nil {
		if werr != nil && !(errors.As(err, &oe) && oe.Op == "remote error") {
			err = werr
		}
		return nil, false, err
	}
	resp, err = http.ReadResponse(t.br, req)
	if err != nil {
		return nil, true, err
	}
	if werr != nil {
		defer t.drop() // the request was not all written
	}
	limit := t.MaxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		resp.Body.Close()
		return nil, true, err
	}
	// More than limit left, or no framing but the connection's end: the
	// connection cannot carry another request.
	var more [1]byte
	if n, _ := resp.Body.Read(more[:]); n > 0 || resp.Close || req != nil && req.Close {
		t.drop() // first: Close would read what is left to the end
	}
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	return resp, true, nil
}

// drop closes the connection; the next request dials a new one.
func (t *Transport) drop() {
	if t.conn != nil {
		t.conn.Close()
		t.conn = nil
	}
}

// CloseIdleConnections closes the kept connection (http.Client calls it).
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.drop()
}
