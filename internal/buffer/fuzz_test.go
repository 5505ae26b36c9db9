package buffer

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpenSegment opens a queue whose only segment holds arbitrary bytes:
// Open must not panic, and must either recover (torn tail) or report a
// *CorruptionError; valid frames must read back.
func FuzzOpenSegment(f *testing.F) {
	valid := appendFrame(nil, frameRecord, 1, 2, []byte("hello"))
	valid = appendGapFrame(valid, 1, 3)
	valid = appendFrame(valid, frameRecord, 1, 2, []byte("world"))
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	f.Add(append(append([]byte{}, valid...), make([]byte, 100)...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segmentName(0)), data, 0o644); err != nil {
			t.Fatal(err)
		}
		q, err := Open(dir, Options{})
		if err != nil {
			return
		}
		defer q.Close()
		var idx uint64
		for i := 0; ; i++ {
			e, err := q.ReadEntry(idx, nil)
			if err != nil {
				break
			}
			if e.Index < idx || i > len(data) {
				t.Fatalf("ReadEntry(%d) went to %d", idx, e.Index)
			}
			idx = e.Next
		}
	})
}

// FuzzDecodeCursor: no panic, and a decoded cursor re-encodes to the same
// bytes.
func FuzzDecodeCursor(f *testing.F) {
	f.Add(encodeCursor(0))
	f.Add(encodeCursor(1 << 40))
	f.Add([]byte("TPCU"))
	f.Fuzz(func(t *testing.T, b []byte) {
		idx, err := decodeCursor(b)
		if err != nil {
			return
		}
		if string(encodeCursor(idx)) != string(b) {
			t.Fatalf("cursor %x decodes to %d but re-encodes differently", b, idx)
		}
	})
}
