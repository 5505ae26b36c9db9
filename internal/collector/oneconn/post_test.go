package oneconn

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"tillpipe/internal/collector/rawsys"
)

const postHead = "POST /api/v1/write HTTP/1.1\r\nHost: relay:9201\r\nContent-Encoding: snappy\r\nUser-Agent: tillpipe-collector\r\n"

// deadlineConn records the deadlines set on a connection.
type deadlineConn struct {
	net.Conn
	mu        sync.Mutex
	deadlines []time.Time
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadlines = append(c.deadlines, t)
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *deadlineConn) last() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadlines[len(c.deadlines)-1]
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Post writes head, Content-Length and body, on a raw connection in one
// writev and on others through the buffered writer, plain and TLS; the
// server reads an ordinary request, and the connection is kept.
func TestPost_Request(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tls   bool
		dial  func(ctx context.Context, network, addr string) (net.Conn, error)
		wantV bool // the connection has WriteV
	}{
		{name: "rawsys_writev", dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return rawsys.Dial(ctx, &net.Dialer{}, network, addr)
		}, wantV: true},
		{name: "net_conn"},
		{name: "tls", tls: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			type seen struct {
				method, uri, host, enc, ua string
				length                     int64
				body                       string
			}
			got := make(chan seen, 4)
			s := newServer(t, tc.tls, func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got <- seen{r.Method, r.RequestURI, r.Host, r.Header.Get("Content-Encoding"), r.UserAgent(), r.ContentLength, string(b)}
				w.WriteHeader(http.StatusNoContent)
			})
			tr := &Transport{Dial: tc.dial}
			if tc.tls {
				tr.TLS = &tls.Config{RootCAs: s.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
			}
			var wroteV bool
			if tc.dial != nil {
				tr.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
					c, err := tc.dial(ctx, network, addr)
					_, wroteV = c.(interface {
						WriteV(a, b []byte) (int, error)
					})
					return c, err
				}
			}
			u := mustParse(t, s.URL+"/api/v1/write")
			head := strings.Replace(postHead, "relay:9201", u.Host, 1)
			for i, body := range []string{strings.Repeat("b", 28<<10), "", "second"} {
				resp, err := tr.Post(context.Background(), u, []byte(head), []byte(body), time.Now().Add(10*time.Second))
				if err != nil {
					t.Fatalf("post %d: %v", i, err)
				}
				if resp.StatusCode != http.StatusNoContent {
					t.Fatalf("post %d: status %d", i, resp.StatusCode)
				}
				want := seen{http.MethodPost, "/api/v1/write", u.Host, "snappy", "tillpipe-collector", int64(len(body)), body}
				if g := <-got; g != want {
					t.Fatalf("post %d: server saw %+v, want %+v", i, g, want)
				}
			}
			if wroteV != tc.wantV {
				t.Errorf("connection with WriteV: %v, want %v", wroteV, tc.wantV)
			}
			if n := s.conns.Load(); n != 1 {
				t.Errorf("%d connections for 3 requests, want 1", n)
			}
		})
	}
}

// A kept connection the server closed while idle is replaced: the request
// reaches the server once.
func TestPost_ServerClosedIdle(t *testing.T) {
	s := newServer(t, false, nil)
	tr := &Transport{}
	u := mustParse(t, s.URL)
	head := []byte("POST / HTTP/1.1\r\nHost: " + u.Host + "\r\n")
	post := func(body string) {
		t.Helper()
		resp, err := tr.Post(context.Background(), u, head, []byte(body), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(resp.Body); string(b) != body {
			t.Fatalf("echo %q, want %q", b, body)
		}
	}
	post("one")
	s.CloseClientConnections()
	time.Sleep(10 * time.Millisecond) // the FIN reaches the client's socket
	post("two")
	if n, r := s.conns.Load(), s.requests.Load(); n != 2 || r != 2 {
		t.Errorf("%d connections, %d requests served; want 2 and 2", n, r)
	}
}

// The deadline ends an exchange the server does not answer, and is not
// retried; after every exchange the connection is left without a deadline,
// so that no netpoller timer outlives the request and wakes the process.
// A cancelled context ends the exchange too.
func TestPost_DeadlineAndContext(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Header.Get("X-Slow") != "" {
			<-release
		}
	})
	defer close(release)
	var conns []*deadlineConn
	tr := &Transport{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		dc := &deadlineConn{Conn: c}
		conns = append(conns, dc)
		return dc, nil
	}}
	u := mustParse(t, s.URL)
	fast := []byte("POST / HTTP/1.1\r\nHost: " + u.Host + "\r\n")
	slow := []byte("POST / HTTP/1.1\r\nHost: " + u.Host + "\r\nX-Slow: 1\r\n")

	if _, err := tr.Post(context.Background(), u, fast, []byte("x"), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if d := conns[0].last(); !d.IsZero() {
		t.Fatalf("deadline %v left on the connection after the exchange", d)
	}
	_, err := tr.Post(context.Background(), u, slow, []byte("x"), time.Now().Add(100*time.Millisecond))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err %v, want the deadline's", err)
	}
	if r := s.requests.Load(); r != 2 {
		t.Errorf("%d requests served, want 2 (no retry past the deadline)", r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := tr.Post(ctx, u, slow, []byte("x"), time.Time{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v with the context cancelled, want context.Canceled", err)
	}
	if _, err := tr.Post(context.Background(), u, fast, []byte("x"), time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("after a timeout: %v", err)
	}
	if d := conns[len(conns)-1].last(); !d.IsZero() {
		t.Fatalf("deadline %v left on the connection after the exchange", d)
	}
}

func TestPost_BadURL(t *testing.T) {
	tr := &Transport{}
	for _, raw := range []string{"ftp://x/", "http:///path"} {
		if _, err := tr.Post(context.Background(), mustParse(t, raw), []byte("POST / HTTP/1.1\r\n"), nil, time.Time{}); err == nil {
			t.Errorf("%s: no error", raw)
		}
	}
}

// A server that answers before reading the body (413 for a body over its
// limit): Post returns the answer, and the next request is answered.
func TestPost_EarlyAnswer(t *testing.T) {
	s := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > 1<<10 {
			http.Error(w, "body over 1 KiB", http.StatusRequestEntityTooLarge)
			return
		}
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
	tr := &Transport{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return rawsys.Dial(ctx, &net.Dialer{}, network, addr)
	}}
	u := mustParse(t, s.URL)
	head := []byte("POST / HTTP/1.1\r\nHost: " + u.Host + "\r\n")
	resp, err := tr.Post(context.Background(), u, head, []byte(strings.Repeat("z", 64<<10)), time.Now().Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "over 1 KiB") {
		t.Fatalf("%d %q, want the 413", resp.StatusCode, b)
	}
	resp, err = tr.Post(context.Background(), u, head, []byte("small"), time.Now().Add(10*time.Second))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("after the 413: %v %v", resp, err)
	}
}
