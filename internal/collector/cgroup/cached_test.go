package cgroup

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	posID  = "4b22933b1c1a52f075b0c399bd28844890252342a237a15e32d6ead871724ebe"
	posRel = "system.slice/docker-" + posID + ".scope"
)

// cloneCgroup copies the cgroup directory src of root to dst (both relative).
func cloneCgroup(t *testing.T, root, src, dst string) {
	t.Helper()
	if err := os.CopyFS(filepath.Join(root, dst), os.DirFS(filepath.Join(root, src))); err != nil {
		t.Fatal(err)
	}
}

func discover(t *testing.T, r *Reader, scope Scope) map[string]*Container {
	t.Helper()
	cs, err := r.Discover(nil, scope)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]*Container, len(cs))
	for _, c := range cs {
		m[strings.TrimPrefix(c.Path, "/")] = c
	}
	return m
}

func TestDiscover_NotEngineKeepsTheEngineSubtrees(t *testing.T) {
	root := copyTree(t, "v2-docker")
	// Kubernetes' systemd subtree exists; its cgroupfs one does not.
	if err := os.MkdirAll(filepath.Join(root, "kubepods.slice", "kubepods-besteffort.slice"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := newReader(t, root)
	if got := discover(t, r, All); len(got) != 3 {
		t.Fatalf("found %d containers, want 3", len(got))
	}

	const (
		newDocker = "system.slice/docker-1111111111111111111111111111111111111111111111111111111111111111.scope"
		newPod    = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0a9b8c7d_6e5f_4a3b_2c1d_0e9f8a7b6c5d.slice/cri-containerd-2222222222222222222222222222222222222222222222222222222222222222.scope"
	)
	cloneCgroup(t, root, posRel, newDocker)
	cloneCgroup(t, root, posRel, newPod)
	got := discover(t, r, NotEngine)
	if got[newDocker] != nil {
		t.Error("NotEngine listed the engine's subtree: found a container created since the last listing")
	}
	if got[newPod] == nil {
		t.Error("NotEngine did not list Kubernetes' subtree")
	}
	if len(got) != 4 {
		t.Errorf("NotEngine found %d containers, want the 3 listed before and the pod's", len(got))
	}
	if got := discover(t, r, All); got[newDocker] == nil || len(got) != 5 {
		t.Errorf("All found %d containers (new one: %v), want 5", len(got), got[newDocker] != nil)
	}

	// A subtree missing at the last All is not looked for by NotEngine.
	const cgroupfsPod = "kubepods/besteffort/pod0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d/3333333333333333333333333333333333333333333333333333333333333333"
	cloneCgroup(t, root, posRel, cgroupfsPod)
	if got := discover(t, r, NotEngine); got[cgroupfsPod] != nil || len(got) != 5 {
		t.Errorf("NotEngine found %d containers (in the subtree missing before: %v), want the 5 of the last All",
			len(got), got[cgroupfsPod] != nil)
	}
	if got := discover(t, r, All); got[cgroupfsPod] == nil || len(got) != 6 {
		t.Errorf("All found %d containers (the new subtree's: %v), want 6", len(got), got[cgroupfsPod] != nil)
	}

	// A container removed since the last listing is still returned, and
	// reads as gone; the next full listing drops it.
	if err := os.RemoveAll(filepath.Join(root, posRel)); err != nil {
		t.Fatal(err)
	}
	c := discover(t, r, NotEngine)[posRel]
	if c == nil {
		t.Fatal("NotEngine dropped a container of the engine's subtree")
	}
	var st Stats
	if err := r.Read(c, &st); err != nil || st.Has != 0 {
		t.Errorf("removed cgroup read: has %b, err %v; want nothing", st.Has, err)
	}
	if discover(t, r, All)[posRel] != nil {
		t.Error("All still found a removed container")
	}
}

// newReader returns a reader of root, closed when the test ends.
func newReader(t *testing.T, root string) *Reader {
	t.Helper()
	r, err := New(Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// readPos discovers with scope and reads the pos-api container.
func readPos(t *testing.T, r *Reader, scope Scope) (*Container, Stats) {
	t.Helper()
	c := discover(t, r, scope)[posRel]
	if c == nil {
		t.Fatal("pos-api not found")
	}
	var st Stats
	if err := r.Read(c, &st); err != nil {
		t.Fatal(err)
	}
	return c, st
}

func TestRead_LimitReadWhenItsSubtreeIsListed(t *testing.T) {
	root := copyTree(t, "v2-docker")
	r := newReader(t, root)
	if _, st := readPos(t, r, All); st.Has&FieldMemLimit == 0 || st.MemLimit != 536870912 {
		t.Fatalf("limit %d (has %v), want 536870912", st.MemLimit, st.Has&FieldMemLimit != 0)
	}
	write(t, filepath.Join(root, posRel, "memory.max"), "max\n") // docker update --memory 0
	if _, st := readPos(t, r, NotEngine); st.Has&FieldMemLimit == 0 || st.MemLimit != 536870912 {
		t.Errorf("limit %d after NotEngine, want the value read before, 536870912", st.MemLimit)
	}
	if _, st := readPos(t, r, All); st.Has&FieldMemLimit == 0 || st.MemLimit != 0 {
		t.Errorf("limit %d after All, want 0 (unlimited)", st.MemLimit)
	}

	// A kept value is not reported once the cgroup is gone.
	c, _ := readPos(t, r, NotEngine)
	removeCgroup(t, root, c)
	if _, st := readPos(t, r, NotEngine); st.Has != 0 {
		t.Errorf("removed cgroup read: has %b, want nothing (no kept limit or OOM kills)", st.Has)
	}
}

// removeCgroup removes c's directory and closes the files the reader holds
// open, since a removed directory on tmpfs still reads through them where
// cgroupfs answers ENODEV (and the reader then closes them).
func removeCgroup(t *testing.T, root string, c *Container) {
	t.Helper()
	if err := os.RemoveAll(filepath.Join(root, c.Path)); err != nil {
		t.Fatal(err)
	}
	for i, fd := range c.fds {
		if fd >= 0 {
			syscall.Close(fd)
			c.fds[i] = -1
		}
	}
}

func TestRead_OOMKillsReadWhenMemoryEventsChanged(t *testing.T) {
	root := copyTree(t, "v2-docker")
	r := newReader(t, root)
	if r.w.fd < 0 {
		t.Skip("no inotify here")
	}
	events := filepath.Join(root, posRel, "memory.events")
	c, st := readPos(t, r, All)
	if st.Has&FieldOOMKills == 0 || st.OOMKills != 0 {
		t.Fatalf("oom kills %d (has %v), want 0", st.OOMKills, st.Has&FieldOOMKills != 0)
	}
	if c.wd < 0 {
		t.Fatalf("memory.events not watched (wd %d)", c.wd)
	}
	readPos(t, r, NotEngine)
	if c.oomDue {
		t.Error("memory.events due for a read without a change")
	}

	write(t, events, "low 0\nhigh 0\nmax 4\noom 3\noom_kill 3\noom_group_kill 0\n")
	if _, st := readPos(t, r, NotEngine); st.OOMKills != 3 {
		t.Errorf("oom kills %d after memory.events changed, want 3", st.OOMKills)
	}

	// A bad file is read again on the next cycle, without a new change.
	write(t, events, "oom_kill four\n")
	if _, err := r.Discover(nil, NotEngine); err != nil {
		t.Fatal(err)
	}
	if err := r.Read(c, &st); err == nil {
		t.Fatal("a bad memory.events read without an error")
	}
	if !c.oomDue {
		t.Error("a failed read of memory.events is not tried again")
	}
}

func TestRead_OOMKillsWithoutInotifyReadEveryTime(t *testing.T) {
	root := copyTree(t, "v2-docker")
	r := newReader(t, root)
	r.w.close() // as when inotify_init1 failed
	c, _ := readPos(t, r, All)
	write(t, filepath.Join(root, posRel, "memory.events"), "oom_kill 2\n")
	var st Stats
	if err := r.Read(c, &st); err != nil || st.OOMKills != 2 {
		t.Errorf("oom kills %d (err %v), want 2 read again", st.OOMKills, err)
	}
}

// TestWatcher_LiveCgroupfs checks, on this machine's own cgroup v2
// filesystem, the kernel behaviour the watcher depends on: a value change
// of a cgroup's event file (cgroup.events here; memory.events goes through
// the same cgroup_file_notify) sends inotify "modified". It needs root and
// a writable cgroup2 mount.
func TestWatcher_LiveCgroupfs(t *testing.T) {
	mnt := cgroup2Mount(t)
	dir := filepath.Join(mnt, "tillpipe-watch-test-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot create a cgroup: %v", err)
	}
	defer func() {
		for i := 0; i < 100 && os.Remove(dir) != nil; i++ { // EBUSY until the process is gone
			time.Sleep(10 * time.Millisecond)
		}
	}()
	w := watcher{fd: -1}
	w.init()
	if w.fd < 0 {
		t.Skip("no inotify here")
	}
	defer w.close()
	c := &Container{wd: noWatch}
	c.paths[fileMemEvents] = filepath.Join(dir, "cgroup.events")
	w.watch(c)
	if c.wd < 0 {
		t.Fatalf("watch %s failed", c.paths[fileMemEvents])
	}
	c.oomDue = false
	w.drain()
	if c.oomDue {
		t.Fatal("event without a change")
	}

	sleep := exec.Command("sleep", "30")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sleep.Process.Kill(); _ = sleep.Wait() }()
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(sleep.Process.Pid)), 0o644); err != nil {
		t.Skipf("cannot move a process into the cgroup: %v", err)
	}
	// populated 0 -> 1. The kernel notifies from a work item, at most every
	// 10 ms per file: wait for it.
	for deadline := time.Now().Add(5 * time.Second); !c.oomDue && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		w.drain()
	}
	if !c.oomDue {
		t.Error("no inotify event after cgroup.events changed")
	}
}

func cgroup2Mount(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 3 && fields[2] == "cgroup2" {
			var st syscall.Statfs_t
			if syscall.Statfs(fields[1], &st) == nil {
				return fields[1]
			}
		}
	}
	t.Skip("no cgroup2 mount")
	return ""
}

func TestRead_AbsentFileLookedForWhenItsSubtreeIsListed(t *testing.T) {
	root := copyTree(t, "v2-docker")
	r := newReader(t, root)
	psi := filepath.Join(root, posRel, "io.pressure")
	content, err := os.ReadFile(psi)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(psi); err != nil { // as with PSI disabled
		t.Fatal(err)
	}
	if _, st := readPos(t, r, All); st.Pressure[PressureIO].HasSome {
		t.Fatal("io pressure read from a removed file")
	}
	write(t, psi, string(content))
	if _, st := readPos(t, r, NotEngine); st.Pressure[PressureIO].HasSome {
		t.Error("an absent file was looked for again before its subtree was listed")
	}
	if _, st := readPos(t, r, All); !st.Pressure[PressureIO].HasSome {
		t.Error("an absent file was not looked for again when its subtree was listed")
	}
}

// TestRead_WatchGoneReadsEveryTime removes the watch behind the reader's
// back, as the kernel does when the watched file goes (IN_IGNORED): the
// file is then read every time.
func TestRead_WatchGoneReadsEveryTime(t *testing.T) {
	root := copyTree(t, "v2-docker")
	r := newReader(t, root)
	if r.w.fd < 0 {
		t.Skip("no inotify here")
	}
	c, _ := readPos(t, r, All)
	if c.wd < 0 {
		t.Fatalf("memory.events not watched (wd %d)", c.wd)
	}
	if _, err := syscall.InotifyRmWatch(r.w.fd, uint32(c.wd)); err != nil {
		t.Fatal(err)
	}
	readPos(t, r, NotEngine) // drains IN_IGNORED
	if c.wd != watchFailed {
		t.Fatalf("wd %d after IN_IGNORED, want watchFailed", c.wd)
	}
	write(t, filepath.Join(root, posRel, "memory.events"), "oom_kill 5\n")
	var st Stats
	if err := r.Read(c, &st); err != nil || st.OOMKills != 5 {
		t.Errorf("oom kills %d (err %v) without a watch, want 5 read again", st.OOMKills, err)
	}
}

// TestWatcher_QueueOverflow overflows the kernel's inotify queue for real
// (max_queued_events changes to two files in turn, so that none merge):
// the kernel then queues IN_Q_OVERFLOW, and every watched file must be
// read again, including one that never changed.
func TestWatcher_QueueOverflow(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Skipf("inotify limits: %v", err)
	}
	limit, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || limit > 1<<20 {
		t.Skipf("max_queued_events %q: too many changes to make", b)
	}
	w := watcher{fd: -1}
	w.init()
	if w.fd < 0 {
		t.Skip("no inotify here")
	}
	defer w.close()
	dir := t.TempDir()
	var cs [3]*Container
	for i := range cs {
		cs[i] = &Container{wd: noWatch}
		cs[i].paths[fileMemEvents] = filepath.Join(dir, "memory.events."+strconv.Itoa(i))
		write(t, cs[i].paths[fileMemEvents], "oom_kill 0\n")
		w.watch(cs[i])
		if cs[i].wd < 0 {
			t.Fatalf("watch %s failed", cs[i].paths[fileMemEvents])
		}
	}
	clearDue := func() {
		for _, c := range cs {
			c.oomDue = false
		}
	}
	clearDue()

	// One change to the first two files: only they are due.
	var fs [2]*os.File
	for i := range fs {
		f, err := os.OpenFile(cs[i].paths[fileMemEvents], os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fs[i] = f
		if _, err := f.WriteAt([]byte("oom_kill 1\n"), 0); err != nil {
			t.Fatal(err)
		}
	}
	w.drain()
	if !cs[0].oomDue || !cs[1].oomDue || cs[2].oomDue {
		t.Fatalf("due after one change each to files 0 and 1: %v %v %v", cs[0].oomDue, cs[1].oomDue, cs[2].oomDue)
	}
	clearDue()

	for i := range limit + 2 {
		if _, err := fs[i%2].WriteAt([]byte("oom_kill 2\n"), 0); err != nil {
			t.Fatal(err)
		}
	}
	w.drain()
	if !cs[2].oomDue {
		t.Fatal("after the queue overflowed, the file that never changed is not due")
	}
	clearDue()
	w.drain()
	for i, c := range cs {
		if c.oomDue {
			t.Errorf("file %d due after a drain with nothing queued", i)
		}
	}
}
