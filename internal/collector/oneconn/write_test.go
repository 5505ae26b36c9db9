package oneconn

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
)

// writeRequest writes what Request.Write writes, for every request it
// takes, and takes the collector's.
func TestWriteRequest_AsRequestWrite(t *testing.T) {
	body := strings.Repeat("snappy-block ", 8)
	newReq := func(method, url, body string) *http.Request {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, url, rd)
		if err != nil {
			t.Fatal(err)
		}
		return req
	}
	for _, tc := range []struct {
		name  string
		quick bool // written by writeRequest, not handed to Request.Write
		req   func() *http.Request
	}{
		{"collector", true, func() *http.Request {
			r := newReq(http.MethodPost, "http://store-server:9201/api/v1/write", body)
			r.Header.Set("Content-Type", "application/x-protobuf")
			r.Header.Set("Content-Encoding", "snappy")
			r.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
			r.Header.Set("User-Agent", "tillpipe-collector")
			r.Header.Set("Authorization", "Bearer s3cret")
			return r
		}},
		{"get", true, func() *http.Request { return newReq(http.MethodGet, "http://h/x?a=b&c=%20d", "") }},
		{"empty method", true, func() *http.Request { r := newReq("", "http://h/", ""); r.Method = ""; return r }},
		{"empty post", true, func() *http.Request { return newReq(http.MethodPost, "http://h/", "") }},
		{"empty delete", true, func() *http.Request { return newReq(http.MethodDelete, "http://h/", "") }},
		{"no user agent", true, func() *http.Request {
			r := newReq(http.MethodPost, "http://h/", "x")
			r.Header.Set("User-Agent", "")
			return r
		}},
		{"values and tabs", true, func() *http.Request {
			r := newReq(http.MethodPut, "http://h:80/p", "x")
			r.Header.Add("X-Multi", "one")
			r.Header.Add("X-Multi", "two\tthree")
			r.Header["X-Empty"] = nil
			return r
		}},
		{"host override", true, func() *http.Request { r := newReq(http.MethodGet, "http://h/", ""); r.Host = "other:8080"; return r }},
		{"ipv6", true, func() *http.Request { return newReq(http.MethodGet, "http://[::1]:9201/", "") }},

		{"lower-case key", false, func() *http.Request {
			r := newReq(http.MethodGet, "http://h/", "")
			r.Header["user-agent"] = []string{"x"}
			return r
		}},
		{"padded value", false, func() *http.Request {
			r := newReq(http.MethodGet, "http://h/", "")
			r.Header.Set("X-A", " v")
			return r
		}},
		{"newline in value", false, func() *http.Request {
			r := newReq(http.MethodGet, "http://h/", "")
			r.Header.Set("X-A", "a\r\nX-B: b")
			return r
		}},
		{"bad key", false, func() *http.Request {
			r := newReq(http.MethodGet, "http://h/", "")
			r.Header["X A"] = []string{"v"}
			return r
		}},
		{"host in header", false, func() *http.Request {
			r := newReq(http.MethodGet, "http://h/", "")
			r.Header.Set("Host", "x")
			return r
		}},
		{"chunked", false, func() *http.Request {
			r := newReq(http.MethodPost, "http://h/", "")
			r.Body, r.ContentLength = io.NopCloser(strings.NewReader("x")), -1
			return r
		}},
		{"zero length with body", false, func() *http.Request {
			r := newReq(http.MethodPost, "http://h/", "")
			r.Body = io.NopCloser(strings.NewReader("x"))
			return r
		}},
		{"close", false, func() *http.Request { r := newReq(http.MethodGet, "http://h/", ""); r.Close = true; return r }},
		{"trailer", false, func() *http.Request {
			r := newReq(http.MethodPost, "http://h/", "x")
			r.Trailer = http.Header{"X-T": nil}
			return r
		}},
		{"many headers", false, func() *http.Request {
			r := newReq(http.MethodGet, "http://h/", "")
			for i := range maxQuickHeaders + 1 {
				r.Header.Set(fmt.Sprintf("X-H%d", i), "v")
			}
			return r
		}},
		{"zone", false, func() *http.Request { return newReq(http.MethodGet, "http://[fe80::1%25eth0]:80/", "") }},
		{"unicode host", false, func() *http.Request { return newReq(http.MethodGet, "http://bücher.example/", "") }},
		{"connect", false, func() *http.Request { return newReq(http.MethodConnect, "http://h:443", "") }},
		{"traced", false, func() *http.Request {
			r := newReq(http.MethodGet, "http://h/", "")
			return r.WithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{}))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got bytes.Buffer
			bw := bufio.NewWriter(&got)
			done, err := writeRequest(bw, tc.req())
			if err != nil {
				t.Fatal(err)
			}
			bw.Flush()
			if done != tc.quick {
				t.Fatalf("written here: %v, want %v", done, tc.quick)
			}
			if !done {
				if got.Len() > 0 {
					t.Fatalf("handed on after writing %q", got.String())
				}
				return
			}
			var want bytes.Buffer
			if err := tc.req().Write(&want); err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Errorf("wrote\n%q\nRequest.Write writes\n%q", got.String(), want.String())
			}
		})
	}
}

// closeCounter counts Close calls on a request body.
type closeCounter struct {
	io.Reader
	closed int
}

func (c *closeCounter) Close() error { c.closed++; return nil }

// A body of another length than ContentLength is an error, as with
// Request.Write, and the body is closed either way.
func TestWriteRequest_BodyLength(t *testing.T) {
	for _, tc := range []struct {
		body   string
		length int64
		err    string
	}{
		{"four", 4, ""},
		{"four", 6, "http: ContentLength=6 with Body length 4"},
		{"four", 2, "http: ContentLength=2 with Body length 4"},
	} {
		body := &closeCounter{Reader: strings.NewReader(tc.body)}
		req, _ := http.NewRequest(http.MethodPost, "http://h/", nil)
		req.Body, req.ContentLength = body, tc.length
		done, err := writeRequest(bufio.NewWriter(io.Discard), req)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if !done || got != tc.err {
			t.Errorf("body %q length %d: done %v, err %v, want %q", tc.body, tc.length, done, err, tc.err)
		}
		if body.closed != 1 {
			t.Errorf("body %q length %d: closed %d times, want once", tc.body, tc.length, body.closed)
		}
	}
}
