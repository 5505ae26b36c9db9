package buffer

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

const (
	recoverySegBytes = 512
	recoveryRecBytes = 60
	recoveryFrame    = frameHeaderSize + recoveryRecBytes // 84: six frames per segment
	recoveryRecords  = 30                                 // five segments: 0, 6, 12, 18, 24
)

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func wantIDs(t *testing.T, q *Queue, from uint64, want []uint64) {
	t.Helper()
	_, ids := readAll(t, q, from)
	if len(ids) != len(want) {
		t.Fatalf("read ids %v, want %v", ids, want)
	}
	for i := range ids {
		if ids[i] != want[i] {
			t.Fatalf("read ids %v, want %v", ids, want)
		}
	}
}

func idRange(from, to uint64, skip ...uint64) []uint64 {
	var ids []uint64
next:
	for i := from; i < to; i++ {
		for _, s := range skip {
			if i == s {
				continue next
			}
		}
		ids = append(ids, i)
	}
	return ids
}

// TestRecovery damages a queue directory the way crashes and bad disks do
// and checks what Open reports and what Repair recovers.
func TestRecovery(t *testing.T) {
	seg := func(first uint64) string { return segmentName(first) }
	tests := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		wantErr error  // from Open without Repair; nil: Open succeeds
		wantSeg string // CorruptionError.Segment
		wantOff int64  // CorruptionError.Offset
		check   func(t *testing.T, q *Queue)
	}{
		{
			name: "torn_tail",
			damage: func(t *testing.T, dir string) {
				p := filepath.Join(dir, seg(24))
				if err := os.Truncate(p, 5*recoveryFrame+10); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, q *Queue) {
				wantIDs(t, q, 0, idRange(0, 29))
				if st := q.Stats(); st.Repair.TornBytes != 10 || st.NextIndex != 29 {
					t.Fatalf("stats %+v", st)
				}
				if idx := mustAppend(t, q, rec(1000, recoveryRecBytes), 1); idx != 29 {
					t.Fatalf("append after torn tail got index %d", idx)
				}
			},
		},
		{
			name: "zero_filled_tail",
			damage: func(t *testing.T, dir string) {
				f, err := os.OpenFile(filepath.Join(dir, seg(24)), os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.Write(make([]byte, 4096)); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, q *Queue) {
				wantIDs(t, q, 0, idRange(0, 30))
				if st := q.Stats(); st.Repair.TornBytes != 4096 {
					t.Fatalf("stats %+v", st)
				}
			},
		},
		{
			name: "torn_header_at_tail",
			damage: func(t *testing.T, dir string) {
				f, err := os.OpenFile(filepath.Join(dir, seg(24)), os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.Write(rec(99, recoveryRecBytes)[:7]); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, q *Queue) { wantIDs(t, q, 0, idRange(0, 30)) },
		},
		{
			name: "bit_flip_in_middle",
			damage: func(t *testing.T, dir string) {
				flipByte(t, filepath.Join(dir, seg(6)), 2*recoveryFrame+frameHeaderSize+20)
			},
			wantErr: ErrBadChecksum,
			wantSeg: seg(6),
			wantOff: 2 * recoveryFrame,
			check: func(t *testing.T, q *Queue) {
				wantIDs(t, q, 0, idRange(0, 30, 8, 9, 10, 11))
				st := q.Stats()
				if st.Repair.LostRecords != 4 || st.Repair.LostBytes != 4*recoveryFrame {
					t.Fatalf("repair stats %+v", st.Repair)
				}
				e, err := q.ReadEntry(8, nil)
				if err != nil || e.Index != 12 || e.Skipped != 4 {
					t.Fatalf("ReadEntry(8) = %d skipped %d, %v; want 12 skipped 4", e.Index, e.Skipped, err)
				}
			},
		},
		{
			name: "bit_flip_in_length_field",
			damage: func(t *testing.T, dir string) {
				flipByte(t, filepath.Join(dir, seg(0)), 3*recoveryFrame+3) // high byte of the length
			},
			wantErr: ErrBadFrame,
			wantSeg: seg(0),
			wantOff: 3 * recoveryFrame,
			check: func(t *testing.T, q *Queue) {
				wantIDs(t, q, 0, idRange(0, 30, 3, 4, 5))
			},
		},
		{
			name: "bit_flip_in_last_segment",
			damage: func(t *testing.T, dir string) {
				flipByte(t, filepath.Join(dir, seg(24)), recoveryFrame+frameHeaderSize+1)
			},
			wantErr: ErrBadChecksum,
			wantSeg: seg(24),
			wantOff: recoveryFrame,
			check: func(t *testing.T, q *Queue) {
				wantIDs(t, q, 0, idRange(0, 25))
				if st := q.Stats(); st.Repair.LostBytes != 5*recoveryFrame || st.NextIndex != 25 {
					t.Fatalf("stats %+v", st)
				}
			},
		},
		{
			name: "missing_segment",
			damage: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, seg(12))); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrMissingSegment,
			wantSeg: seg(12),
			check: func(t *testing.T, q *Queue) {
				wantIDs(t, q, 0, idRange(0, 30, 12, 13, 14, 15, 16, 17))
				if st := q.Stats(); st.Repair.LostRecords != 6 {
					t.Fatalf("repair stats %+v", st.Repair)
				}
				e, err := q.ReadEntry(13, nil)
				if err != nil || e.Index != 18 || e.Skipped != 5 {
					t.Fatalf("ReadEntry(13) = %d skipped %d, %v; want 18 skipped 5", e.Index, e.Skipped, err)
				}
			},
		},
		{
			name: "segment_overlap",
			damage: func(t *testing.T, dir string) {
				// A stray copy claiming indices 10.. overlaps segment 6.
				b, err := os.ReadFile(filepath.Join(dir, seg(12)))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, seg(10)), b, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrSegmentOverlap,
			wantSeg: seg(10),
		},
		{
			name: "cursor_file_corrupt",
			damage: func(t *testing.T, dir string) {
				q := mustOpen(t, dir, Options{SegmentBytes: recoverySegBytes})
				if err := q.Commit(14); err != nil {
					t.Fatal(err)
				}
				if err := q.Close(); err != nil {
					t.Fatal(err)
				}
				flipByte(t, filepath.Join(dir, CursorFile), 9)
			},
			wantErr: ErrCursorCorrupt,
			wantSeg: CursorFile,
			check: func(t *testing.T, q *Queue) {
				// At-least-once: back to the first record on disk (12), so 12
				// and 13 come again; nothing at or above 14 is lost.
				if q.Committed() != 12 || !q.Stats().Repair.CursorReset {
					t.Fatalf("committed %d, stats %+v", q.Committed(), q.Stats().Repair)
				}
				wantIDs(t, q, q.Committed(), idRange(12, 30))
			},
		},
		{
			name: "cursor_file_truncated",
			damage: func(t *testing.T, dir string) {
				if err := os.WriteFile(filepath.Join(dir, CursorFile), []byte("TPCU"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrCursorCorrupt,
			wantSeg: CursorFile,
			check: func(t *testing.T, q *Queue) {
				if q.Committed() != 0 {
					t.Fatalf("committed %d", q.Committed())
				}
				wantIDs(t, q, 0, idRange(0, 30))
			},
		},
		{
			name: "segment_rollover",
			check: func(t *testing.T, q *Queue) {
				names := segmentFiles(t, q.dir)
				want := []string{seg(0), seg(6), seg(12), seg(18), seg(24)}
				if len(names) != len(want) {
					t.Fatalf("segments %v, want %v", names, want)
				}
				for i, n := range names {
					fi, err := os.Stat(filepath.Join(q.dir, n))
					if err != nil {
						t.Fatal(err)
					}
					if n != want[i] || fi.Size() > recoverySegBytes {
						t.Fatalf("segment %s of %d bytes, want %s of at most %d", n, fi.Size(), want[i], recoverySegBytes)
					}
				}
				wantIDs(t, q, 0, idRange(0, 30))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			q := mustOpen(t, dir, Options{SegmentBytes: recoverySegBytes})
			for i := range recoveryRecords {
				mustAppend(t, q, rec(uint64(i), recoveryRecBytes), 1)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			if tt.damage != nil {
				tt.damage(t, dir)
			}

			q, err := Open(dir, Options{SegmentBytes: recoverySegBytes})
			if tt.wantErr != nil {
				var cerr *CorruptionError
				if !errors.As(err, &cerr) || !errors.Is(err, tt.wantErr) {
					t.Fatalf("Open: %v, want *CorruptionError wrapping %v", err, tt.wantErr)
				}
				if cerr.Segment != tt.wantSeg || cerr.Offset != tt.wantOff {
					t.Fatalf("CorruptionError at %s offset %d, want %s offset %d", cerr.Segment, cerr.Offset, tt.wantSeg, tt.wantOff)
				}
				if tt.check == nil {
					if _, err := Repair(dir, Options{SegmentBytes: recoverySegBytes}); !errors.Is(err, tt.wantErr) {
						t.Fatalf("Repair: %v, want it to refuse", err)
					}
					return
				}
				q, err = Open(dir, Options{SegmentBytes: recoverySegBytes, Repair: true})
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			tt.check(t, q)
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			// Whatever was recovered or repaired opens cleanly again.
			q, err = Open(dir, Options{SegmentBytes: recoverySegBytes})
			if err != nil {
				t.Fatalf("second Open: %v", err)
			}
			defer q.Close()
			if _, _, err := q.Read(q.Committed(), nil); err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("Read after second Open: %v", err)
			}
		})
	}
}

func TestRecoveryEmptyDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	q := mustOpen(t, dir, Options{})
	defer q.Close()
	if q.FirstIndex() != 0 || q.NextIndex() != 0 || q.Committed() != 0 {
		t.Fatalf("empty queue: first %d next %d committed %d", q.FirstIndex(), q.NextIndex(), q.Committed())
	}
	if _, _, err := q.Read(0, nil); !errors.Is(err, io.EOF) {
		t.Fatalf("Read on empty queue: %v", err)
	}
	if idx := mustAppend(t, q, []byte("x"), 1); idx != 0 {
		t.Fatalf("first Append got %d", idx)
	}
}
