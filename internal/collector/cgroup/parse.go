package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"syscall"

	"tillpipe/internal/collector/rawsys"
)

// fileReader reads small pseudo-files into one reused buffer. It is unsafe
// for concurrent use.
type fileReader struct {
	buf []byte
	// atime: O_NOATIME was refused (EPERM: neither the file's owner nor
	// CAP_FOWNER), so files are opened without it.
	atime bool
}

// errNotExist reports a file that is absent: a controller not enabled for
// this cgroup, or a cgroup removed while it was being read.
var errNotExist = errors.New("file does not exist")

// read returns the content of c's file slot in a buffer valid until the
// next call. The file is opened on first use and kept open; a read error
// closes it so the next cycle opens it afresh. A file found absent (PSI
// disabled, a controller not enabled for the cgroup) is not looked for
// again until its subtree is listed (Container.absent).
func (r *fileReader) read(c *Container, slot int) ([]byte, error) {
	path := c.paths[slot]
	if path == "" || c.absent&(1<<slot) != 0 {
		return nil, errNotExist
	}
	if r.buf == nil {
		r.buf = make([]byte, 8<<10)
	}
	if c.fds[slot] < 0 {
		// O_NOATIME: cgroupfs keeps no access times, but a cgroup tree
		// on tmpfs (tests, benchmarks) would update one on every read.
		fd, err := -1, error(syscall.EPERM)
		if !r.atime {
			if fd, err = rawsys.Open(path, syscall.O_NOATIME); err == syscall.EPERM {
				r.atime = true
			}
		}
		if r.atime {
			fd, err = rawsys.Open(path, 0)
		}
		if err != nil {
			if err == syscall.ENOENT || err == syscall.ENODEV || err == syscall.ENOTDIR {
				c.absent |= 1 << slot
				return nil, errNotExist
			}
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
		c.fds[slot] = fd
	}
	for {
		n, err := rawsys.Pread(c.fds[slot], r.buf, 0)
		if err != nil {
			rawsys.Close(c.fds[slot])
			c.fds[slot] = -1
			if err == syscall.ENODEV || err == syscall.ENOENT {
				return nil, errNotExist
			}
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if n < len(r.buf) {
			return r.buf[:n], nil
		}
		r.buf = make([]byte, 2*len(r.buf)) // the file did not fit: grow, read again
	}
}

// parseUint parses a decimal unsigned integer; surrounding spaces and a
// trailing newline are ignored. Every cgroup value goes through it, about
// 700 a cycle: the common form, up to 19 digits and perhaps a newline,
// is parsed without trimming or overflow checks (19 digits cannot
// overflow).
func parseUint(b []byte) (uint64, bool) {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if len(b) == 0 || len(b) > 19 {
		return parseUintSlow(b)
	}
	var v uint64
	for _, c := range b {
		d := c - '0'
		if d > 9 {
			return parseUintSlow(b)
		}
		v = v*10 + uint64(d)
	}
	return v, true
}

// parseUintSlow is parseUint for the rest: spaces around the number, or
// 20 digits.
func parseUintSlow(b []byte) (uint64, bool) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

// nextLine splits b at the first newline.
func nextLine(b []byte) (line, rest []byte) {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

// keyValue splits a "key value" line at its first space.
func keyValue(line []byte) (key, value []byte) {
	if i := bytes.IndexByte(line, ' '); i >= 0 {
		return line[:i], line[i+1:]
	}
	return line, nil
}

// keySet is the keys read from a flat-keyed file, and the bytes they
// start with.
type keySet struct {
	names []string
	first [256]bool
}

func newKeySet(names ...string) *keySet {
	ks := &keySet{names: names}
	for _, n := range names {
		if n == "" {
			ks.first[' '] = true // an empty key: the line starts with its space
		} else {
			ks.first[n[0]] = true
		}
	}
	return ks
}

// flatKeyed calls fn for the lines of a flat-keyed file (cpu.stat,
// memory.stat, memory.events: "key value" lines, the format documented in
// the kernel's Documentation/admin-guide/cgroup-v2.rst, "Format") whose key
// is one of keys, passing that key. Only their values are parsed, and the
// scan stops once as many lines matched as there are keys: memory.stat has
// about 50 lines, and the last of the three read is the 22nd (v1: about
// 70, and the 31st). A line costs the IndexByte that finds its end and,
// when its first byte starts a key, a comparison with the keys; the line
// is not split or converted (bytes.Index for each key skips faster in
// theory, but its IndexByte of the key's first byte stops as often as a
// line ends: more instructions, counted with cachegrind).
func flatKeyed(b []byte, path string, keys *keySet, fn func(key string, v uint64)) error {
	left := len(keys.names)
	for len(b) > 0 && left > 0 {
		end := bytes.IndexByte(b, '\n')
		if end < 0 {
			end = len(b)
		}
		if line := b[:end]; len(line) > 0 && keys.first[line[0]] {
			for _, k := range keys.names {
				if len(line) <= len(k) || line[len(k)] != ' ' || string(line[:len(k)]) != k {
					continue
				}
				n, ok := parseUint(line[len(k)+1:])
				if !ok {
					return &ParseError{Path: path, Line: string(line)}
				}
				fn(k, n)
				left--
				break
			}
		}
		if end == len(b) {
			break
		}
		b = b[end+1:]
	}
	return nil
}

// parsePressure reads the "total=" (microseconds) of the some and full
// lines of a PSI file:
//
//	some avg10=0.00 avg60=0.00 avg300=0.00 total=17489794
//	full avg10=0.00 avg60=0.00 avg300=0.00 total=0
func parsePressure(b []byte, path string) (p Pressure, err error) {
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		if len(line) == 0 {
			continue
		}
		kind, fields := keyValue(line)
		tot, ok := pressureTotal(fields)
		if !ok {
			return p, &ParseError{Path: path, Line: string(line)}
		}
		us, ok := parseUint(tot)
		if !ok {
			return p, &ParseError{Path: path, Line: string(line)}
		}
		switch string(kind) {
		case "some":
			p.Some, p.HasSome = float64(us)/1e6, true
		case "full":
			p.Full, p.HasFull = float64(us)/1e6, true
		}
	}
	return p, nil
}

// pressureTotal returns the number of the "total=" field of a PSI line's
// fields. The kernel writes it last (as it has since PSI came, in 4.20),
// so it is looked for there first, a few bytes back from the line's end,
// and searched for from the start only when it is not there: that search
// took about a third of a PSI file's parse (cachegrind).
func pressureTotal(fields []byte) ([]byte, bool) {
	last := fields
	if i := bytes.LastIndexByte(fields, ' '); i >= 0 {
		last = fields[i+1:]
	}
	if tot, ok := bytes.CutPrefix(last, []byte("total=")); ok {
		return tot, true
	}
	i := bytes.Index(fields, []byte("total="))
	if i < 0 {
		return nil, false
	}
	tot := fields[i+len("total="):]
	if j := bytes.IndexByte(tot, ' '); j >= 0 {
		tot = tot[:j]
	}
	return tot, true
}

// ParseError is a cgroup file whose content does not have the expected
// format.
type ParseError struct {
	Path string
	Line string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("parse %s: unexpected line %q", e.Path, e.Line)
}
