package coldbench

import "testing"

func TestEvictWritesEveryLine(t *testing.T) {
	e := make(Evictor, 4096)
	e.Evict()
	for i, v := range e {
		want := byte(0)
		if i%64 == 0 {
			want = 1
		}
		if v != want {
			t.Fatalf("byte %d = %d, want %d", i, v, want)
		}
	}
	if n := len(NewEvictor()); n != 96<<20 {
		t.Errorf("NewEvictor: %d bytes", n)
	}
}

func TestProcessCPUAdvances(t *testing.T) {
	c0 := ProcessCPU(t)
	x := 0
	for ProcessCPU(t)-c0 < 20_000_000 { // 20 ms of work; the clock has µs resolution
		for i := range 1_000_000 {
			x += i
		}
	}
	if x == 0 {
		t.Fatal("loop did not run")
	}
}
