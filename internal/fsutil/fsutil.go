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
