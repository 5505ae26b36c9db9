package testenv

import (
	"os"
	"syscall"
	"testing"
)

// MountTmpfs mounts a tmpfs of size (mount's size option, e.g. "1m") on a
// fresh directory and unmounts it when the test ends: a real filesystem
// that fills up, for disk-full tests. It skips the test when not root or
// when the mount fails (CI runs as root).
func MountTmpfs(tb testing.TB, size string) string {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("mounting a tmpfs needs root")
	}
	mnt := tb.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size="+size); err != nil {
		tb.Skipf("mount tmpfs: %v", err)
	}
	tb.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			tb.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}
