package remotewrite

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"

	"tillpipe/internal/collector/oneconn"
)

func testRequest() []byte {
	wr := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "device", Value: "till-01"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: 1700000000000}},
	}}}
	return wr.MarshalProtobuf(nil)
}

// TestClientServerRoundTrip sends through the client into a server that
// decodes with ReadBody, for both encodings.
func TestClientServerRoundTrip(t *testing.T) {
	for _, enc := range []string{"snappy", "zstd"} {
		t.Run(enc, func(t *testing.T) {
			body := testRequest()
			var got []byte
			var gotHeaders http.Header
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var err error
				_, got, err = ReadBody(r, 1<<20, nil, nil)
				if err != nil {
					http.Error(w, err.Error(), StatusFor(err))
					return
				}
				gotHeaders = r.Header.Clone()
				w.WriteHeader(http.StatusNoContent)
			}))
			defer srv.Close()
			c, err := NewClient(ClientOptions{URL: srv.URL, Encoding: enc, BearerToken: "s3cret", Headers: map[string]string{"X-Scope-OrgID": "retail"}})
			if err != nil {
				t.Fatal(err)
			}
			check := func(how, wantEnc string) {
				t.Helper()
				if !bytes.Equal(got, body) {
					t.Fatalf("%s: server decoded %x, want %x", how, got, body)
				}
				for k, want := range map[string]string{"Content-Encoding": wantEnc, "Authorization": "Bearer s3cret", "X-Scope-OrgID": "retail", "Content-Type": "application/x-protobuf"} {
					if g := gotHeaders.Get(k); g != want {
						t.Errorf("%s: header %s = %q, want %q", how, k, g, want)
					}
				}
			}
			if err := c.Send(context.Background(), body); err != nil {
				t.Fatalf("Send: %v", err)
			}
			check("Send", enc)
			// SendSnappy posts a body compressed by the caller, with
			// snappy whatever the client's encoding.
			got = nil
			if err := c.SendSnappy(context.Background(), snappy.Encode(nil, body)); err != nil {
				t.Fatalf("SendSnappy: %v", err)
			}
			check("SendSnappy", "snappy")
		})
	}
}

func TestClientErrors(t *testing.T) {
	cases := []struct {
		name        string
		status      int
		retryAfter  string
		recoverable bool
		wantRetry   time.Duration
	}{
		{name: "server_error_is_recoverable", status: 500, recoverable: true},
		{name: "unavailable_with_retry_after", status: 503, retryAfter: "7", recoverable: true, wantRetry: 7 * time.Second},
		{name: "too_many_requests_is_recoverable", status: 429, retryAfter: "2", recoverable: true, wantRetry: 2 * time.Second},
		{name: "bad_request_is_permanent", status: 400},
		{name: "unauthorized_is_permanent", status: 401},
		{name: "payload_too_large_is_permanent", status: 413},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				http.Error(w, "reason line\nsecond line", tc.status)
			}))
			defer srv.Close()
			for _, opts := range []ClientOptions{{URL: srv.URL}, {URL: srv.URL, HTTPClient: &http.Client{Transport: &oneconn.Transport{}}}} {
				c, err := NewClient(opts)
				if err != nil {
					t.Fatal(err)
				}
				err = c.Send(context.Background(), testRequest())
				if err == nil {
					t.Fatal("Send succeeded on a non-2xx answer")
				}
				if IsRecoverable(err) != tc.recoverable {
					t.Fatalf("IsRecoverable(%v) = %v, want %v", err, !tc.recoverable, tc.recoverable)
				}
				var se *StatusError
				if !errors.As(err, &se) || se.StatusCode != tc.status || se.Body != "reason line" {
					t.Fatalf("error %v: want StatusError %d with the first body line", err, tc.status)
				}
				var re *RecoverableError
				if errors.As(err, &re) && re.RetryAfter != tc.wantRetry {
					t.Fatalf("RetryAfter = %v, want %v", re.RetryAfter, tc.wantRetry)
				}
			}
		})
	}
	t.Run("timeout_is_recoverable", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-release // answers only once the client gave up
		}))
		defer srv.Close()
		defer close(release)
		for _, opts := range []ClientOptions{
			{URL: srv.URL, Timeout: 100 * time.Millisecond},
			{URL: srv.URL, Timeout: 100 * time.Millisecond, HTTPClient: &http.Client{}},
			{URL: srv.URL, Timeout: 100 * time.Millisecond, HTTPClient: &http.Client{Transport: &oneconn.Transport{}}},
		} {
			c, _ := NewClient(opts)
			err := c.Send(context.Background(), testRequest())
			if !IsRecoverable(err) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Send to a server that does not answer (client %+v): %v, want recoverable, deadline exceeded", opts.HTTPClient, err)
			}
		}
		for _, opts := range []ClientOptions{
			{URL: srv.URL, Timeout: time.Minute},
			{URL: srv.URL, Timeout: time.Minute, HTTPClient: &http.Client{Transport: &oneconn.Transport{}}},
		} {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			c, _ := NewClient(opts)
			if err := c.Send(ctx, testRequest()); IsRecoverable(err) || !errors.Is(err, context.Canceled) {
				t.Fatalf("Send with the caller's context canceled (client %+v): %v, want context.Canceled, not recoverable", opts.HTTPClient, err)
			}
		}
	})
	t.Run("connection_refused_is_recoverable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		c, _ := NewClient(ClientOptions{URL: "http://" + addr + "/api/v1/write"})
		if err := c.Send(context.Background(), testRequest()); !IsRecoverable(err) {
			t.Fatalf("Send to a closed port: %v, want recoverable", err)
		}
	})
}

func TestNewClientOptions(t *testing.T) {
	for _, o := range []ClientOptions{{}, {URL: "ftp://x"}, {URL: "http://x", Encoding: "gzip"}, {URL: "http:///api/v1/write"}, {URL: "http://relay:9201/%zz"},
		{URL: "http://x", BearerToken: "line1\nline2"}, {URL: "http://x", Headers: map[string]string{"Bad Name": "v"}}, {URL: "http://x", Headers: map[string]string{"X-Tenant": "a\r\nInjected: 1"}}} {
		_, err := NewClient(o)
		if !errors.Is(err, ErrInvalidOption) {
			t.Errorf("NewClient(%+v) = %v, want ErrInvalidOption", o, err)
		}
		if o.BearerToken != "" && strings.Contains(err.Error(), o.BearerToken) {
			t.Errorf("the error shows the token: %v", err)
		}
	}
}

func TestReadBodyRejects(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 4096)
	cases := []struct {
		name     string
		encoding string
		body     []byte
		max      int64
		want     error
	}{
		{name: "bad_snappy", body: []byte("definitely not snappy"), max: 1 << 20, want: ErrBadEncoding},
		{name: "bad_zstd", encoding: "zstd", body: []byte("not zstd"), max: 1 << 20, want: ErrBadEncoding},
		{name: "unknown_encoding", encoding: "gzip", body: []byte("x"), max: 1 << 20, want: ErrBadEncoding},
		{name: "compressed_over_limit", body: Compress(nil, big, "snappy"), max: 10, want: ErrTooLarge},
		{name: "snappy_decodes_over_limit", body: Compress(nil, big, "snappy"), max: 1000, want: ErrTooLarge},
		{name: "zstd_decodes_over_limit", encoding: "zstd", body: Compress(nil, big, "zstd"), max: 1000, want: ErrTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(tc.body))
			if tc.encoding != "" {
				r.Header.Set("Content-Encoding", tc.encoding)
			}
			_, _, err := ReadBody(r, tc.max, nil, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ReadBody = %v, want %v", err, tc.want)
			}
			wantStatus := map[error]int{ErrBadEncoding: 400, ErrTooLarge: 413}[tc.want]
			if StatusFor(err) != wantStatus {
				t.Fatalf("StatusFor = %d, want %d", StatusFor(err), wantStatus)
			}
		})
	}
	t.Run("chunked_body_over_limit", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/write", io.MultiReader(strings.NewReader(strings.Repeat("y", 2000))))
		r.ContentLength = -1
		if _, _, err := ReadBody(r, 1000, nil, nil); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("ReadBody = %v, want ErrTooLarge", err)
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{"": 0, "5": 5 * time.Second, "-1": 0, "soon": 0, now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func FuzzDecompress(f *testing.F) {
	body := testRequest()
	f.Add(Compress(nil, body, "snappy"), false)
	f.Add(Compress(nil, body, "zstd"), true)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, false)
	f.Fuzz(func(t *testing.T, src []byte, useZstd bool) {
		enc := "snappy"
		if useZstd {
			enc = "zstd"
		}
		out, err := Decompress(nil, src, enc, 1<<20)
		if err == nil && len(out) > 1<<20 {
			t.Fatalf("decompressed %d bytes over the 1 MiB limit", len(out))
		}
	})
}

// A client whose transport is a Poster (oneconn.Transport) writes the same
// request as through net/http: request line, Host and every header but
// the Accept-Encoding net/http's Transport adds, read back with net/http's
// parser on a raw listener; with an IPv6 zone in the URL, which the Host
// header leaves out, and a query.
func TestClientPosterRequest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type read struct {
		req  *http.Request
		body []byte
	}
	reqs := make(chan read, 2)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body, _ := io.ReadAll(req.Body)
					reqs <- read{req, body}
					io.WriteString(conn, "HTTP/1.1 204 No Content\r\n\r\n")
				}
			}()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	// The zone is dropped from the Host header; the connection goes to
	// 127.0.0.1 whatever the URL's host, through Dial.
	u := fmt.Sprintf("http://[fe80::1%%25lo]:%d/api/v1/write?tenant=7", port)
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
	}
	opts := ClientOptions{URL: u, BearerToken: "s3cret", Headers: map[string]string{"X-Scope-OrgID": "retail"}, UserAgent: "tillpipe-collector"}
	viaHTTP, viaPoster := opts, opts
	viaHTTP.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: dial}}
	viaPoster.HTTPClient = &http.Client{Transport: &oneconn.Transport{Dial: dial}}
	var got []read
	for _, o := range []ClientOptions{viaHTTP, viaPoster} {
		c, err := NewClient(o)
		if err != nil {
			t.Fatal(err)
		}
		if (c.poster != nil) != (o.HTTPClient == viaPoster.HTTPClient) {
			t.Fatalf("poster %v for transport %T", c.poster != nil, o.HTTPClient.Transport)
		}
		if err := c.SendSnappy(context.Background(), []byte("compressed")); err != nil {
			t.Fatal(err)
		}
		got = append(got, <-reqs)
	}
	h, p := got[0], got[1]
	h.req.Header.Del("Accept-Encoding")
	if h.req.Method != p.req.Method || h.req.RequestURI != p.req.RequestURI || h.req.Host != p.req.Host ||
		h.req.ContentLength != p.req.ContentLength || !bytes.Equal(h.body, p.body) || !reflect.DeepEqual(h.req.Header, p.req.Header) {
		t.Errorf("net/http wrote %s %s host %s length %d %v %q\nthe poster %s %s host %s length %d %v %q",
			h.req.Method, h.req.RequestURI, h.req.Host, h.req.ContentLength, h.req.Header, h.body,
			p.req.Method, p.req.RequestURI, p.req.Host, p.req.ContentLength, p.req.Header, p.body)
	}
	if p.req.Host != fmt.Sprintf("[fe80::1]:%d", port) || p.req.Header.Get("Authorization") != "Bearer s3cret" || p.req.Header.Get("X-Scope-OrgID") != "retail" {
		t.Errorf("the poster wrote host %s, headers %v", p.req.Host, p.req.Header)
	}
}
