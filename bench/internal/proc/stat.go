package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clkTck is USER_HZ, 100 on every Linux the harness runs on.
const clkTck = 100

// Stat is one reading of /proc/<pid>/stat and /proc/<pid>/status.
type Stat struct {
	CPUSeconds float64 // utime+stime
	RSS        int64   // VmRSS in bytes
	PeakRSS    int64   // VmHWM in bytes
}

// ReadStat reads pid's CPU time and memory from /proc.
func ReadStat(pid int) (Stat, error) {
	var st Stat
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return st, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	cpu, err := parseStatCPU(b)
	if err != nil {
		return st, fmt.Errorf("parse stat of pid %d: %w", pid, err)
	}
	st.CPUSeconds = cpu
	b, err = os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return st, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	st.RSS, st.PeakRSS = parseStatusKB(b, "VmRSS:")*1024, parseStatusKB(b, "VmHWM:")*1024
	return st, nil
}

// parseStatCPU returns utime+stime in seconds from a /proc/<pid>/stat line.
// The command name (field 2) may hold spaces and parentheses, so fields are
// counted after the last ')'.
func parseStatCPU(b []byte) (float64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("no ')' in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')': state(3) ppid(4) ... utime is field 14, stime 15 -> index 11, 12.
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("utime %q stime %q", f[11], f[12])
	}
	return float64(ut+stime) / clkTck, nil
}

func parseStatusKB(b []byte, key string) int64 {
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// Self reads the harness's own usage.
func Self() Usage {
	st, err := ReadStat(os.Getpid())
	if err != nil {
		return Usage{}
	}
	return Usage{CPUSeconds: st.CPUSeconds, RSSBytes: st.RSS, PeakRSS: st.PeakRSS, Running: true}
}

// DirSize is the bytes of every regular file under dir (0 when missing).
func DirSize(dir string) int64 {
	var n int64
	_ = walk(dir, func(size int64) { n += size })
	return n
}

// MachineBusySeconds is the CPU time every process on the machine has used
// since boot (user, nice, system, irq, softirq, steal), from /proc/stat.
func MachineBusySeconds() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		v, _ := strconv.ParseUint(f[i], 10, 64)
		busy += v
	}
	return float64(busy) / clkTck
}
