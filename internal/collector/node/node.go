// Package node reads the device's own counters from /proc and statfs, for
// export under node_exporter's metric names.
package node

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"tillpipe/internal/collector/rawsys"
)

// Options configures a [Reader]. The zero value reads /proc.
type Options struct {
	// ProcRoot is where procfs is mounted; default /proc.
	ProcRoot string
	// Statfs replaces statfs(2) (tests point it at fixtures). By default a
	// local filesystem (localFSTypes) is asked with a raw system call and
	// any other with syscall.Statfs (see package rawsys).
	Statfs func(path string, buf *syscall.Statfs_t) error
}

// CPUModes are node_cpu_seconds_total's mode label values, in /proc/stat's
// column order.
var CPUModes = [8]string{"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}

// CPU is one logical CPU's time per mode, in seconds.
type CPU struct {
	ID    string // "0", "1", ...
	Modes [8]float64
}

// MemInfo lists the /proc/meminfo fields exported, as
// node_memory_<Name>_bytes.
var MemInfo = []string{"MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "Shmem", "SwapTotal", "SwapFree"}

// Filesystem is one mounted filesystem's capacity, in bytes.
type Filesystem struct {
	Device, FSType, MountPoint string
	Size, Free, Avail          float64
}

// NetDev is one network interface's byte counters.
type NetDev struct {
	Name             string
	RxBytes, TxBytes uint64
}

// Stats is one reading of the device. Slices are reused by the next
// [Reader.Read].
type Stats struct {
	CPUs        []CPU
	Mem         []float64 // bytes, indexed like MemInfo; NaN when absent
	MemHas      []bool
	Load        [3]float64
	HasLoad     bool
	BootTime    float64
	Filesystems []Filesystem
	Net         []NetDev
}

// Reader reads [Stats]. It reuses its buffers across calls and is unsafe for
// concurrent use.
type Reader struct {
	proc   string
	statfs func(string, *syscall.Statfs_t) error
	buf    []byte
	files  map[string]*procFile // by name

	cpuIDs     []string
	names      map[string]string // interned interface names
	prevMounts []byte
	mounts     []Filesystem
	sfs        syscall.Statfs_t
}

// NewReader returns a reader for opts.
func NewReader(opts Options) *Reader {
	r := &Reader{proc: opts.ProcRoot, statfs: opts.Statfs, names: make(map[string]string), files: make(map[string]*procFile)}
	if r.proc == "" {
		r.proc = "/proc"
	}
	r.proc = strings.TrimSuffix(r.proc, "/")
	return r
}

// ParseError is a /proc file whose content does not have the expected
// format.
type ParseError struct {
	Path string
	Line string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("parse %s: unexpected line %q", e.Path, e.Line)
}

// Read fills st. Every source is read even when one fails; the first error
// is returned.
func (r *Reader) Read(st *Stats) error {
	var first error
	note := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	note(r.readStat(st))
	note(r.readMemInfo(st))
	note(r.readLoad(st))
	note(r.readNetDev(st))
	note(r.readFilesystems(st))
	return first
}

// procFile is a /proc file held open between cycles.
type procFile struct {
	path string
	fd   int // -1 when closed
}

// Close closes the files held open.
func (r *Reader) Close() {
	for _, f := range r.files {
		if f.fd >= 0 {
			rawsys.Close(f.fd)
			f.fd = -1
		}
	}
}

// read returns the content of <proc>/name in a buffer valid until the next
// call. The file is opened on first use and kept open: procfs generates a
// file's content afresh for a read at offset 0, so a cycle costs the
// preads alone (two for a file that fits the buffer: the content, then
// end of file). A failed read closes the file; the next call opens it
// again.
func (r *Reader) read(name string) ([]byte, string, error) {
	f := r.files[name]
	if f == nil {
		f = &procFile{path: r.proc + "/" + name, fd: -1}
		r.files[name] = f
	}
	if r.buf == nil {
		r.buf = make([]byte, 16<<10)
	}
	if f.fd < 0 {
		// procfs files open and read without blocking: raw system calls
		// (see package rawsys).
		fd, err := rawsys.Open(f.path, 0)
		if err != nil {
			return nil, f.path, fmt.Errorf("open %s: %w", f.path, err)
		}
		f.fd = fd
	}
	n := 0
	for {
		if n == len(r.buf) {
			r.buf = append(r.buf, make([]byte, len(r.buf))...)
		}
		m, err := rawsys.Pread(f.fd, r.buf[n:], int64(n))
		if err != nil {
			rawsys.Close(f.fd)
			f.fd = -1
			return nil, f.path, fmt.Errorf("read %s: %w", f.path, err)
		}
		if m == 0 {
			return r.buf[:n], f.path, nil
		}
		n += m
	}
}

// nextLine splits b at the first newline.
func nextLine(b []byte) (line, rest []byte) {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

// nextField returns the next space-separated field of b.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	j := i
	for j < len(b) && b[j] != ' ' && b[j] != '\t' {
		j++
	}
	return b[i:j], b[j:]
}

func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// userHZ is the unit of /proc/stat's CPU columns.
const userHZ = 100

// readStat reads per-CPU times and btime from /proc/stat:
//
//	cpu0 3515 0 949 12225 10 0 4 9 0 0
//	btime 1754380800
func (r *Reader) readStat(st *Stats) error {
	b, path, err := r.read("stat")
	if err != nil {
		return err
	}
	st.CPUs = st.CPUs[:0]
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		name, rest := nextField(line)
		switch {
		case bytes.HasPrefix(name, []byte("cpu")) && len(name) > 3:
			idx, ok := parseUint(name[3:])
			if !ok {
				return &ParseError{Path: path, Line: string(line)}
			}
			for uint64(len(r.cpuIDs)) <= idx {
				r.cpuIDs = append(r.cpuIDs, strconv.Itoa(len(r.cpuIDs)))
			}
			c := CPU{ID: r.cpuIDs[idx]}
			for i := range c.Modes {
				var f []byte
				f, rest = nextField(rest)
				v, ok := parseUint(f)
				if !ok {
					if len(f) == 0 {
						break // older kernels have fewer columns
					}
					return &ParseError{Path: path, Line: string(line)}
				}
				c.Modes[i] = float64(v) / userHZ
			}
			st.CPUs = append(st.CPUs, c)
		case string(name) == "btime":
			f, _ := nextField(rest)
			v, ok := parseUint(f)
			if !ok {
				return &ParseError{Path: path, Line: string(line)}
			}
			st.BootTime = float64(v)
		}
	}
	return nil
}

// readMemInfo reads /proc/meminfo lines such as "MemTotal:  24684092 kB".
func (r *Reader) readMemInfo(st *Stats) error {
	b, path, err := r.read("meminfo")
	if err != nil {
		return err
	}
	if len(st.Mem) != len(MemInfo) {
		st.Mem, st.MemHas = make([]float64, len(MemInfo)), make([]bool, len(MemInfo))
	}
	clear(st.MemHas)
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		key, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		for i, name := range MemInfo {
			if string(key) != name {
				continue
			}
			f, rest := nextField(rest)
			v, ok := parseUint(f)
			if !ok {
				return &ParseError{Path: path, Line: string(line)}
			}
			if unit, _ := nextField(rest); string(unit) == "kB" {
				v *= 1024
			}
			st.Mem[i], st.MemHas[i] = float64(v), true
			break
		}
	}
	return nil
}

// readLoad reads /proc/loadavg: "0.58 0.45 0.18 1/86 6325".
func (r *Reader) readLoad(st *Stats) error {
	b, path, err := r.read("loadavg")
	if err != nil {
		return err
	}
	st.HasLoad = false
	rest := b
	for i := range st.Load {
		var f []byte
		f, rest = nextField(rest)
		v, err := strconv.ParseFloat(string(f), 64)
		if err != nil {
			return &ParseError{Path: path, Line: string(bytes.TrimSpace(b))}
		}
		st.Load[i] = v
	}
	st.HasLoad = true
	return nil
}

// readNetDev reads receive and transmit bytes per interface from
// /proc/net/dev, skipping loopback and containers' veth peers (they come
// and go with containers):
//
//	eth0: 101818074    6692    0    0    0     0          0         0   627697    6362 ...
func (r *Reader) readNetDev(st *Stats) error {
	b, path, err := r.read("net/dev")
	if err != nil {
		return err
	}
	st.Net = st.Net[:0]
	_, b = nextLine(b) // two header lines
	_, b = nextLine(b)
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		name, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		if string(name) == "lo" || bytes.HasPrefix(name, []byte("veth")) {
			continue
		}
		var vals [9]uint64
		for i := range vals {
			var f []byte
			f, rest = nextField(rest)
			if vals[i], ok = parseUint(f); !ok {
				return &ParseError{Path: path, Line: string(line)}
			}
		}
		n, ok := r.names[string(name)]
		if !ok {
			n = string(name)
			r.names[n] = n
		}
		st.Net = append(st.Net, NetDev{Name: n, RxBytes: vals[0], TxBytes: vals[8]})
	}
	return nil
}

// ignoredFSTypes and ignoredMountPrefixes are node_exporter's defaults
// (collector/filesystem_linux.go: fs-types-exclude, mount-points-exclude).
var ignoredFSTypes = map[string]bool{
	"autofs": true, "binfmt_misc": true, "bpf": true, "cgroup": true, "cgroup2": true, "configfs": true,
	"debugfs": true, "devpts": true, "devtmpfs": true, "fusectl": true, "hugetlbfs": true, "iso9660": true,
	"mqueue": true, "nsfs": true, "overlay": true, "proc": true, "procfs": true, "pstore": true,
	"rpc_pipefs": true, "securityfs": true, "selinuxfs": true, "squashfs": true, "erofs": true,
	"sysfs": true, "tracefs": true,
}

var ignoredMountPrefixes = []string{"/dev", "/proc", "/sys", "/run/credentials/", "/var/lib/docker/", "/var/lib/containers/storage/", "/var/lib/kubelet/", "/run/containerd/", "/run/k3s/"}

func ignoredMount(mp string) bool {
	for _, p := range ignoredMountPrefixes {
		if strings.HasSuffix(p, "/") {
			if strings.HasPrefix(mp, p) {
				return true
			}
		} else if mp == p || strings.HasPrefix(mp, p+"/") {
			return true
		}
	}
	return false
}

// localFSTypes are the filesystems whose statfs(2) answers from memory, so
// it is made raw: a normal system call wakes the runtime's sysmon thread
// from its deep sleep, and it then naps 20 µs at a time for the rest of the
// cycle. Any other filesystem (nfs, cifs, fuse.*) may wait on a server and
// gets a normal call, which stalls only the agent's goroutine.
var localFSTypes = map[string]bool{
	"ext2": true, "ext3": true, "ext4": true, "xfs": true, "btrfs": true, "f2fs": true,
	"vfat": true, "exfat": true, "tmpfs": true, "overlay": true, "squashfs": true, "erofs": true,
}

// readFilesystems statfs()es the mounted filesystems listed in
// <proc>/1/mounts (or <proc>/mounts). The mount table is parsed again only
// when it changed.
func (r *Reader) readFilesystems(st *Stats) error {
	b, path, err := r.read("1/mounts")
	if err != nil {
		if b, path, err = r.read("mounts"); err != nil {
			return err
		}
	}
	if !bytes.Equal(b, r.prevMounts) {
		r.prevMounts = append(r.prevMounts[:0], b...)
		if err := r.parseMounts(b, path); err != nil {
			return err
		}
	}
	st.Filesystems = st.Filesystems[:0]
	var first error
	sfs := &r.sfs // a field: passed to a func value, a local would escape
	for _, m := range r.mounts {
		statfs := r.statfs
		if statfs == nil {
			statfs = syscall.Statfs
			if localFSTypes[m.FSType] {
				statfs = rawsys.Statfs
			}
		}
		if err := statfs(m.MountPoint, sfs); err != nil {
			if !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.ENOENT) && first == nil {
				first = fmt.Errorf("statfs %s: %w", m.MountPoint, err)
			}
			continue
		}
		bs := float64(sfs.Bsize)
		m.Size, m.Free, m.Avail = float64(sfs.Blocks)*bs, float64(sfs.Bfree)*bs, float64(sfs.Bavail)*bs
		st.Filesystems = append(st.Filesystems, m)
	}
	return first
}

// parseMounts reads "device mountpoint fstype options 0 0" lines; octal
// escapes (\040 for a space) are decoded. A mount point mounted twice keeps
// its last (visible) mount.
func (r *Reader) parseMounts(b []byte, path string) error {
	r.mounts = r.mounts[:0]
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		dev, rest := nextField(line)
		mp, rest := nextField(rest)
		fstype, _ := nextField(rest)
		if len(fstype) == 0 {
			return &ParseError{Path: path, Line: string(line)}
		}
		m := Filesystem{Device: unescape(dev), MountPoint: unescape(mp), FSType: string(fstype)}
		if ignoredFSTypes[m.FSType] || ignoredMount(m.MountPoint) {
			continue
		}
		replaced := false
		for i := range r.mounts {
			if r.mounts[i].MountPoint == m.MountPoint {
				r.mounts[i], replaced = m, true
			}
		}
		if !replaced {
			r.mounts = append(r.mounts, m)
		}
	}
	return nil
}

func unescape(b []byte) string {
	if bytes.IndexByte(b, '\\') < 0 {
		return string(b)
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+3 < len(b) && isOctal(b[i+1]) && isOctal(b[i+2]) && isOctal(b[i+3]) {
			out = append(out, (b[i+1]-'0')<<6|(b[i+2]-'0')<<3|(b[i+3]-'0'))
			i += 3
			continue
		}
		out = append(out, b[i])
	}
	return string(out)
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
