package cgroup

import (
	"encoding/binary"
	"syscall"

	"tillpipe/internal/collector/rawsys"
)

// Values of Container.wd other than a watch descriptor.
const (
	noWatch     = -1 // not tried yet
	watchFailed = -2 // no watch: the file is read every time
)

// watcher follows v2 memory.events files with inotify: the kernel sends a
// "modified" event whenever one of their values changes, so a file is read
// only after it changed (Container.oomDue). It is unsafe for concurrent
// use.
type watcher struct {
	fd  int // inotify instance, -1 when unavailable
	wds map[int32]*Container
	buf []byte
}

// init opens the inotify instance; without one, every file is read every
// time.
func (w *watcher) init() {
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		return
	}
	w.fd, w.wds = fd, make(map[int32]*Container)
}

// watch adds c's memory.events to the watched files, once per container.
// A failed watch (no inotify, the per-user watch limit reached, the file
// absent) leaves the file read every time.
func (w *watcher) watch(c *Container) {
	if c.wd != noWatch {
		return
	}
	c.wd = watchFailed
	path := c.paths[fileMemEvents]
	if w.fd < 0 || path == "" {
		return
	}
	wd, err := syscall.InotifyAddWatch(w.fd, path, syscall.IN_MODIFY)
	if err != nil {
		return
	}
	c.wd, c.oomDue = int32(wd), true
	w.wds[c.wd] = c
}

// unwatch removes c's watch.
func (w *watcher) unwatch(c *Container) {
	if c.wd >= 0 {
		_, _ = syscall.InotifyRmWatch(w.fd, uint32(c.wd))
		delete(w.wds, c.wd)
	}
	c.wd = noWatch
}

// drain reads the events queued since the last drain and marks the
// containers whose file changed. It makes one read(2) when nothing changed.
func (w *watcher) drain() {
	if w.fd < 0 {
		return
	}
	if w.buf == nil {
		// Room for 256 events; a name-less event is 16 bytes.
		w.buf = make([]byte, 256*syscall.SizeofInotifyEvent)
	}
	for {
		n, err := rawsys.Read(w.fd, w.buf)
		if err != nil || n <= 0 {
			if err != nil && err != syscall.EAGAIN && err != syscall.EINTR {
				w.markAll() // cannot tell what changed
			}
			return
		}
		// struct inotify_event { s32 wd; u32 mask; u32 cookie; u32 len; char name[len]; }
		for b := w.buf[:n]; len(b) >= syscall.SizeofInotifyEvent; {
			wd := int32(binary.NativeEndian.Uint32(b[0:]))
			mask := binary.NativeEndian.Uint32(b[4:])
			size := syscall.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(b[12:]))
			if size > len(b) {
				w.markAll()
				return
			}
			b = b[size:]
			if mask&syscall.IN_Q_OVERFLOW != 0 {
				w.markAll() // events were lost
				continue
			}
			c := w.wds[wd]
			if c == nil {
				continue // removed by unwatch
			}
			c.oomDue = true
			if mask&syscall.IN_IGNORED != 0 { // the watch is gone with the file
				delete(w.wds, wd)
				c.wd = watchFailed
			}
		}
	}
}

func (w *watcher) markAll() {
	for _, c := range w.wds {
		c.oomDue = true
	}
}

// close closes the inotify instance and with it every watch.
func (w *watcher) close() {
	if w.fd >= 0 {
		rawsys.Close(w.fd)
		w.fd = -1
		clear(w.wds)
	}
}
