package proc

import (
	"io/fs"
	"path/filepath"
)

// walk calls fn with the size of every regular file under dir, skipping
// files that vanish while it walks (a relay deleting a drained segment).
func walk(dir string, fn func(size int64)) error {
	return filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				fn(info.Size())
			}
		}
		return nil
	})
}
