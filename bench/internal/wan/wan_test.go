package wan

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
)

func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func TestLink_CountsAndCuts(t *testing.T) {
	l, err := Listen("test", echoServer(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = l.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("hello wan")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if l.BytesUp() != int64(len(msg)) {
		t.Errorf("bytes up %d, want %d", l.BytesUp(), len(msg))
	}

	l.Cut()
	// A cut link closes the live connection: the read ends.
	if _, err := c.Read(got); err == nil {
		t.Error("read on a cut link succeeded")
	}
	c.Close()
	// A new connection is accepted and closed at once.
	c2, err := net.Dial("tcp", l.Addr())
	if err == nil {
		if _, err := c2.Read(got); err == nil {
			t.Error("new connection on a cut link is served")
		}
		c2.Close()
	}

	l.Restore()
	c3, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if _, err := c3.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c3, got); err != nil {
		t.Fatalf("restored link: %v", err)
	}
}
