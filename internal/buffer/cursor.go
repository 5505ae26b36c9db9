package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
)

// CursorFile is the name of the file holding a queue's committed index. It
// is 20 bytes, little-endian:
//
//	offset size field
//	0      4    magic "TPCU"
//	4      1    version (1)
//	5      3    zero
//	8      8    committed index: every index below it has been consumed
//	16     4    CRC-32C (Castagnoli) of bytes [0,16)
//
// It is replaced atomically: written to cursorTempFile, fsynced, renamed
// over CursorFile, then the directory is fsynced. A missing cursor means
// nothing was ever committed.
const (
	CursorFile     = "cursor"
	cursorTempFile = "cursor.tmp"
	cursorSize     = 20
	cursorVersion  = 1
	cursorMagic    = "TPCU"
)

func encodeCursor(idx uint64) []byte {
	b := make([]byte, cursorSize)
	copy(b, cursorMagic)
	b[4] = cursorVersion
	binary.LittleEndian.PutUint64(b[8:16], idx)
	binary.LittleEndian.PutUint32(b[16:20], crc32.Checksum(b[:16], castagnoli))
	return b
}

// decodeCursor returns the committed index in b, or an error wrapping
// ErrCursorCorrupt.
func decodeCursor(b []byte) (uint64, error) {
	switch {
	case len(b) != cursorSize:
		return 0, fmt.Errorf("%w: size %d, want %d", ErrCursorCorrupt, len(b), cursorSize)
	case string(b[:4]) != cursorMagic:
		return 0, fmt.Errorf("%w: bad magic %q", ErrCursorCorrupt, b[:4])
	case crc32.Checksum(b[:16], castagnoli) != binary.LittleEndian.Uint32(b[16:20]):
		return 0, fmt.Errorf("%w: %w", ErrCursorCorrupt, ErrBadChecksum)
	case b[4] != cursorVersion || b[5] != 0 || b[6] != 0 || b[7] != 0:
		return 0, fmt.Errorf("%w: version %d", ErrCursorCorrupt, b[4])
	}
	return binary.LittleEndian.Uint64(b[8:16]), nil
}

// readCursor returns the committed index stored in dir, whether a cursor
// file exists, and an error wrapping ErrCursorCorrupt if it cannot be
// trusted.
func readCursor(dir string) (uint64, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, CursorFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read cursor in %s: %w", dir, err)
	}
	idx, err := decodeCursor(b)
	return idx, true, err
}

// writeCursor atomically replaces the cursor file in dir.
func writeCursor(dir string, idx uint64) error {
	tmp := filepath.Join(dir, cursorTempFile)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create cursor %s: %w", tmp, diskError(err))
	}
	_, err = f.Write(encodeCursor(idx))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write cursor %s: %w", tmp, diskError(err))
	}
	if err := os.Rename(tmp, filepath.Join(dir, CursorFile)); err != nil {
		return fmt.Errorf("rename cursor in %s: %w", dir, err)
	}
	return syncDir(dir)
}
