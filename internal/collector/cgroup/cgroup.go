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
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

func (c *Container) close() {
	for i, fd := range c.fds {
		if fd >= 0 {
			syscall.Close(fd)
			c.fds[i] = -1
		}
	}
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
	names      []string
}

// New detects the cgroup mode under opts.Root and returns a reader.
func New(opts Options) (*Reader, error) {
	root := opts.Root
	if root == "" {
		root = "/sys/fs/cgroup"
	}
	r := &Reader{containers: make(map[string]*Container)}
	if exists(filepath.Join(root, "cgroup.controllers")) {
		r.mode, r.root = ModeV2, root
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

// Discover appends the containers found this cycle to dst. Containers found
// in an earlier cycle are returned as the same pointers.
func (r *Reader) Discover(dst []*Container) ([]*Container, error) {
	r.gen++
	var firstErr error
	for _, top := range topDirs {
		if err := r.walk(top, 0, &dst); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for p, c := range r.containers {
		if c.gen != r.gen {
			c.close()
			delete(r.containers, p)
		}
	}
	return dst, firstErr
}

// Close closes the files held open for the containers found so far.
func (r *Reader) Close() {
	for p, c := range r.containers {
		c.close()
		delete(r.containers, p)
	}
}

// topDirs are the subtrees of the root that hold containers.
var topDirs = []string{"system.slice", "docker", "machine.slice", "kubepods.slice", "kubepods"}

const maxDepth = 3

func (r *Reader) walk(rel string, depth int, dst *[]*Container) error {
	f, err := os.Open(filepath.Join(r.root, rel))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("list cgroup %s: %w", rel, err)
	}
	r.names, err = readDirNames(f, r.names[:0])
	f.Close()
	if err != nil {
		return fmt.Errorf("list cgroup %s: %w", rel, err)
	}
	// Recurse after the loop: r.names is reused by the callee.
	var sub []string
	for _, name := range r.names {
		if id := ContainerID(name); id != "" {
			path := "/" + rel + "/" + name
			c := r.containers[path]
			if c == nil {
				c = r.newContainer(id, path)
				r.containers[path] = c
			}
			c.gen = r.gen
			*dst = append(*dst, c)
			continue
		}
		if depth+1 < maxDepth && isPodOrQoS(rel, name) {
			sub = append(sub, rel+"/"+name)
		}
	}
	var firstErr error
	for _, s := range sub {
		if err := r.walk(s, depth+1, dst); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// readDirNames lists the subdirectories' names. Entries that are not
// directories (the cgroup's own files) are skipped.
func readDirNames(f *os.File, dst []string) ([]string, error) {
	ents, err := f.ReadDir(-1)
	for _, e := range ents {
		if e.IsDir() {
			dst = append(dst, e.Name())
		}
	}
	return dst, err
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
	s := name
	if strings.HasSuffix(s, ".scope") {
		s = strings.TrimSuffix(s, ".scope")
		switch {
		case strings.HasPrefix(s, "docker-"):
			s = s[len("docker-"):]
		case strings.HasPrefix(s, "cri-containerd-"):
			s = s[len("cri-containerd-"):]
		case strings.HasPrefix(s, "crio-"):
			s = s[len("crio-"):]
		case strings.HasPrefix(s, "libpod-"):
			s = s[len("libpod-"):]
		default:
			return ""
		}
	}
	if len(s) != 64 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return ""
		}
	}
	return s
}

func (r *Reader) newContainer(id, path string) *Container {
	c := &Container{ID: id, Path: path}
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
