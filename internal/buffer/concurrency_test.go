package buffer

import (
	"context"
	"runtime"
	"sync"
	"testing"
)

// TestGroupCommitManyAppenders appends from many goroutines under
// SyncAlways on a real disk and checks that every record is there, once,
// in per-writer order, and that fsyncs were shared.
func TestGroupCommitManyAppenders(t *testing.T) {
	const writers, perWriter = 32, 100
	dir := t.TempDir()
	q := mustOpen(t, dir, Options{SegmentBytes: 256 << 10})
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range uint64(writers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range uint64(perWriter) {
				if _, err := q.Append(context.Background(), rec(w<<32|s, 200), 1); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Append: %v", err)
	}
	st := q.Stats()
	t.Logf("%d appends, %d fsyncs", st.Appends, st.Fsyncs)
	if st.Appends != writers*perWriter || st.Fsyncs >= st.Appends {
		t.Fatalf("%d appends took %d fsyncs; group commit should share them", st.Appends, st.Fsyncs)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	q = mustOpen(t, dir, Options{})
	defer q.Close()
	indices, ids := readAll(t, q, 0)
	if len(ids) != writers*perWriter {
		t.Fatalf("read %d records, want %d", len(ids), writers*perWriter)
	}
	next := map[uint64]uint64{}
	for i, id := range ids {
		if indices[i] != uint64(i) {
			t.Fatalf("record %d has index %d", i, indices[i])
		}
		w, s := id>>32, id&(1<<32-1)
		if s != next[w] {
			t.Fatalf("writer %d: seq %d at index %d, want %d", w, s, i, next[w])
		}
		next[w]++
	}
}

// TestGroupCommitOneFsyncServesAllWaiters holds the first fsync until 15
// more appends have been written, then checks that a single further fsync
// made all of them durable: 16 appends, 2 fsyncs.
func TestGroupCommitOneFsyncServesAllWaiters(t *testing.T) {
	ffs := &faultFS{syncGate: make(chan struct{}), syncEntered: make(chan struct{})}
	q := mustOpen(t, t.TempDir(), Options{openFile: ffs.open})
	defer q.Close()
	before := q.Stats().Fsyncs

	var wg sync.WaitGroup
	append1 := func(id uint64) {
		defer wg.Done()
		if _, err := q.Append(context.Background(), rec(id, 100), 1); err != nil {
			t.Errorf("Append %d: %v", id, err)
		}
	}
	wg.Add(1)
	go append1(0) // becomes the leader and blocks in Sync
	<-ffs.syncEntered
	for i := uint64(1); i < 16; i++ {
		wg.Add(1)
		go append1(i)
	}
	for q.NextIndex() < 16 { // all 15 written, waiting on the leader
		runtime.Gosched()
	}
	close(ffs.syncGate)
	wg.Wait()
	if got := q.Stats().Fsyncs - before; got != 2 {
		t.Fatalf("16 appends took %d fsyncs, want 2", got)
	}
	if _, ids := readAll(t, q, 0); len(ids) != 16 {
		t.Fatalf("read %d records", len(ids))
	}
}

// TestReadWhileAppending reads the tail while appenders write, under the
// race detector.
func TestReadWhileAppending(t *testing.T) {
	q := mustOpen(t, t.TempDir(), Options{SegmentBytes: 8 << 10})
	defer q.Close()
	const total = 400
	var wg sync.WaitGroup
	for w := range uint64(4) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range uint64(total / 4) {
				if _, err := q.Append(context.Background(), rec(w<<32|s, 300), 1); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		}()
	}
	ctx := context.Background()
	var idx uint64
	var buf []byte
	for idx < total {
		if err := q.Wait(ctx, idx); err != nil {
			t.Fatal(err)
		}
		e, err := q.ReadEntry(idx, buf[:0])
		if err != nil {
			t.Fatalf("ReadEntry(%d): %v", idx, err)
		}
		if e.Index != idx {
			t.Fatalf("ReadEntry(%d) returned %d", idx, e.Index)
		}
		recID(t, e.Data)
		buf, idx = e.Data, e.Next
		if idx%50 == 0 {
			if err := q.Commit(idx); err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
}
