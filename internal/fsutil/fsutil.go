// Package fsutil holds the few file-system steps that several stores need
// to get exactly right: today, making a rename durable.
package fsutil

import (
	"fmt"
	"os"
)

// SyncDir fsyncs the directory dir, so that files created, renamed or
// removed in it survive a machine crash (an fsync of the file alone does
// not cover its directory entry).
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// WriteFileSync writes data to path (created or truncated, with mode) and
// fsyncs it before returning, so that it is on disk when the caller goes
// on (to rename its directory into place, or to rely on it after a crash).
func WriteFileSync(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
