// Package wan is a TCP proxy that stands for a store's uplink: it counts the
// bytes that cross it in each direction and can be cut (every connection
// closed, new ones refused) and restored, which is how the harness takes a
// store offline without touching the processes on either side.
package wan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
)

// Link proxies one listening address to one target. It is safe for
// concurrent use.
type Link struct {
	name   string
	target string
	ln     net.Listener
	log    *slog.Logger

	up, down atomic.Int64 // bytes client->target, target->client

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Listen opens a link on a free loopback port to target (host:port).
func Listen(name, target string, log *slog.Logger) (*Link, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for wan link %s: %w", name, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Link{name: name, target: target, ln: ln, log: log.With("component", "wan", "link", name), conns: map[net.Conn]struct{}{}}, nil
}

// Addr is the address clients dial (host:port).
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Name is the link's name.
func (l *Link) Name() string { return l.name }

// BytesUp is the bytes sent from clients to the target so far.
func (l *Link) BytesUp() int64 { return l.up.Load() }

// BytesDown is the bytes sent from the target to clients so far.
func (l *Link) BytesDown() int64 { return l.down.Load() }

// Cut closes every connection and refuses new ones until Restore.
func (l *Link) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
	for c := range l.conns {
		c.Close()
	}
}

// Restore accepts connections again.
func (l *Link) Restore() {
	l.mu.Lock()
	l.cut = false
	l.mu.Unlock()
}

// IsCut reports whether the link is cut.
func (l *Link) IsCut() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cut
}

// Run accepts and proxies until ctx is done, then closes everything and
// waits for its goroutines.
func (l *Link) Run(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		l.ln.Close()
		l.Cut()
	}()
	defer l.wg.Wait()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept on wan link %s: %w", l.name, err)
		}
		l.mu.Lock()
		if l.cut {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.serve(c)
	}
}

func (l *Link) serve(c net.Conn) {
	defer l.wg.Done()
	defer l.forget(c)
	t, err := net.Dial("tcp", l.target)
	if err != nil {
		c.Close()
		return
	}
	l.mu.Lock()
	if l.cut {
		l.mu.Unlock()
		c.Close()
		t.Close()
		return
	}
	l.conns[t] = struct{}{}
	l.mu.Unlock()
	defer l.forget(t)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipe(t, c, &l.up) }()
	go func() { defer wg.Done(); pipe(c, t, &l.down) }()
	wg.Wait()
}

func (l *Link) forget(c net.Conn) {
	c.Close()
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// pipe copies src to dst counting bytes, and closes both when either side ends.
func pipe(dst, src net.Conn, n *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if _, werr := dst.Write(buf[:k]); werr != nil {
				break
			}
			n.Add(int64(k))
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_ = err
			}
			break
		}
	}
	dst.Close()
	src.Close()
}
