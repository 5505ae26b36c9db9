package buffer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"tillpipe/internal/testenv"
)

// faultFS opens segment files through faultyFile, which fails the way full
// and broken disks do (compare wlog's faultySegmentFile).
type faultFS struct {
	mu         sync.Mutex
	limited    bool  // budget applies
	budget     int64 // bytes WriteAt may still write
	failCreate bool  // creating a segment fails with ENOSPC
	syncErr    error // every Sync fails with it

	syncGate    chan struct{} // if set, the first Sync waits for it to close
	syncEntered chan struct{} // closed when the first Sync starts waiting
	gateOnce    sync.Once
}

func (fs *faultFS) open(path string, flag int, perm os.FileMode) (segmentFile, error) {
	fs.mu.Lock()
	fail := fs.failCreate && flag&os.O_CREATE != 0
	fs.mu.Unlock()
	if fail {
		return nil, &os.PathError{Op: "open", Path: path, Err: syscall.ENOSPC}
	}
	f, err := os.OpenFile(path, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultyFile{File: f, fs: fs}, nil
}

func (fs *faultFS) set(f func(fs *faultFS)) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f(fs)
}

type faultyFile struct {
	*os.File
	fs *faultFS
}

func (f *faultyFile) WriteAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	n := int64(len(b))
	short := f.fs.limited && n > f.fs.budget
	if short {
		n = f.fs.budget
	}
	if f.fs.limited {
		f.fs.budget -= n
	}
	f.fs.mu.Unlock()
	m, err := f.File.WriteAt(b[:n], off)
	if err == nil && short {
		err = &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return m, err
}

func (f *faultyFile) Sync() error {
	if f.fs.syncGate != nil {
		first := false
		f.fs.gateOnce.Do(func() { first = true })
		if first {
			close(f.fs.syncEntered)
			<-f.fs.syncGate
		}
	}
	f.fs.mu.Lock()
	err := f.fs.syncErr
	f.fs.mu.Unlock()
	if err != nil {
		return &os.PathError{Op: "sync", Path: f.Name(), Err: err}
	}
	return f.File.Sync()
}

// TestDiskFaults injects disk failures through the segment file seam.
func TestDiskFaults(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		inject func(fs *faultFS)
		// recovers says appends work again once the fault is gone, without
		// reopening.
		recovers bool
		wantErr  error
	}{
		{"enospc_short_write", func(fs *faultFS) { fs.limited, fs.budget = true, 30 }, true, ErrDiskFull},
		{"enospc_zero_write", func(fs *faultFS) { fs.limited, fs.budget = true, 0 }, true, ErrDiskFull},
		{"enospc_creating_segment", func(fs *faultFS) { fs.failCreate = true }, true, ErrDiskFull},
		{"fsync_eio_is_sticky", func(fs *faultFS) { fs.syncErr = syscall.EIO }, false, syscall.EIO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ffs := &faultFS{}
			// Ten 124-byte frames fill the 1240-byte segment, so the 11th
			// append must create a segment.
			opts := Options{SegmentBytes: 1240, openFile: ffs.open}
			q := mustOpen(t, dir, opts)
			for i := range 10 {
				mustAppend(t, q, rec(uint64(i), 100), 1)
			}
			sizeBefore := q.Stats().DiskBytes
			ffs.set(tt.inject)
			_, err := q.Append(ctx, rec(10, 100), 1)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Append under fault: %v, want %v", err, tt.wantErr)
			}
			if errors.Is(tt.wantErr, ErrDiskFull) && !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Append: %v does not wrap ENOSPC", err)
			}
			var cerr *CorruptionError
			if errors.As(err, &cerr) {
				t.Fatalf("disk fault reported as corruption: %v", err)
			}
			ffs.set(func(fs *faultFS) { fs.limited, fs.budget, fs.failCreate, fs.syncErr = false, 0, false, nil })

			want := uint64(10)
			if tt.recovers {
				if st := q.Stats(); st.DiskBytes != sizeBefore || st.NextIndex != 10 {
					t.Fatalf("after failed append: %d bytes (was %d), next %d", st.DiskBytes, sizeBefore, st.NextIndex)
				}
				if idx := mustAppend(t, q, rec(10, 100), 1); idx != 10 {
					t.Fatalf("append after fault got index %d", idx)
				}
				want = 11
			} else if _, err := q.Append(ctx, rec(10, 100), 1); err == nil {
				t.Fatal("Append after failed fsync succeeded; it must stay failed until reopened")
			}
			_ = q.Close()

			q = mustOpen(t, dir, Options{SegmentBytes: 1240})
			defer q.Close()
			if st := q.Stats(); st.Repair != (RepairStats{}) {
				t.Fatalf("reopen after fault needed repair: %+v", st.Repair)
			}
			if q.NextIndex() < want {
				t.Fatalf("after reopen next index %d, want at least %d", q.NextIndex(), want)
			}
			_, ids := readAll(t, q, 0)
			for i, id := range ids {
				if id != uint64(i) {
					t.Fatalf("after reopen record %d has id %d", i, id)
				}
			}
		})
	}
}

// TestDiskFullTmpfs fills a real 1 MiB tmpfs until Append reports
// ErrDiskFull, frees space by committing, appends again and reopens. It
// needs root (CI runs as root).
func TestDiskFullTmpfs(t *testing.T) {
	mnt := testenv.MountTmpfs(t, "1m") // TestDiskFaults covers ENOSPC through the file seam without root
	dir := filepath.Join(mnt, "q")
	opts := Options{SegmentBytes: 64 << 10}
	q := mustOpen(t, dir, opts)
	ctx := context.Background()
	var n uint64
	for ; ; n++ {
		_, err := q.Append(ctx, rec(n, 4096), 1)
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrDiskFull) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Append %d: %v, want ErrDiskFull wrapping ENOSPC", n, err)
		}
		break
	}
	if n < 100 {
		t.Fatalf("disk full after only %d records", n)
	}
	if _, err := q.Append(ctx, rec(n, 4096), 1); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("second Append on full disk: %v", err)
	}
	committed := n / 2
	if err := q.Commit(committed); err != nil {
		t.Fatalf("Commit to free space: %v", err)
	}
	for i := range uint64(10) {
		if idx := mustAppend(t, q, rec(n+i, 4096), 1); idx != n+i {
			t.Fatalf("append after freeing space got index %d, want %d", idx, n+i)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	q = mustOpen(t, dir, opts)
	defer q.Close()
	if st := q.Stats(); st.Repair != (RepairStats{}) || st.Committed != committed {
		t.Fatalf("after reopen: %+v", st)
	}
	wantIDs(t, q, committed, idRange(committed, n+10))
}

// TestCommit_KeepsTailSegmentAfterFailedAppend covers a full disk hitting
// the first write into a fresh segment: the head is then empty, and a
// Commit of everything must not delete the segment holding the newest
// record, which the relay's sealer reads back after a restart to resume.
func TestCommit_KeepsTailSegmentAfterFailedAppend(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ffs := &faultFS{}
	opts := Options{SegmentBytes: 1240, openFile: ffs.open} // ten 124-byte frames per segment
	q := mustOpen(t, dir, opts)
	for i := range 10 {
		mustAppend(t, q, rec(uint64(i), 100), 1)
	}
	ffs.set(func(fs *faultFS) { fs.limited, fs.budget = true, 0 })
	if _, err := q.Append(ctx, rec(10, 100), 1); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("Append on a full disk: %v, want ErrDiskFull", err)
	}
	ffs.set(func(fs *faultFS) { fs.limited = false })
	if err := q.Commit(q.NextIndex()); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = mustOpen(t, dir, opts)
	defer q.Close()
	e, err := q.ReadEntry(9, nil)
	if err != nil || e.Index != 9 || !bytes.Equal(e.Data, rec(9, 100)) {
		t.Fatalf("newest record after commit and reopen: %+v, %v; want record 9", e, err)
	}
}
