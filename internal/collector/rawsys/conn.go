// Package rawsys makes the collector's system calls on files and sockets
// that never block as raw system calls, without the runtime's
// blocking-syscall bookkeeping (entersyscall, exitsyscall).
//
// A system call through package syscall or net enters the Go scheduler's
// syscall state. When the runtime's sysmon thread is in its deep sleep, as
// it is between the collector's cycles, that wakes it with its nap reset to
// 20 µs; and a call that outlasts one of sysmon's naps lets sysmon hand the
// only P (GOMAXPROCS 1) to another thread. Both cost context switches and
// CPU on a till where the collector works a millisecond every 15 s.
//
// Raw calls are only for what cannot block: files of procfs and cgroupfs,
// directory listings there, and non-blocking sockets, whose reads and
// writes return EAGAIN when not ready so that the goroutine waits in the
// netpoller as net.Conn's does, deadlines included ([Conn]). statfs(2) is
// raw ([Statfs]) for local filesystems only: on a network filesystem it
// can hang, and stays a normal system call there.
package rawsys

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Conn is a net.Conn whose Read and Write are raw system calls. Close,
// addresses and deadlines are the wrapped connection's. One Read may run
// concurrently with one Write, as net/http's transport does; concurrent
// Reads (or Writes) are unsafe.
type Conn struct {
	net.Conn
	rc syscall.RawConn

	// State of the Read in progress, kept here so that the callback is a
	// method value bound once and no closure is allocated per call.
	rbuf   []byte
	rn     int
	rerr   syscall.Errno
	readFn func(fd uintptr) bool
	// State of the Write or WriteV in progress.
	vbufs    [2][]byte
	wn       int
	werr     syscall.Errno
	writevFn func(fd uintptr) bool
}

var _ net.Conn = (*Conn)(nil)

// Dial connects to address with d and wraps the connection. Its signature
// is http.Transport's DialContext.
func Dial(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error) {
	c, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	w, err := Wrap(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	return w, nil
}

// Wrap returns c with raw reads and writes. c must implement syscall.Conn
// (*net.TCPConn and *net.UnixConn do).
func Wrap(c net.Conn) (*Conn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("wrap %T: not a syscall.Conn", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("wrap %T: %w", c, err)
	}
	w := &Conn{Conn: c, rc: rc}
	w.readFn, w.writevFn = w.read, w.writev
	return w, nil
}

// Read reads from the socket, waiting in the netpoller until data arrives
// or the read deadline passes.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rbuf, c.rn, c.rerr = p, 0, 0
	err := c.rc.Read(c.readFn)
	n, errno := c.rn, c.rerr
	c.rbuf = nil
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *Conn) read(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch e {
		case 0:
			c.rn = int(r)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			c.rerr = e
			return true
		}
	}
}

// Write writes all of p, waiting in the netpoller while the socket buffer
// is full, until the write deadline passes.
func (c *Conn) Write(p []byte) (int, error) { return c.WriteV(p, nil) }

// opError reports err as net.Conn does, as a *net.OpError for op; the
// RawConn's own errors (closed, deadline exceeded) keep their cause.
func (c *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	network := ""
	if a := c.RemoteAddr(); a != nil {
		network = a.Network()
	}
	return &net.OpError{Op: op, Net: network, Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// WriteV writes all of a then all of b with writev(2): one system call,
// and one wake-up of the reader, for a request's head and body held in
// separate buffers, without copying them together first. It waits in the
// netpoller while the socket buffer is full, until the write deadline
// passes.
func (c *Conn) WriteV(a, b []byte) (int, error) {
	if len(a)+len(b) == 0 {
		return 0, nil
	}
	c.vbufs[0], c.vbufs[1], c.wn, c.werr = a, b, 0, 0
	err := c.rc.Write(c.writevFn)
	n, errno := c.wn, c.werr
	c.vbufs = [2][]byte{}
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("writev", errno))
	}
	return n, nil
}

func (c *Conn) writev(fd uintptr) bool {
	total := len(c.vbufs[0]) + len(c.vbufs[1])
	for c.wn < total {
		// The iovecs of what is left: part of a and all of b, or part of b.
		var iov [2]syscall.Iovec
		n := 0
		for i, skip := 0, c.wn; i < 2; i++ {
			p := c.vbufs[i]
			if skip >= len(p) {
				skip -= len(p)
				continue
			}
			p = p[skip:]
			skip = 0
			iov[n].Base = &p[0]
			iov[n].SetLen(len(p))
			n++
		}
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
		switch e {
		case 0:
			c.wn += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = e
			return true
		}
	}
	return true
}
