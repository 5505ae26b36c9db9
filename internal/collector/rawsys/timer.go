package rawsys

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// Timer waits for instants of the wall clock on a timerfd(2) watched by
// the runtime's netpoller, not on a runtime timer. Between two cycles the
// runtime then has no timer due, so its sysmon thread sleeps through (it
// sleeps until the next runtime timer, at most a minute), where a runtime
// timer wakes it at every cycle for a string of 20 µs naps while the cycle
// runs. A step of the wall clock (NTP at boot, or by hand) ends a wait
// with ErrClockStepped, so that the caller aims again from the new time. It
// is unsafe for concurrent use.
type Timer struct {
	f  *os.File
	rc syscall.RawConn

	// ctx is the context of the last Wait; stop unregisters the function
	// that ends a wait when ctx is done, and fired is closed once that
	// function has run. A caller that waits with the same ctx every cycle
	// registers it once, not every cycle.
	ctx   context.Context
	stop  func() bool
	fired chan struct{}
}

// Linux's timerfd flags (include/uapi/linux/timerfd.h).
const (
	tfdNonblock         = syscall.O_NONBLOCK
	tfdCloexec          = syscall.O_CLOEXEC
	tfdTimerAbstime     = 1
	tfdTimerCancelOnSet = 2 // TFD_TIMER_CANCEL_ON_SET
)

// ErrClockStepped is returned by [Timer.Wait] when the wall clock was set
// (stepped) while it waited: the instant waited for may now be far off,
// an hour away after a step back by an hour. Compute it again.
var ErrClockStepped = errors.New("wall clock stepped")

// NewTimer returns a timer on CLOCK_REALTIME.
func NewTimer() (*Timer, error) {
	fd, _, errno := syscall.RawSyscall(syscall.SYS_TIMERFD_CREATE, uintptr(0 /* CLOCK_REALTIME */), tfdNonblock|tfdCloexec, 0)
	if errno != 0 {
		return nil, fmt.Errorf("timerfd_create: %w", errno)
	}
	f := os.NewFile(fd, "timerfd") // non-blocking: the netpoller watches it
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	return &Timer{f: f, rc: rc}, nil
}

// Wait returns once the wall clock reached at (at once when it has),
// ErrClockStepped when the clock was set meanwhile, or ctx.Err() when ctx
// is done first.
func (t *Timer) Wait(ctx context.Context, at time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ns := at.UnixNano()
	if ns <= 0 {
		ns = 1 // 0 would disarm the timer
	}
	spec := [4]int64{0, 0, ns / 1e9, ns % 1e9} // struct itimerspec: it_interval, it_value
	var err error
	serr := t.rc.Control(func(fd uintptr) {
		if _, _, errno := syscall.RawSyscall6(syscall.SYS_TIMERFD_SETTIME, fd, tfdTimerAbstime|tfdTimerCancelOnSet,
			uintptr(unsafe.Pointer(&spec)), 0, 0, 0); errno != 0 {
			err = fmt.Errorf("timerfd_settime: %w", errno)
		}
	})
	if err = errors.Join(serr, err); err != nil {
		return err
	}
	// A done ctx ends the wait through a read deadline in the past, set
	// by a function registered once per ctx (a done ctx returned above).
	if ctx != t.ctx {
		t.release()
		f, fired := t.f, make(chan struct{})
		t.ctx, t.fired = ctx, fired
		t.stop = context.AfterFunc(ctx, func() {
			_ = f.SetReadDeadline(time.Unix(1, 0))
			close(fired)
		})
	}
	var buf [8]byte // the expiration count
	serr = t.rc.Read(func(fd uintptr) bool {
		_, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
		switch errno {
		case syscall.EAGAIN:
			return false // not yet: wait in the netpoller
		case 0:
			err = nil
		case syscall.ECANCELED:
			err = ErrClockStepped
		default:
			err = fmt.Errorf("read timerfd: %w", errno)
		}
		return true
	})
	if serr != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("read timerfd: %w", serr)
	}
	return err
}

// release unregisters the last Wait's ctx and clears the read deadline
// its end set, if it ended.
func (t *Timer) release() {
	if t.stop == nil {
		return
	}
	if !t.stop() {
		<-t.fired
		_ = t.f.SetReadDeadline(time.Time{})
	}
	t.ctx, t.stop, t.fired = nil, nil, nil
}

// Close releases the timerfd.
func (t *Timer) Close() error {
	t.release()
	return t.f.Close()
}
