package oneconn

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// server is a real net/http server that echoes request bodies and counts
// the connections it accepted and the requests it served.
type server struct {
	*httptest.Server
	conns, requests atomic.Int64
}

func newServer(t *testing.T, tlsOn bool, h func(w http.ResponseWriter, r *http.Request)) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if h != nil {
			h(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Proto", r.Proto)
		w.Write(body)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	if tlsOn {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

func post(t *testing.T, c *http.Client, ctx context.Context, url, body string) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b), nil
}

func mustPost(t *testing.T, c *http.Client, url, body string) *http.Response {
	t.Helper()
	resp, got, err := post(t, c, context.Background(), url, body)
	if err != nil {
		t.Fatalf("POST %q: %v", body, err)
	}
	if resp.StatusCode != http.StatusOK || got != body {
		t.Fatalf("POST %q: %d %q", body, resp.StatusCode, got)
	}
	return resp
}

func TestRoundTrip_KeepsOneConnection(t *testing.T) {
	s := newServer(t, false, nil)
	c := &http.Client{Transport: &Transport{}}
	for i := range 5 {
		mustPost(t, c, s.URL, strings.Repeat("x", i*10_000))
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("%d connections for 5 requests, want 1", n)
	}
}

func TestRoundTrip_ConcurrentCallersTakeTurns(t *testing.T) {
	s := newServer(t, false, nil)
	c := &http.Client{Transport: &Transport{}}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 10 {
				mustPost(t, c, s.URL, strings.Repeat(string(rune('a'+i)), 1000+j))
			}
		})
	}
	wg.Wait()
	if n := s.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// A kept connection the server closed while idle is replaced, and the
// request reaches the server once.
func TestRoundTrip_ServerClosedIdle(t *testing.T) {
	s := newServer(t, false, nil)
	c := &http.Client{Transport: &Transport{}}
	mustPost(t, c, s.URL, "one")
	s.CloseClientConnections()
	time.Sleep(10 * time.Millisecond) // the FIN reaches the client's socket
	mustPost(t, c, s.URL, "two")
	if n, r := s.conns.Load(), s.requests.Load(); n != 2 || r != 2 {
		t.Errorf("%d connections, %d requests served; want 2 and 2", n, r)
	}
}

// A kept connection that breaks after the answer began is not retried:
// the server may have acted on the request.
func TestRoundTrip_NoRetryOnceAnswered(t *testing.T) {
	var s *server
	s = newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if s.requests.Load() == 1 {
			return // 200, connection kept
		}
		conn, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		bw.WriteString("HTTP/1.1 20")
		bw.Flush()
		conn.Close()
	})
	c := &http.Client{Transport: &Transport{}}
	if _, _, err := post(t, c, context.Background(), s.URL, "x"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := post(t, c, context.Background(), s.URL, "x"); err == nil {
		t.Fatal("a truncated answer was taken")
	}
	if r := s.requests.Load(); r != 2 {
		t.Fatalf("%d requests served, want 2 (no retry)", r)
	}
}

func TestRoundTrip_BodyOverLimitClosesConnection(t *testing.T) {
	big := strings.Repeat("y", 100_000)
	s := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, big)
	})
	c := &http.Client{Transport: &Transport{MaxBody: 1000}}
	for range 2 {
		_, got, err := post(t, c, context.Background(), s.URL, "x")
		if err != nil {
			t.Fatal(err)
		}
		if got != big[:1000] {
			t.Fatalf("body of %d bytes, want the first 1000", len(got))
		}
	}
	if n := s.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the first could not be reused)", n)
	}
}

func TestRoundTrip_ConnectionCloseAnswer(t *testing.T) {
	s := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusNoContent)
	})
	c := &http.Client{Transport: &Transport{}}
	for range 3 {
		resp, _, err := post(t, c, context.Background(), s.URL, "x")
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("%v %v", resp, err)
		}
	}
	if n := s.conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

func TestRoundTrip_ContextEndsExchange(t *testing.T) {
	release := make(chan struct{})
	var slow atomic.Bool
	slow.Store(true)
	s := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if slow.Load() {
			<-release
		}
	})
	defer close(release)
	c := &http.Client{Transport: &Transport{}}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _, err := post(t, c, ctx, s.URL, "x")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the context's deadline", err)
	}
	slow.Store(false)
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, _, err := post(t, c, ctx2, s.URL, "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v with a cancelled context, want context.Canceled", err)
	}
	resp, _, err := post(t, c, context.Background(), s.URL, "x")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after a timeout: %v %v", resp, err)
	}
}

func TestRoundTrip_TLS(t *testing.T) {
	s := newServer(t, true, nil)
	pool := s.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	c := &http.Client{Transport: &Transport{TLS: &tls.Config{RootCAs: pool}}}
	resp := mustPost(t, c, s.URL, "secret")
	if p := resp.Header.Get("X-Proto"); p != "HTTP/1.1" {
		t.Errorf("server saw %s, want HTTP/1.1", p)
	}
	mustPost(t, c, s.URL, "again")
	if n := s.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}

	untrusting := &http.Client{Transport: &Transport{}}
	if _, _, err := post(t, untrusting, context.Background(), s.URL, "x"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("err %v, want a certificate error", err)
	}
}

func TestRoundTrip_FollowsNewHost(t *testing.T) {
	a, b := newServer(t, false, nil), newServer(t, false, nil)
	c := &http.Client{Transport: &Transport{}}
	mustPost(t, c, a.URL, "a")
	mustPost(t, c, b.URL, "b")
	mustPost(t, c, a.URL, "a")
	if na, nb := a.conns.Load(), b.conns.Load(); na != 2 || nb != 1 {
		t.Errorf("connections %d and %d, want 2 and 1", na, nb)
	}
}

func TestRoundTrip_BadRequests(t *testing.T) {
	tr := &Transport{}
	for _, url := range []string{"ftp://x/", "http:///path"} {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.RoundTrip(req); err == nil {
			t.Errorf("%s: no error", url)
		}
	}
	// Dial errors come back as they are.
	tr.Dial = func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("no route") }
	req, _ := http.NewRequest(http.MethodPost, "http://relay:9201/api/v1/write", bytes.NewReader([]byte("x")))
	if _, err := tr.RoundTrip(req); err == nil || err.Error() != "no route" {
		t.Errorf("err %v, want the dialer's", err)
	}
}

// The bytes on the wire are an ordinary HTTP/1.1 request: read back with
// net/http's own parser on a raw listener.
func TestRoundTrip_WireFormat(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan *http.Request, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
		got <- req
		io.WriteString(conn, "HTTP/1.1 204 No Content\r\n\r\n")
	}()
	req, _ := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+"/api/v1/write", strings.NewReader("payload"))
	req.Header.Set("Content-Encoding", "snappy")
	resp, err := (&Transport{}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("status %d", resp.StatusCode)
	}
	r := <-got
	body, _ := io.ReadAll(r.Body)
	if r.Method != http.MethodPost || r.URL.Path != "/api/v1/write" || r.ContentLength != 7 || string(body) != "payload" ||
		r.Header.Get("Content-Encoding") != "snappy" || r.Host != ln.Addr().String() {
		t.Errorf("server read %s %s, length %d, body %q, headers %v, host %s", r.Method, r.URL, r.ContentLength, body, r.Header, r.Host)
	}
}

// A server that answers before reading the request's body (413 for a body
// over its limit): the answer is returned. (A body too big for the socket
// buffers may end in the write's error instead: see the package doc.)
func TestRoundTrip_EarlyAnswer(t *testing.T) {
	s := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "body over 1 MiB", http.StatusRequestEntityTooLarge)
	})
	c := &http.Client{Transport: &Transport{}}
	resp, got, err := post(t, c, context.Background(), s.URL, strings.Repeat("z", 64<<10))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(got, "over 1 MiB") {
		t.Errorf("%d %q, want the 413", resp.StatusCode, got)
	}
}

// errReader fails after n bytes.
type errReader struct{ n int }

func (r *errReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errors.New("body source failed")
	}
	k := min(len(p), r.n)
	r.n -= k
	return k, nil
}

// A body that fails while it is written ends the exchange with its error
// at once (the server, waiting for the rest, will not answer), and the
// next request goes out on a new connection.
func TestRoundTrip_BodyReadError(t *testing.T) {
	s := newServer(t, false, nil)
	c := &http.Client{Transport: &Transport{}}
	mustPost(t, c, s.URL, "first")
	req, _ := http.NewRequest(http.MethodPost, s.URL, &errReader{n: 10})
	req.ContentLength = 100
	start := time.Now()
	if _, err := c.Do(req); err == nil || !strings.Contains(err.Error(), "body source failed") {
		t.Fatalf("err %v, want the body's", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v: waited for an answer that cannot come", d)
	}
	mustPost(t, c, s.URL, "after")
	if n := s.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the half-written one dropped)", n)
	}
}

// A request whose body cannot be rewound for the retry on a new
// connection fails with that error instead of sending an empty body.
func TestRoundTrip_RewindFails(t *testing.T) {
	s := newServer(t, false, nil)
	c := &http.Client{Transport: &Transport{}}
	mustPost(t, c, s.URL, "one")
	s.CloseClientConnections()
	time.Sleep(10 * time.Millisecond)
	req, _ := http.NewRequest(http.MethodPost, s.URL, strings.NewReader("two"))
	req.GetBody = func() (io.ReadCloser, error) { return nil, errors.New("gone") }
	if _, err := c.Do(req); err == nil || !strings.Contains(err.Error(), "rewind request body: gone") {
		t.Fatalf("err %v, want the rewind's", err)
	}
	if r := s.requests.Load(); r != 1 {
		t.Errorf("%d requests served, want 1", r)
	}
}

// BenchmarkRoundTrip posts a collector-sized body (15 KB) to a loopback
// net/http server through this transport and through net/http's, for the
// allocations and CPU the package doc cites. Both sides run in process, so
// ns/op includes the server's share.
func BenchmarkRoundTrip(b *testing.B) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 15000/16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	for _, bc := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"oneconn", &Transport{}},
		{"net_http", &http.Transport{MaxIdleConnsPerHost: 1, WriteBufferSize: 32 << 10}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := &http.Client{Transport: bc.rt}
			defer c.CloseIdleConnections()
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}
