package node

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func fixedStatfs(_ string, buf *syscall.Statfs_t) error {
	*buf = syscall.Statfs_t{Bsize: 4096, Blocks: 100, Bfree: 40, Bavail: 30}
	return nil
}

func TestRead_Fixture(t *testing.T) {
	r := NewReader(Options{ProcRoot: "../testdata/proc", Statfs: fixedStatfs})
	var st Stats
	if err := r.Read(&st); err != nil {
		t.Fatal(err)
	}
	if len(st.CPUs) != 2 || st.CPUs[1].ID != "1" || st.CPUs[0].Modes[0] != 35.15 {
		t.Errorf("cpus %+v", st.CPUs)
	}
	if st.BootTime != 1795254202 || st.Load != [3]float64{0.58, 0.45, 0.18} {
		t.Errorf("boot %v load %v", st.BootTime, st.Load)
	}
	var nets []string
	for _, n := range st.Net {
		nets = append(nets, n.Name)
	}
	if len(nets) != 2 || nets[0] != "eth0" || nets[1] != "docker0" {
		t.Errorf("interfaces %v, want eth0 and docker0 (lo and veth skipped)", nets)
	}
	var mps []string
	for _, f := range st.Filesystems {
		mps = append(mps, f.MountPoint)
	}
	want := []string{"/", "/run", "/boot/efi", "/var/lib/pos data"}
	if len(mps) != len(want) {
		t.Fatalf("mount points %q, want %q", mps, want)
	}
	for i := range want {
		if mps[i] != want[i] {
			t.Errorf("mount point %d = %q, want %q", i, mps[i], want[i])
		}
	}
	if st.Filesystems[0].Size != 409600 || st.Filesystems[0].Avail != 122880 {
		t.Errorf("filesystem %+v", st.Filesystems[0])
	}
}

func TestRead_Failures(t *testing.T) {
	for _, tc := range []struct {
		name, file, content string
	}{
		{"stat_cpu_column_garbage", "stat", "cpu0 1 x 3\n"},
		{"meminfo_value_garbage", "meminfo", "MemTotal: lots kB\n"},
		{"loadavg_truncated", "loadavg", "0.5\n"},
		{"net_dev_short_line", "net/dev", "h\nh\n eth0: 1 2\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "proc")
			if err := os.CopyFS(dir, os.DirFS("../testdata/proc")); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			var st Stats
			err := NewReader(Options{ProcRoot: dir, Statfs: fixedStatfs}).Read(&st)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Errorf("err %v, want a ParseError", err)
			}
			if len(st.Filesystems) == 0 {
				t.Error("one bad file stopped the others from being read")
			}
		})
	}
}

// TestRead_KeptFilesReadAfresh reads through the files kept open between
// cycles: a later Read sees the current content, and a failed read is
// followed by a new open.
func TestRead_KeptFilesReadAfresh(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "proc")
	if err := os.CopyFS(dir, os.DirFS("../testdata/proc")); err != nil {
		t.Fatal(err)
	}
	r := NewReader(Options{ProcRoot: dir, Statfs: fixedStatfs})
	defer r.Close()
	var st Stats
	if err := r.Read(&st); err != nil {
		t.Fatal(err)
	}
	loadavg := filepath.Join(dir, "loadavg")
	if err := os.WriteFile(loadavg, []byte("7.25 0.45 0.18 1/86 6325\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Read(&st); err != nil || st.Load[0] != 7.25 {
		t.Fatalf("load1 %v (err %v), want 7.25 from the rewritten file", st.Load[0], err)
	}

	// The kept descriptor fails (as after the file was closed under it):
	// that cycle reports the error, the next opens the file again.
	f := r.files["loadavg"]
	if f == nil || f.fd < 0 {
		t.Fatal("loadavg not kept open")
	}
	if err := syscall.Close(f.fd); err != nil {
		t.Fatal(err)
	}
	if err := r.Read(&st); err == nil {
		t.Error("a failed read reported no error")
	}
	if err := r.Read(&st); err != nil || st.Load[0] != 7.25 {
		t.Errorf("load1 %v (err %v) after reopening, want 7.25", st.Load[0], err)
	}
}
