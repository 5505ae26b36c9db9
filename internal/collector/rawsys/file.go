package rawsys

import (
	"syscall"
	"unsafe"
)

// Open opens path read-only (plus flags, O_CLOEXEC always) with a raw
// openat(2), retrying on EINTR. Only for files that open without blocking
// (procfs, sysfs, cgroupfs, tmpfs).
func Open(path string, flags int) (int, error) {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return -1, err
	}
	for {
		fd, _, errno := syscall.RawSyscall6(syscall.SYS_OPENAT, uintptr(_AT_FDCWD), uintptr(unsafe.Pointer(p)),
			uintptr(flags|syscall.O_RDONLY|syscall.O_CLOEXEC), 0, 0, 0)
		switch errno {
		case 0:
			return int(fd), nil
		case syscall.EINTR:
			continue
		}
		return -1, errno
	}
}

// _AT_FDCWD is AT_FDCWD (-100) as the uintptr the system call takes.
const _AT_FDCWD = ^uintptr(99)

// Close closes fd with a raw close(2).
func Close(fd int) error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0); errno != 0 {
		return errno
	}
	return nil
}

// Read reads fd into p with a raw read(2), retrying on EINTR.
func Read(fd int, p []byte) (int, error) {
	return rw(syscall.SYS_READ, fd, p, 0)
}

// Pread reads fd from offset into p with a raw pread64(2), retrying on
// EINTR.
func Pread(fd int, p []byte, offset int64) (int, error) {
	return rw(syscall.SYS_PREAD64, fd, p, offset)
}

// Getdents reads directory entries (struct linux_dirent64) of fd into p
// with a raw getdents64(2), retrying on EINTR.
func Getdents(fd int, p []byte) (int, error) {
	return rw(syscall.SYS_GETDENTS64, fd, p, 0)
}

func rw(trap uintptr, fd int, p []byte, offset int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, _, errno := syscall.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), uintptr(offset), 0, 0)
		switch errno {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		}
		return 0, errno
	}
}

// Statfs fills buf for the filesystem holding path with a raw statfs(2),
// retrying on EINTR. Only for local filesystems, whose statfs answers from
// memory: a network filesystem's can wait on its server, and a raw call
// would stall every goroutine of a one-P process meanwhile.
func Statfs(path string, buf *syscall.Statfs_t) error {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return err
	}
	for {
		_, _, errno := syscall.RawSyscall(syscall.SYS_STATFS, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(buf)), 0)
		switch errno {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		}
		return errno
	}
}
