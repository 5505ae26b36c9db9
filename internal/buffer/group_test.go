package buffer

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"
)

// dropLog collects OnDrop calls.
type dropLog struct {
	mu sync.Mutex
	m  map[[2]string]DropCounts // {queue, reason}
}

func (d *dropLog) onDrop(queue, reason string, records, bytes, samples int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[[2]string]DropCounts{}
	}
	c := d.m[[2]string{queue, reason}]
	c.add(DropCounts{records, bytes, samples})
	d.m[[2]string{queue, reason}] = c
}

func (d *dropLog) get(queue, reason string) DropCounts {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m[[2]string{queue, reason}]
}

const groupFrame = frameHeaderSize + 100 // 124

func appendN(t *testing.T, q *Queue, from, n uint64) {
	t.Helper()
	for i := from; i < from+n; i++ {
		mustAppend(t, q, rec(i, 100), 3)
	}
}

// TestGroupCapDropsLowestClassFirst fills three classes to the cap and keeps
// appending critical data: bulk goes first, then normal, critical last, and
// the drop counters match exactly what can no longer be read.
func TestGroupCapDropsLowestClassFirst(t *testing.T) {
	var drops dropLog
	g, err := OpenGroup(t.TempDir(), []string{"critical", "normal", "bulk"}, GroupOptions{
		MaxBytes: 30 * groupFrame,
		Queue:    Options{SegmentBytes: 10 * groupFrame},
		OnDrop:   drops.onDrop,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	crit, normal, bulk := g.Queue("critical"), g.Queue("normal"), g.Queue("bulk")
	appendN(t, crit, 0, 10)
	appendN(t, normal, 0, 10)
	appendN(t, bulk, 0, 10)
	if err := bulk.Commit(4); err != nil { // committed records are not counted as dropped
		t.Fatal(err)
	}

	type want struct {
		q       *Queue
		name    string
		ids     []uint64 // readable from 0
		dropped DropCounts
	}
	check := func(phase string, wants ...want) {
		t.Helper()
		for _, w := range wants {
			_, ids := readAll(t, w.q, 0)
			if len(ids) != len(w.ids) || (len(ids) > 0 && (ids[0] != w.ids[0] || ids[len(ids)-1] != w.ids[len(w.ids)-1])) {
				t.Fatalf("%s: %s has ids %v, want %v", phase, w.name, ids, w.ids)
			}
			if st := w.q.Stats(); st.DroppedCap != w.dropped || st.DroppedAge != (DropCounts{}) {
				t.Fatalf("%s: %s dropped cap %+v age %+v, want cap %+v", phase, w.name, st.DroppedCap, st.DroppedAge, w.dropped)
			}
			if got := drops.get(w.name, ReasonCap); got != w.dropped {
				t.Fatalf("%s: OnDrop for %s got %+v, want %+v", phase, w.name, got, w.dropped)
			}
		}
		if g.Bytes() > 30*groupFrame {
			t.Fatalf("%s: group holds %d bytes over the cap %d", phase, g.Bytes(), 30*groupFrame)
		}
	}
	none := DropCounts{}
	seg := func(records int64) DropCounts { return DropCounts{records, records * groupFrame, records * 3} }

	check("full", want{crit, "critical", idRange(0, 10), none}, want{normal, "normal", idRange(0, 10), none}, want{bulk, "bulk", idRange(0, 10), none})
	appendN(t, crit, 10, 10)
	check("bulk dropped", want{crit, "critical", idRange(0, 20), none}, want{normal, "normal", idRange(0, 10), none}, want{bulk, "bulk", nil, seg(6)})
	e, err := bulk.ReadEntry(4, nil)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("bulk reader after drop: %+v, %v", e, err)
	}
	appendN(t, crit, 20, 10)
	check("normal dropped", want{crit, "critical", idRange(0, 30), none}, want{normal, "normal", nil, seg(10)}, want{bulk, "bulk", nil, seg(6)})
	appendN(t, bulk, 10, 1) // bulk has data again, but critical's own growth ...
	appendN(t, crit, 30, 10)
	// ... drops bulk's new record first, and only then critical's oldest.
	check("critical dropped last", want{crit, "critical", idRange(10, 40), seg(10)}, want{normal, "normal", nil, seg(10)}, want{bulk, "bulk", nil, seg(7)})
	e, err = crit.ReadEntry(0, nil)
	if err != nil || e.Index != 10 || e.Skipped != 10 {
		t.Fatalf("critical reader at dropped index 0: index %d skipped %d, %v", e.Index, e.Skipped, err)
	}
}

// TestGroupMaxAgeDropsOldSegments drives the clock by hand: segments whose
// newest record is older than MaxAge go, in every class.
func TestGroupMaxAgeDropsOldSegments(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	var drops dropLog
	dir := t.TempDir()
	opts := GroupOptions{MaxAge: time.Hour, Now: clock, OnDrop: drops.onDrop}
	g, err := OpenGroup(dir, []string{"critical", "normal", "bulk"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	crit, normal, bulk := g.Queue("critical"), g.Queue("normal"), g.Queue("bulk")
	appendN(t, crit, 0, 5)
	appendN(t, normal, 0, 5)
	appendN(t, bulk, 0, 5)
	advance(30 * time.Minute)
	appendN(t, crit, 5, 5)
	if st := crit.Stats(); !st.OldestPending.Equal(now.Add(-30 * time.Minute)) {
		t.Fatalf("oldest pending %v, want %v", st.OldestPending, now.Add(-30*time.Minute))
	}

	advance(31 * time.Minute) // normal and bulk are 61 min old, critical's segment 31 min
	if err := g.DropExpired(); err != nil {
		t.Fatal(err)
	}
	five := DropCounts{5, 5 * groupFrame, 15}
	for _, c := range []struct {
		q    *Queue
		name string
		want DropCounts
		left int
	}{{crit, "critical", DropCounts{}, 10}, {normal, "normal", five, 0}, {bulk, "bulk", five, 0}} {
		if st := c.q.Stats(); st.DroppedAge != c.want || st.PendingRecords != int64(c.left) {
			t.Fatalf("%s: dropped age %+v pending %d, want %+v and %d", c.name, st.DroppedAge, st.PendingRecords, c.want, c.left)
		}
		if got := drops.get(c.name, ReasonAge); got != c.want {
			t.Fatalf("OnDrop %s age %+v, want %+v", c.name, got, c.want)
		}
	}

	// Age is enforced by Append too, before the new record is written.
	advance(30 * time.Minute)
	appendN(t, normal, 5, 1)
	if st := crit.Stats(); st.DroppedAge != (DropCounts{10, 10 * groupFrame, 30}) || st.PendingRecords != 0 {
		t.Fatalf("critical after 91 min: %+v", st)
	}
	if _, ids := readAll(t, normal, 0); len(ids) != 1 || ids[0] != 5 {
		t.Fatalf("normal holds %v", ids)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}

	// The counters are per process; what was dropped stays dropped.
	g, err = OpenGroup(dir, []string{"critical", "normal", "bulk"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for name, st := range g.Stats() {
		want := int64(0)
		if name == "normal" {
			want = 1
		}
		if st.PendingRecords != want {
			t.Fatalf("after reopen %s has %d pending", name, st.PendingRecords)
		}
	}
}

func TestOpenGroupInvalid(t *testing.T) {
	for name, tc := range map[string]struct {
		names []string
		opts  GroupOptions
	}{
		"no_queues":         {nil, GroupOptions{}},
		"duplicate_name":    {[]string{"a", "a"}, GroupOptions{}},
		"path_in_name":      {[]string{"../x"}, GroupOptions{}},
		"cap_below_record":  {[]string{"a"}, GroupOptions{MaxBytes: 1000, Queue: Options{MaxRecordBytes: 1000}}},
		"cap_below_header":  {[]string{"a"}, GroupOptions{MaxBytes: 10}},
		"negative_max_age":  {[]string{"a"}, GroupOptions{MaxAge: -1}},
		"bad_queue_options": {[]string{"a"}, GroupOptions{Queue: Options{SegmentBytes: -1}}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := OpenGroup(t.TempDir(), tc.names, tc.opts); !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("OpenGroup: %v, want ErrInvalidOption", err)
			}
		})
	}
}

func TestGroupConcurrentAppendsUnderCap(t *testing.T) {
	g, err := OpenGroup(t.TempDir(), []string{"critical", "normal", "bulk"}, GroupOptions{
		MaxBytes: 40 * groupFrame,
		Queue:    Options{SegmentBytes: 5 * groupFrame},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var wg sync.WaitGroup
	for _, name := range []string{"critical", "normal", "bulk"} {
		for w := range uint64(3) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				q := g.Queue(name)
				for s := range uint64(50) {
					if _, err := q.Append(context.Background(), rec(w<<32|s, 100), 1); err != nil {
						t.Errorf("Append: %v", err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	if g.Bytes() > 40*groupFrame {
		t.Fatalf("group holds %d bytes, cap %d", g.Bytes(), 40*groupFrame)
	}
	var appended, kept, dropped int64
	for _, st := range g.Stats() {
		appended += int64(st.Appends)
		kept += st.PendingRecords
		dropped += st.DroppedCap.Records
	}
	if appended != kept+dropped {
		t.Fatalf("appended %d != kept %d + dropped %d", appended, kept, dropped)
	}
}
