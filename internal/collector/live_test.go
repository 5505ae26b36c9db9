package collector

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestLive_ThisMachine samples the test machine's own /proc and
// /sys/fs/cgroup (its containers, if any): no source may fail and the
// device metrics must be plausible.
func TestLive_ThisMachine(t *testing.T) {
	if _, err := os.Stat("/proc/stat"); err != nil {
		t.Skip("no /proc on this machine")
	}
	c, err := New(Options{Device: "live", NoDocker: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	now := time.Now()
	var got map[string]float64
	for range 2 { // the second cycle reads through the files kept open
		got = seriesValues(c.Collect(context.Background(), now))
		for src, n := range c.errCount {
			if n != 0 {
				t.Errorf("source %s: %v errors", src, n)
			}
		}
	}
	sum := func(prefix string) (total float64, n int) {
		for k, v := range got {
			if strings.HasPrefix(k, prefix+"{") {
				total += v
				n++
			}
		}
		return total, n
	}
	if cpu, n := sum("node_cpu_seconds_total"); n < 8 || cpu <= 0 {
		t.Errorf("node_cpu_seconds_total: %d series summing to %v", n, cpu)
	}
	mem, _ := sum("node_memory_MemTotal_bytes")
	avail, _ := sum("node_memory_MemAvailable_bytes")
	if mem < 64<<20 || avail <= 0 || avail > mem {
		t.Errorf("MemTotal %v, MemAvailable %v", mem, avail)
	}
	if boot, n := sum("node_boot_time_seconds"); n != 1 || boot < 1e9 || boot > float64(now.Unix()) {
		t.Errorf("boot time %v", boot)
	}
	if l, n := sum("node_load1"); n != 1 || l < 0 {
		t.Errorf("load1 %v (%d series)", l, n)
	}
	if size, n := sum("node_filesystem_size_bytes"); n == 0 || size <= 0 {
		t.Errorf("filesystems: %d series, %v bytes", n, size)
	}
	if _, n := sum("node_network_receive_bytes_total"); n == 0 {
		t.Logf("no network interface besides lo and veth")
	}
	_, containers := sum("container_cpu_usage_seconds_total")
	t.Logf("cgroup mode %d, %d containers, %d series", c.CgroupMode(), containers, len(got))
}
