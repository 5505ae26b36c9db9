// Package cgroup reads per-container resource counters from the cgroup
// filesystem, v2 (unified) or v1 (per-controller hierarchies, possibly with a
// v2 "unified" mount beside them: hybrid), in the Docker, containerd (k3s),
// CRI-O and Podman layouts.
//
// Containers are found by their cgroup directory names, in these places
// under the root (for v1, under the memory hierarchy, and the same relative
// path in every other controller):
//
//	system.slice/docker-<64hex>.scope                  Docker, systemd driver
//	docker/<64hex>                                     Docker, cgroupfs driver
//	machine.slice/libpod-<64hex>.scope                 Podman
//	kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/cri-containerd-<64hex>.scope
//	kubepods/<qos>/pod<uid>/<64hex>                    containerd/k3s, cgroupfs driver
//
// Only these subtrees are listed each cycle, so the cost does not grow with
// the number of system services.
package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"tillpipe/internal/collector/rawsys"
)

// ErrNoCgroup is returned by [New] when the root holds neither a cgroup v2
// nor a cgroup v1 hierarchy.
var ErrNoCgroup = errors.New("no cgroup hierarchy found")

// Mode is the cgroup version found under the root.
type Mode int

// The cgroup modes.
const (
	ModeV2 Mode = 2 // unified hierarchy
	ModeV1 Mode = 1 // per-controller hierarchies (legacy or hybrid)
)

// Options configures a [Reader]. The zero value reads /sys/fs/cgroup.
type Options struct {
	// Root is where the cgroup filesystem is mounted; default /sys/fs/cgroup.
	Root string
}

// Container is one container's cgroup. Its fields must not be modified.
type Container struct {
	// ID is the runtime's 64-hex container id.
	ID string
	// Path is the cgroup path relative to the hierarchy root, with a leading
	// slash, as /proc/<pid>/cgroup shows it.
	Path string

	gen   uint64
	paths [numFiles]string // "" when the controller is not mounted
	fds   [numFiles]int    // open descriptors, -1 when closed

	// Files whose values are kept between reads (see [Reader.Read]).
	limit, oomKills  uint64
	hasLimit, hasOOM bool
	limitDue, oomDue bool  // read the file at the next Read
	wd               int32 // inotify watch on memory.events; noWatch, or watchFailed

	absent uint16 // bit per file slot: found absent since its subtree was last listed
}

// The files read for a container, as indexes into Container.paths.
const (
	fileCPUStat = iota
	fileMemCurrent
	fileMemStat
	fileMemMax
	fileMemEvents
	filePids
	fileIO
	fileCPUAcctUsage
	fileCPUAcctStat
	filePressureCPU // then memory, io
	filePressureMemory
	filePressureIO
	numFiles
)

func (r *Reader) closeContainer(c *Container) {
	for i, fd := range c.fds {
		if fd >= 0 {
			rawsys.Close(fd)
			c.fds[i] = -1
		}
	}
	r.w.unwatch(c)
}

// Pressure is one PSI file's cumulative stall times, in seconds.
type Pressure struct {
	Some, Full       float64
	HasSome, HasFull bool
}

// Field is a bit set of the [Stats] fields that were read.
type Field uint32

// The [Stats] fields.
const (
	FieldCPUUsage Field = 1 << iota
	FieldCPUUser
	FieldCPUSystem
	FieldThrottledPeriods
	FieldThrottledSeconds
	FieldMemUsage
	FieldWorkingSet
	FieldRSS
	FieldCache
	FieldMemLimit
	FieldOOMKills
	FieldThreads
	FieldIO
)

// Stats are one container's counters, in base units (seconds, bytes).
// Only fields in Has were read.
type Stats struct {
	Has Field

	CPUUsage, CPUUser, CPUSystem float64 // seconds
	ThrottledPeriods             uint64
	ThrottledSeconds             float64
	MemUsage, WorkingSet         uint64
	RSS, Cache                   uint64
	MemLimit                     uint64 // 0 when unlimited, as cAdvisor reports it
	OOMKills                     uint64
	Threads                      uint64
	ReadBytes, WriteBytes        uint64

	// Pressure is PSI for cpu, memory and io, where the kernel provides it.
	Pressure [3]Pressure
}

// Resources of [Stats.Pressure].
const (
	PressureCPU = iota
	PressureMemory
	PressureIO
)

// unlimited is cAdvisor's bound above which a memory limit means "none"
// (v1 reports 9223372036854771712, v2 "max").
const unlimited = 1 << 62

// Reader discovers containers and reads their stats. It keeps each
// container's files open between cycles and re-reads them with one pread at
// offset 0 (cgroup files regenerate their content on every read from the
// start), so a cycle costs one system call per file. It reuses its buffers
// across calls and is unsafe for concurrent use; Close releases the files.
type Reader struct {
	mode Mode
	root string // v2 root, or the v1 discovery hierarchy (memory)
	v1   map[string]string
	fr   fileReader

	gen        uint64
	containers map[string]*Container // by Path
	tops       []string              // topDirs under root
	byTop      [][]*Container        // per topDirs entry, what its last listing found
	missing    []bool                // per topDirs entry, absent at its last listing
	w          watcher
	names      []byte // subdirectory names, each after its length byte
	path       []byte
	dirBuf     []byte
}

// New detects the cgroup mode under opts.Root and returns a reader.
func New(opts Options) (*Reader, error) {
	root := opts.Root
	if root == "" {
		root = "/sys/fs/cgroup"
	}
	r := &Reader{containers: make(map[string]*Container), byTop: make([][]*Container, len(topDirs)),
		missing: make([]bool, len(topDirs)), w: watcher{fd: -1}}
	if exists(filepath.Join(root, "cgroup.controllers")) {
		r.mode, r.root = ModeV2, root
		r.w.init()
		return r, nil
	}
	r.v1 = make(map[string]string)
	for _, c := range []string{"memory", "cpuacct", "cpu", "pids", "blkio", "unified"} {
		if d := filepath.Join(root, c); exists(d) {
			r.v1[c] = d
		}
	}
	for _, c := range []string{"memory", "cpuacct", "pids"} {
		if d, ok := r.v1[c]; ok {
			r.mode, r.root = ModeV1, d
			return r, nil
		}
	}
	return nil, fmt.Errorf("detect cgroup mode under %s: %w", root, ErrNoCgroup)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Mode is the cgroup version in use.
func (r *Reader) Mode() Mode { return r.mode }

// Scope says which subtrees [Reader.Discover] lists.
type Scope int

const (
	// All lists every subtree.
	All Scope = iota
	// NotEngine does not list the subtrees where Docker and Podman create
	// their containers' cgroups (system.slice, docker, machine.slice): their
	// containers are those that the last listing of each found. It is for
	// a caller that knows from the engine (its events) that its containers
	// did not change since then. Kubernetes' subtrees are listed as with
	// All, but one found missing is looked for again only by All (a
	// till's engine may run Kubernetes pods too; k3s installed on a running
	// till is seen within the caller's next All).
	NotEngine
)

// Discover appends the containers found this cycle to dst, listing the
// subtrees that scope says. Containers found in an earlier cycle are
// returned as the same pointers.
func (r *Reader) Discover(dst []*Container, scope Scope) ([]*Container, error) {
	r.gen++
	r.w.drain()
	var firstErr error
	if r.tops == nil {
		for _, top := range topDirs {
			r.tops = append(r.tops, r.root+"/"+top)
		}
	}
	for i, top := range topDirs {
		if scope == NotEngine && i < engineTops {
			for _, c := range r.byTop[i] {
				c.gen = r.gen
			}
			dst = append(dst, r.byTop[i]...)
			continue
		}
		if scope == NotEngine && r.missing[i] {
			continue
		}
		start := len(dst)
		err := r.walk(top, r.tops[i], 0, &dst)
		if r.missing[i] = err == errNotExist; r.missing[i] {
			err = nil
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
		for _, c := range dst[start:] {
			c.limitDue, c.absent = true, 0
		}
		clear(r.byTop[i])
		r.byTop[i] = append(r.byTop[i][:0], dst[start:]...)
	}
	for p, c := range r.containers {
		if c.gen != r.gen {
			r.closeContainer(c)
			delete(r.containers, p)
		}
	}
	return dst, firstErr
}

// Close closes the files held open for the containers found so far.
func (r *Reader) Close() {
	for p, c := range r.containers {
		r.closeContainer(c)
		delete(r.containers, p)
	}
	clear(r.byTop)
	r.w.close()
}

// topDirs are the subtrees of the root that hold containers.
var topDirs = []string{"system.slice", "docker", "machine.slice", "kubepods.slice", "kubepods"}

// engineTops is how many of topDirs, from the first, hold the cgroups that
// Docker and Podman create (see [NotEngine]).
const engineTops = 3

const maxDepth = 3

// walk appends the containers in dir, the cgroup rel, and recurses into
// Kubernetes QoS and pod cgroups.
func (r *Reader) walk(rel, dir string, depth int, dst *[]*Container) error {
	var err error
	r.names, err = r.readDirNames(dir, r.names[:0])
	if err == errNotExist {
		if depth == 0 {
			return err // Discover notes the subtree missing
		}
		return nil // removed while listed
	}
	if err != nil {
		return fmt.Errorf("list cgroup %s: %w", rel, err)
	}
	// r.names is reused by the recursive calls: recurse after the loop.
	var sub []string
	for names := r.names; len(names) > 0; {
		n := int(names[0])
		name := names[1 : 1+n]
		names = names[1+n:]
		if id := containerID(name); id != nil {
			r.path = append(append(append(append(r.path[:0], '/'), rel...), '/'), name...)
			c := r.containers[string(r.path)]
			if c == nil {
				c = r.newContainer(string(id), string(r.path))
				r.containers[c.Path] = c
			}
			c.gen = r.gen
			*dst = append(*dst, c)
			continue
		}
		if depth+1 < maxDepth && isPodOrQoS(rel, string(name)) {
			sub = append(sub, rel+"/"+string(name))
		}
	}
	var firstErr error
	for _, s := range sub {
		if err := r.walk(s, r.root+"/"+s, depth+1, dst); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// readDirNames appends the names of dir's subdirectories to dst, each as a
// length byte and the name (a Linux file name is at most 255 bytes). The
// cgroup's own files are skipped. A missing dir is errNotExist. It reads the
// directory with getdents64 into a reused buffer, so a cycle allocates
// nothing for directories already seen.
func (r *Reader) readDirNames(dir string, dst []byte) ([]byte, error) {
	fd, err := rawsys.Open(dir, syscall.O_DIRECTORY)
	if err == syscall.ENOENT || err == syscall.ENOTDIR {
		return dst, errNotExist
	}
	if err != nil {
		return dst, err
	}
	defer rawsys.Close(fd)
	if r.dirBuf == nil {
		r.dirBuf = make([]byte, 8<<10)
	}
	for {
		n, err := rawsys.Getdents(fd, r.dirBuf)
		if err != nil {
			return dst, err
		}
		if n <= 0 {
			return dst, nil
		}
		// struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen;
		// u8 d_type; char d_name[]; } with d_name NUL-terminated.
		for b := r.dirBuf[:n]; len(b) >= 19; {
			reclen := int(b[16]) | int(b[17])<<8
			if reclen < 19 || reclen > len(b) {
				return dst, fmt.Errorf("getdents64 %s: bad record length %d", dir, reclen)
			}
			typ, name := b[18], b[19:reclen]
			b = b[reclen:]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			// DT_UNKNOWN: a filesystem without d_type; the name decides.
			if typ != syscall.DT_DIR && typ != syscall.DT_UNKNOWN || len(name) > 255 ||
				string(name) == "." || string(name) == ".." {
				continue
			}
			dst = append(dst, byte(len(name)))
			dst = append(dst, name...)
		}
	}
}

// isPodOrQoS reports whether name, under rel, is a Kubernetes QoS or pod
// cgroup that holds container cgroups.
func isPodOrQoS(rel, name string) bool {
	if !strings.HasPrefix(rel, "kubepods") {
		return false
	}
	return strings.HasPrefix(name, "kubepods-") || strings.HasPrefix(name, "pod") ||
		name == "burstable" || name == "besteffort"
}

// ContainerID returns the 64-hex container id named by a cgroup directory
// name, or "" when name is not a container's.
func ContainerID(name string) string {
	return string(containerID([]byte(name)))
}

// containerID is [ContainerID] on bytes: the id is a subslice of name, nil
// when name is not a container's.
func containerID(name []byte) []byte {
	s := name
	if n, ok := bytes.CutSuffix(s, []byte(".scope")); ok {
		s = n
		switch {
		case bytes.HasPrefix(s, []byte("docker-")):
			s = s[len("docker-"):]
		case bytes.HasPrefix(s, []byte("cri-containerd-")):
			s = s[len("cri-containerd-"):]
		case bytes.HasPrefix(s, []byte("crio-")):
			s = s[len("crio-"):]
		case bytes.HasPrefix(s, []byte("libpod-")):
			s = s[len("libpod-"):]
		default:
			return nil
		}
	}
	if len(s) != 64 {
		return nil
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return nil
		}
	}
	return s
}

func (r *Reader) newContainer(id, path string) *Container {
	c := &Container{ID: id, Path: path, limitDue: true, oomDue: true, wd: noWatch}
	for i := range c.fds {
		c.fds[i] = -1
	}
	p := &c.paths
	if r.mode == ModeV2 {
		d := r.root + path + "/"
		p[fileCPUStat] = d + "cpu.stat"
		p[fileMemCurrent] = d + "memory.current"
		p[fileMemStat] = d + "memory.stat"
		p[fileMemMax] = d + "memory.max"
		p[fileMemEvents] = d + "memory.events"
		p[filePids] = d + "pids.current"
		p[fileIO] = d + "io.stat"
		p[filePressureCPU], p[filePressureMemory], p[filePressureIO] = d+"cpu.pressure", d+"memory.pressure", d+"io.pressure"
		return c
	}
	dir := func(ctrl string) string {
		if root, ok := r.v1[ctrl]; ok {
			return root + path + "/"
		}
		return ""
	}
	if d := dir("cpuacct"); d != "" {
		p[fileCPUAcctUsage], p[fileCPUAcctStat] = d+"cpuacct.usage", d+"cpuacct.stat"
	}
	if d := dir("cpu"); d != "" {
		p[fileCPUStat] = d + "cpu.stat"
	}
	if d := dir("memory"); d != "" {
		p[fileMemCurrent] = d + "memory.usage_in_bytes"
		p[fileMemStat] = d + "memory.stat"
		p[fileMemMax] = d + "memory.limit_in_bytes"
		p[fileMemEvents] = d + "memory.oom_control"
	}
	if d := dir("pids"); d != "" {
		p[filePids] = d + "pids.current"
	}
	if d := dir("blkio"); d != "" {
		p[fileIO] = d + "blkio.throttle.io_service_bytes"
	}
	if d := dir("unified"); d != "" {
		p[filePressureCPU], p[filePressureMemory], p[filePressureIO] = d+"cpu.pressure", d+"memory.pressure", d+"io.pressure"
	}
	return c
}
