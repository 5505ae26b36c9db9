package seal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// A class's state file (<dir>/<class>.state) records the last batch sealed:
// its sequence number and the last inbox record it covers. It is replaced
// atomically (write a temporary file, fsync, rename, fsync the directory)
// after each seal, before the inbox is committed, so that it survives the
// outbox dropping or sending that batch. Little-endian, 24 bytes:
//
//	offset size field
//	0      4    magic "TPSS"
//	4      8    seq of the last sealed batch
//	12     8    last inbox record of that batch
//	20     4    CRC-32C of bytes [0, 20)
const (
	stateMagic = "TPSS"
	stateLen   = 24
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrStateCorrupt is wrapped when a state file fails its checks.
var ErrStateCorrupt = errors.New("seal state file corrupt")

// sealState is the last seal of a class.
type sealState struct {
	Seq        uint64
	LastRecord uint64
}

func statePath(dir, class string) string { return filepath.Join(dir, class+".state") }

// readState returns the state in path; ok is false when there is none.
func readState(path string) (st sealState, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return sealState{}, false, nil
	}
	if err != nil {
		return sealState{}, false, fmt.Errorf("read seal state: %w", err)
	}
	if len(b) != stateLen || string(b[:4]) != stateMagic ||
		crc32.Checksum(b[:20], castagnoli) != binary.LittleEndian.Uint32(b[20:]) {
		return sealState{}, false, fmt.Errorf("read seal state %s: %w", path, ErrStateCorrupt)
	}
	return sealState{
		Seq:        binary.LittleEndian.Uint64(b[4:]),
		LastRecord: binary.LittleEndian.Uint64(b[12:]),
	}, true, nil
}

// writeState replaces path with st durably.
func writeState(path string, st sealState) error {
	var b [stateLen]byte
	copy(b[:], stateMagic)
	binary.LittleEndian.PutUint64(b[4:], st.Seq)
	binary.LittleEndian.PutUint64(b[12:], st.LastRecord)
	binary.LittleEndian.PutUint32(b[20:], crc32.Checksum(b[:20], castagnoli))
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write seal state: %w", err)
	}
	_, werr := f.Write(b[:])
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("write seal state %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename seal state: %w", err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("open seal state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync seal state dir %s: %w", filepath.Dir(path), err)
	}
	return nil
}
