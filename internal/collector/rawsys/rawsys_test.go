package rawsys_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"tillpipe/internal/collector/rawsys"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer accepts one connection on ln and copies what it reads back.
func echoServer(t *testing.T, ln net.Listener) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	t.Cleanup(func() { ln.Close(); <-done })
}

// TestConn_RoundTrip writes more than the socket buffers hold, so that
// writes wait for room in the netpoller (EAGAIN) while a concurrent read
// drains the echo, over TCP and over a unix socket, with Write and with
// WriteV: its first buffer small (a request's head), large (so that a
// partial writev ends inside it) or empty.
func TestConn_RoundTrip(t *testing.T) {
	for _, tc := range []struct {
		network string
		split   int // WriteV's first buffer is want[:split]; -1: Write
	}{{"tcp", -1}, {"unix", -1}, {"tcp", 180}, {"unix", 180}, {"tcp", 3 << 20}, {"tcp", 0}} {
		network := tc.network
		name := network + "/write"
		if tc.split >= 0 {
			name = fmt.Sprintf("%s/writev_%d", network, tc.split)
		}
		t.Run(name, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = filepath.Join(t.TempDir(), "s")
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			echoServer(t, ln)
			c, err := rawsys.Dial(t.Context(), &net.Dialer{}, network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			want := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
			werr := make(chan error, 1)
			go func() {
				var n int
				var err error
				if tc.split < 0 {
					n, err = c.Write(want)
				} else {
					n, err = c.(*rawsys.Conn).WriteV(want[:tc.split], want[tc.split:])
				}
				if err == nil && n != len(want) {
					err = io.ErrShortWrite
				}
				werr <- err
			}()
			got := make([]byte, len(want))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("echo differs from what was written")
			}
			if n, err := c.Read(nil); n != 0 || err != nil {
				t.Errorf("Read(nil) = %d, %v", n, err)
			}
		})
	}
}

// TestConn_Errors covers what net/http's transport relies on: io.EOF when
// the peer closes, a timeout net.Error at the read deadline, net.ErrClosed
// after Close.
func TestConn_Errors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := rawsys.Dial(t.Context(), &net.Dialer{}, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	buf := make([]byte, 16)

	t.Run("peer_closed_is_EOF", func(t *testing.T) {
		c := dial()
		defer c.Close()
		(<-accepted).Close()
		if _, err := c.Read(buf); err != io.EOF {
			t.Errorf("Read after the peer closed: %v, want io.EOF", err)
		}
	})
	t.Run("read_deadline_is_timeout", func(t *testing.T) {
		c := dial()
		defer c.Close()
		peer := <-accepted
		defer peer.Close()
		c.SetReadDeadline(time.Now().Add(-time.Second))
		_, err := c.Read(buf)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read past the deadline: %v, want a timeout", err)
		}
	})
	t.Run("closed_is_ErrClosed", func(t *testing.T) {
		c := dial()
		peer := <-accepted
		defer peer.Close()
		c.Close()
		if _, err := c.Read(buf); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close: %v, want net.ErrClosed", err)
		}
		if _, err := c.Write(buf); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write after Close: %v, want net.ErrClosed", err)
		}
		if _, err := c.(*rawsys.Conn).WriteV(buf, buf); !errors.Is(err, net.ErrClosed) {
			t.Errorf("WriteV after Close: %v, want net.ErrClosed", err)
		}
	})
	t.Run("reset_is_syscall_error", func(t *testing.T) {
		c := dial()
		defer c.Close()
		peer := <-accepted
		peer.(*net.TCPConn).SetLinger(0) // close with RST
		peer.Close()
		_, err := c.Read(buf)
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "read" || !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("Read after a reset: %v, want a read *net.OpError wrapping ECONNRESET", err)
		}
	})
}

// TestConn_HTTPTransport runs net/http's transport over Conn against real
// servers: plain HTTP with keep-alive, and HTTPS.
func TestConn_HTTPTransport(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(bytes.ToUpper(b))
	})
	for _, tc := range []struct {
		name string
		srv  *httptest.Server
	}{
		{"http", httptest.NewServer(h)},
		{"https", httptest.NewTLSServer(h)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer tc.srv.Close()
			tr := tc.srv.Client().Transport.(*http.Transport).Clone()
			tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				return rawsys.Dial(ctx, &net.Dialer{}, network, addr)
			}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr}
			for i := range 3 { // the second and third reuse the connection
				body := strings.Repeat("x", 100<<10)
				resp, err := hc.Post(tc.srv.URL, "text/plain", strings.NewReader(body))
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(got) != strings.ToUpper(body) {
					t.Fatalf("request %d: %d bytes, %v", i, len(got), err)
				}
			}
		})
	}
}

func TestFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("hello, world"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := rawsys.Open(filepath.Join(dir, "missing"), 0); err != syscall.ENOENT {
		t.Errorf("Open of a missing file: %v, want ENOENT", err)
	}
	if _, err := rawsys.Open("bad\x00path", 0); err == nil {
		t.Error("Open of a path with NUL: no error")
	}

	fd, err := rawsys.Open(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := rawsys.Read(fd, buf); err != nil || string(buf[:n]) != "hello, world" {
		t.Errorf("Read = %q, %v", buf[:n], err)
	}
	if n, err := rawsys.Read(fd, buf); n != 0 || err != nil {
		t.Errorf("Read at the end = %d, %v", n, err)
	}
	if n, err := rawsys.Pread(fd, buf, 7); err != nil || string(buf[:n]) != "world" {
		t.Errorf("Pread at 7 = %q, %v", buf[:n], err)
	}
	if err := rawsys.Close(fd); err != nil {
		t.Fatal(err)
	}
	if err := rawsys.Close(fd); err != syscall.EBADF {
		t.Errorf("second Close: %v, want EBADF", err)
	}

	dfd, err := rawsys.Open(dir, syscall.O_DIRECTORY)
	if err != nil {
		t.Fatal(err)
	}
	defer rawsys.Close(dfd)
	n, err := rawsys.Getdents(dfd, make([]byte, 4096))
	if err != nil || n <= 0 {
		t.Errorf("Getdents = %d, %v", n, err)
	}
	if _, err := rawsys.Open(path, syscall.O_DIRECTORY); err != syscall.ENOTDIR {
		t.Errorf("Open of a file with O_DIRECTORY: %v, want ENOTDIR", err)
	}
}

func TestStatfs(t *testing.T) {
	dir := t.TempDir()
	var raw, want syscall.Statfs_t
	if err := rawsys.Statfs(dir, &raw); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Statfs(dir, &want); err != nil {
		t.Fatal(err)
	}
	// Free space moves with the machine's other writers; type and size do not.
	if raw.Type != want.Type || raw.Bsize != want.Bsize || raw.Blocks != want.Blocks {
		t.Errorf("raw statfs: type %#x, bsize %d, blocks %d; syscall.Statfs: %#x, %d, %d",
			raw.Type, raw.Bsize, raw.Blocks, want.Type, want.Bsize, want.Blocks)
	}
	if err := rawsys.Statfs(filepath.Join(dir, "missing"), &raw); err != syscall.ENOENT {
		t.Errorf("Statfs of a missing path: %v, want ENOENT", err)
	}
}

// newTimer returns a timer closed when the test ends.
func newTimer(t *testing.T) *rawsys.Timer {
	t.Helper()
	tm, err := rawsys.NewTimer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tm.Close() })
	return tm
}

func TestTimer(t *testing.T) {
	tm := newTimer(t)
	ctx := context.Background()

	at := time.Now().Add(30 * time.Millisecond)
	if err := tm.Wait(ctx, at); err != nil {
		t.Fatal(err)
	}
	if now := time.Now(); now.Before(at) {
		t.Errorf("Wait returned %v before the instant", at.Sub(now))
	}
	if err := tm.Wait(ctx, time.Now().Add(-time.Hour)); err != nil { // past: at once
		t.Fatal(err)
	}

	// A done context ends a wait, also when an earlier wait registered it,
	// and the timer waits again afterwards.
	cctx, cancel := context.WithCancel(ctx)
	for range 2 {
		if err := tm.Wait(cctx, time.Now().Add(5*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	time.AfterFunc(20*time.Millisecond, cancel)
	if err := tm.Wait(cctx, time.Now().Add(time.Hour)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a cancelled context: %v, want context.Canceled", err)
	}
	if err := tm.Wait(cctx, time.Now()); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with a done context: %v, want context.Canceled", err)
	}
	at = time.Now().Add(10 * time.Millisecond)
	if err := tm.Wait(ctx, at); err != nil || time.Now().Before(at) {
		t.Errorf("Wait after a cancelled one: %v", err)
	}
}

// TestTimer_ClockStepped sets the wall clock to what it reads (a step of
// microseconds back, which the kernel reports like any other) while a
// wait for an hour ahead runs: the wait ends with ErrClockStepped. It
// needs CAP_SYS_TIME.
func TestTimer_ClockStepped(t *testing.T) {
	tm := newTimer(t)
	done := make(chan error, 1)
	go func() { done <- tm.Wait(context.Background(), time.Now().Add(time.Hour)) }()
	time.Sleep(20 * time.Millisecond) // let it wait
	tv := syscall.NsecToTimeval(time.Now().UnixNano())
	if err := syscall.Settimeofday(&tv); err != nil {
		_ = tm.Close() // ends the wait
		<-done
		t.Skipf("cannot set the clock: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, rawsys.ErrClockStepped) {
			t.Errorf("Wait across a clock step: %v, want ErrClockStepped", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not end when the clock was set")
	}
}
