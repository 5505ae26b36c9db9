package buffer

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sort"
	"sync"
	"testing"
	"time"
)

// rec builds a record that carries its own id, padded to size bytes.
func rec(id uint64, size int) []byte {
	if size < 8 {
		size = 8
	}
	b := make([]byte, size)
	binary.LittleEndian.PutUint64(b, id)
	for i := 8; i < size; i++ {
		b[i] = byte(id) + byte(i)
	}
	return b
}

func recID(t testing.TB, b []byte) uint64 {
	t.Helper()
	if len(b) < 8 {
		t.Fatalf("record of %d bytes has no id", len(b))
	}
	id := binary.LittleEndian.Uint64(b)
	if want := rec(id, len(b)); string(want) != string(b) {
		t.Fatalf("record %d: payload damaged", id)
	}
	return id
}

func mustOpen(t testing.TB, dir string, opts Options) *Queue {
	t.Helper()
	q, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return q
}

func mustAppend(t testing.TB, q *Queue, b []byte, samples int) uint64 {
	t.Helper()
	idx, err := q.Append(context.Background(), b, samples)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return idx
}

// readAll reads every record from idx to the tail and returns their indices
// and ids.
func readAll(t testing.TB, q *Queue, idx uint64) (indices, ids []uint64) {
	t.Helper()
	var buf []byte
	for {
		e, err := q.ReadEntry(idx, buf[:0])
		if errors.Is(err, io.EOF) {
			return indices, ids
		}
		if err != nil {
			t.Fatalf("ReadEntry(%d): %v", idx, err)
		}
		buf = e.Data
		indices = append(indices, e.Index)
		ids = append(ids, recID(t, e.Data))
		idx = e.Next
	}
}

func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if _, ok := parseSegmentName(e.Name()); ok {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}

func TestAppendReadCommitReopen(t *testing.T) {
	dir := t.TempDir()
	q := mustOpen(t, dir, Options{SegmentBytes: 1024})
	for i := range 100 {
		if idx := mustAppend(t, q, rec(uint64(i), 50), i); idx != uint64(i) {
			t.Fatalf("Append %d got index %d", i, idx)
		}
	}
	e, err := q.ReadEntry(42, nil)
	if err != nil || e.Index != 42 || e.Next != 43 || e.Samples != 42 || recID(t, e.Data) != 42 {
		t.Fatalf("ReadEntry(42) = %+v, %v", e, err)
	}
	st := q.Stats()
	if st.PendingRecords != 100 || st.PendingSamples != 4950 || st.OldestPending.IsZero() {
		t.Fatalf("stats before commit: %+v", st)
	}
	if err := q.Commit(60); err != nil {
		t.Fatal(err)
	}
	st = q.Stats()
	if st.PendingRecords != 40 || st.PendingSamples != 4950-(59*60/2) {
		t.Fatalf("stats after commit: %+v", st)
	}
	if st.FirstIndex == 0 || st.FirstIndex > 60 {
		t.Fatalf("segments below the commit not deleted: first index %d", st.FirstIndex)
	}
	if err := q.Commit(200); !errors.Is(err, ErrInvalidIndex) {
		t.Fatalf("Commit beyond tail: %v", err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Append(context.Background(), nil, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}

	q = mustOpen(t, dir, Options{SegmentBytes: 1024})
	defer q.Close()
	if q.Committed() != 60 || q.NextIndex() != 100 {
		t.Fatalf("after reopen committed=%d next=%d", q.Committed(), q.NextIndex())
	}
	indices, ids := readAll(t, q, q.Committed())
	if len(ids) != 40 || ids[0] != 60 || indices[39] != 99 {
		t.Fatalf("after reopen read %d records from %v", len(ids), indices)
	}
	if idx := mustAppend(t, q, rec(100, 10), 1); idx != 100 {
		t.Fatalf("append after reopen got %d", idx)
	}
}

func TestReadBelowFirstIndexSkips(t *testing.T) {
	q := mustOpen(t, t.TempDir(), Options{SegmentBytes: 256})
	defer q.Close()
	for i := range 40 {
		mustAppend(t, q, rec(uint64(i), 40), 1)
	}
	if err := q.Commit(20); err != nil {
		t.Fatal(err)
	}
	first := q.FirstIndex()
	e, err := q.ReadEntry(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.Index != first || e.Skipped != first {
		t.Fatalf("ReadEntry(0) = index %d skipped %d, want %d", e.Index, e.Skipped, first)
	}
	if _, _, err := q.Read(40, nil); !errors.Is(err, io.EOF) {
		t.Fatalf("Read at tail: %v", err)
	}
}

func TestWaitWakesOnAppend(t *testing.T) {
	q := mustOpen(t, t.TempDir(), Options{})
	defer q.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	errc := make(chan error, 1)
	go func() {
		defer wg.Done()
		errc <- q.Wait(context.Background(), 0)
	}()
	mustAppend(t, q, rec(1, 8), 1)
	wg.Wait()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.Wait(ctx, 5); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with cancelled ctx: %v", err)
	}
}

func TestOptionsInvalid(t *testing.T) {
	for name, o := range map[string]Options{
		"negative_segment_bytes": {SegmentBytes: -1},
		"huge_max_record":        {MaxRecordBytes: maxFrameBytes + 1},
		"unknown_sync_policy":    {Sync: 7},
		"negative_interval":      {SyncInterval: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Open(t.TempDir(), o); !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("Open: %v, want ErrInvalidOption", err)
			}
		})
	}
}

func TestRecordTooLarge(t *testing.T) {
	q := mustOpen(t, t.TempDir(), Options{MaxRecordBytes: 100})
	defer q.Close()
	if _, err := q.Append(context.Background(), make([]byte, 101), 1); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("Append: %v", err)
	}
}

func TestSyncIntervalAppendReadable(t *testing.T) {
	dir := t.TempDir()
	q := mustOpen(t, dir, Options{Sync: SyncInterval, SyncInterval: time.Millisecond})
	for i := range 50 {
		mustAppend(t, q, rec(uint64(i), 100), 1)
	}
	_, ids := readAll(t, q, 0)
	if len(ids) != 50 {
		t.Fatalf("read %d records", len(ids))
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = mustOpen(t, dir, Options{Sync: SyncInterval})
	defer q.Close()
	if _, ids := readAll(t, q, 0); len(ids) != 50 {
		t.Fatalf("after reopen read %d records", len(ids))
	}
}

func TestSegmentNamesFixedWidth(t *testing.T) {
	for _, first := range []uint64{0, 1, 0x4d2, 1<<64 - 1} {
		name := segmentName(first)
		got, ok := parseSegmentName(name)
		if len(name) != 16 || !ok || got != first {
			t.Fatalf("segmentName(%d) = %q, parse = %d %v", first, name, got, ok)
		}
	}
	for _, bad := range []string{"cursor", "000000000000000g", "00000000000000000", "000000000000000A"} {
		if _, ok := parseSegmentName(bad); ok {
			t.Fatalf("parseSegmentName(%q) accepted", bad)
		}
	}
}
