package collector

import (
	"context"
	"testing"
	"time"

	"tillpipe/internal/collector/collectortest"
)

// TestCycle_Allocs pins the allocations of a steady-state cycle without
// the runtime source (whose HTTP client allocates in net/http): 30
// containers, /proc and the marshaled WriteRequest. What is left is one
// path conversion per open(2): the cgroup directories, listed every cycle
// without an engine's events, and the PSI files of the fixture's orphan
// container, which has none and is looked for again at each listing.
func TestCycle_Allocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	const maxAllocs = 8 // 5 cgroup dirs + 3 missing PSI files
	f := collectortest.Tree(t, t.TempDir(), "testdata", 30)
	c, err := New(Options{Device: "till-042", CgroupRoot: f.CgroupRoot, ProcRoot: f.ProcRoot, Statfs: fixedStatfs, NoDocker: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var series int
	a, err := NewAgent(c, func(_ []byte, n int) { series = n }, AgentOptions{Device: "till-042"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, now := context.Background(), time.Now()
	a.Cycle(ctx, now) // interns the series
	allocs := testing.AllocsPerRun(100, func() {
		now = now.Add(15 * time.Second)
		a.Cycle(ctx, now)
	})
	if series < 700 {
		t.Fatalf("%d series per cycle, want the 30 containers' and the device's", series)
	}
	t.Logf("%v allocations per cycle", allocs)
	if allocs > maxAllocs {
		t.Errorf("%v allocations per cycle, want at most %d", allocs, maxAllocs)
	}
}
