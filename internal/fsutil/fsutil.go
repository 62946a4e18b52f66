// Package fsutil holds the few file-system steps that several packages need
// to get exactly right: making a rename durable, reading a file a user named
// without trusting its size, and creating directories that a failed step
// takes away again.
package fsutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
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

// WriteFileAtomic replaces path with data (mode for a new file) so that a
// reader, or the machine after a crash, sees either the old content or the
// new, never a mix: it writes and fsyncs a temporary file beside path,
// renames it over path and fsyncs the directory.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	return replaceFile(path, data, mode, true)
}

// ReplaceFile replaces path with data by a rename, like WriteFileAtomic but
// without the fsyncs: a process that dies leaves the old content or the
// new, while a machine crash may leave either torn. It is for state that
// does not outlive the machine's boot (see proc.BootID).
func ReplaceFile(path string, data []byte, mode os.FileMode) error {
	return replaceFile(path, data, mode, false)
}

func replaceFile(path string, data []byte, mode os.FileMode, sync bool) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil && sync {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	if sync {
		return SyncDir(dir)
	}
	return nil
}

// ErrTooLarge means a file holds more than its reader accepts.
var ErrTooLarge = errors.New("file is too large")

// ReadFileLimit reads the whole file at path, refusing one of more than
// limit bytes with an error that wraps ErrTooLarge and names the file and
// the limit. Open errors are returned as they are (an *fs.PathError naming
// the file), so errors.Is(err, fs.ErrNotExist) works.
func ReadFileLimit(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && st.Size() > limit {
		return nil, tooLarge(path, limit)
	}
	return ReadLimit(f, path, limit)
}

// ReadLimit reads r to its end, refusing more than limit bytes; name is
// what errors call it. It reads at most limit+1 bytes, so a source that
// never ends (/dev/zero, a pipe) costs limit bytes of memory, not all of it.
func ReadLimit(r io.Reader, name string, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, tooLarge(name, limit)
	}
	return data, nil
}

func tooLarge(name string, limit int64) error {
	return fmt.Errorf("read %s: %w: it holds more than %s, the most read for this kind of file", name, ErrTooLarge, FormatSize(limit))
}

// FormatSize writes a byte count the way errors show limits: "1 MiB",
// "64 KiB", "100 bytes".
func FormatSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// MaxNameLen returns the longest file name, in bytes, that the file system
// holding dir allows (statfs(2) f_namelen: 255 on ext4, xfs, btrfs and
// tmpfs, less on some network and stacked file systems). A dir that does
// not exist yet is answered for its nearest existing parent, whose file
// system it will be created on.
func MaxNameLen(dir string) (int, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return 0, fmt.Errorf("file name limit of %s: %w", dir, err)
	}
	for {
		var st unix.Statfs_t
		err := unix.Statfs(dir, &st)
		if err == nil {
			return int(st.Namelen), nil
		}
		parent := filepath.Dir(dir)
		if !errors.Is(err, unix.ENOENT) || parent == dir {
			return 0, fmt.Errorf("file name limit of %s: %w", dir, err)
		}
		dir = parent
	}
}

// MkdirAll is os.MkdirAll that also returns undo, which removes the
// directories this call created, deepest first, so that a step failing
// after it leaves no empty directory behind. undo removes a directory only
// while it is empty, so it never takes away what another writer put there.
func MkdirAll(path string, perm os.FileMode) (undo func(), err error) {
	var created []string
	for p := filepath.Clean(path); ; {
		if _, err := os.Lstat(p); err == nil {
			break
		}
		created = append(created, p)
		parent := filepath.Dir(p)
		if parent == p {
			break
		}
		p = parent
	}
	undo = func() {
		for _, d := range created {
			_ = os.Remove(d)
		}
	}
	if err := os.MkdirAll(path, perm); err != nil {
		undo()
		return nil, err
	}
	return undo, nil
}

// Identity tells the versions of a file apart: it changes when the file is
// replaced (another device or inode) or written, which changes at least
// its change time (and no one can set that back, as one can the
// modification time). A digest of a file's content may be kept for as
// long as its identity stays the same.
type Identity struct {
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime unix.Timespec
}

// IdentityOf returns the identity of the open file f.
func IdentityOf(f *os.File) (Identity, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return Identity{}, &os.PathError{Op: "fstat", Path: f.Name(), Err: err}
	}
	return Identity{Dev: uint64(st.Dev), Ino: st.Ino, Size: st.Size, Mtime: st.Mtim, Ctime: st.Ctim}, nil
}
