package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	opaqueXattr = "trusted.overlay.opaque"
	// overlayXattrPrefix marks overlayfs's private attributes; they describe
	// a layer to overlayfs and mean nothing in a plain copy.
	overlayXattrPrefix = "trusted.overlay."
)

// Copy materialises the merged view of layers (bottom-most first) into
// target, which must be empty or missing: it copies the layer directories
// in order, so a later layer's file replaces an earlier one; a whiteout
// (0:0 character device) removes what lower layers put at its path; a
// directory with trusted.overlay.opaque="y" first empties what lower layers
// put in it. Modes, owners, extended attributes (except trusted.overlay.*),
// symlinks, devices, FIFOs, modification times and hard links within a layer
// are preserved; as with overlayfs, a hard link across layers is not.
//
// It writes only beneath target and never follows a symlink there: every
// directory is made a real directory before anything is written into it,
// and the last component of each path is handled without following links.
func Copy(ctx context.Context, layers []string, target string) error {
	if len(layers) == 0 {
		return fmt.Errorf("copy layers into %s: no layers given", target)
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("copy layers into %s: %w", target, err)
	}
	entries, err := os.ReadDir(target)
	if err != nil {
		return fmt.Errorf("copy layers into %s: %w", target, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("copy layers into %s: the directory is not empty (holds %q): give a new directory", target, entries[0].Name())
	}
	c := &copier{ctx: ctx, target: target, dirTimes: map[string]unix.Timespec{}}
	for i, l := range layers {
		if err := c.layer(l); err != nil {
			return fmt.Errorf("copy layer %d (%s) into %s: %w", i, l, target, err)
		}
	}
	if err := c.applyDirTimes(); err != nil {
		return fmt.Errorf("copy layers into %s: %w", target, err)
	}
	return nil
}

type copier struct {
	ctx    context.Context
	target string
	// dirTimes is the mtime of each directory in the top-most layer that
	// has it; it is set last, once nothing more is written into them.
	dirTimes map[string]unix.Timespec
	// links maps an inode of the current layer to where it was copied.
	links map[uint64]string
}

func (c *copier) layer(root string) error {
	fi, err := os.Stat(root)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", root)
	}
	c.links = map[uint64]string{}
	return filepath.WalkDir(root, func(src string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := c.ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, src)
		if err != nil {
			return err
		}
		return c.entry(src, rel)
	})
}

func (c *copier) entry(src, rel string) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return err
	}
	dst := filepath.Join(c.target, rel)
	typ := st.Mode & unix.S_IFMT
	if typ == unix.S_IFCHR && st.Rdev == 0 {
		if err := os.RemoveAll(dst); err != nil {
			return fmt.Errorf("apply whiteout %s: %w", rel, err)
		}
		return nil
	}
	if typ == unix.S_IFDIR {
		return c.dir(src, rel, dst, &st)
	}
	if err := removeNonDir(dst); err != nil {
		return fmt.Errorf("replace %s: %w", rel, err)
	}
	if st.Nlink > 1 {
		if first, ok := c.links[st.Ino]; ok {
			if err := os.Link(first, dst); err != nil {
				return fmt.Errorf("hard link %s: %w", rel, err)
			}
			return nil
		}
		c.links[st.Ino] = dst
	}
	switch typ {
	case unix.S_IFREG:
		if err := copyFile(src, dst); err != nil {
			return fmt.Errorf("copy %s: %w", rel, err)
		}
	case unix.S_IFLNK:
		link, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(link, dst); err != nil {
			return fmt.Errorf("symlink %s: %w", rel, err)
		}
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
		if err := unix.Mknod(dst, typ|0o600, int(st.Rdev)); err != nil {
			return fmt.Errorf("mknod %s: %w", rel, err)
		}
	default:
		return fmt.Errorf("%s has unknown file type %#o", rel, typ)
	}
	if err := setMeta(src, dst, &st); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", rel, err)
	}
	return nil
}

// dir makes dst a directory like src. An opaque src hides what lower
// layers put in the directory, so it starts empty.
func (c *copier) dir(src, rel, dst string, st *unix.Stat_t) error {
	var cur unix.Stat_t
	err := unix.Lstat(dst, &cur)
	switch {
	case err == nil && cur.Mode&unix.S_IFMT == unix.S_IFDIR:
		if rel != "." && isOpaque(src) {
			if err := emptyDir(dst); err != nil {
				return fmt.Errorf("apply opaque directory %s: %w", rel, err)
			}
		}
	case err == nil:
		if err := os.Remove(dst); err != nil {
			return fmt.Errorf("replace %s with a directory: %w", rel, err)
		}
		fallthrough
	case errors.Is(err, unix.ENOENT):
		if err := unix.Mkdir(dst, 0o700); err != nil {
			return fmt.Errorf("mkdir %s: %w", rel, err)
		}
	default:
		return err
	}
	if err := setMeta(src, dst, st); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	c.dirTimes[rel] = st.Mtim
	return nil
}

// applyDirTimes sets directory times, deepest first, skipping directories a
// later layer removed or replaced.
func (c *copier) applyDirTimes() error {
	rels := make([]string, 0, len(c.dirTimes))
	for rel := range c.dirTimes {
		rels = append(rels, rel)
	}
	slices.SortFunc(rels, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, rel := range rels {
		dst := filepath.Join(c.target, rel)
		var st unix.Stat_t
		if unix.Lstat(dst, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		mt := c.dirTimes[rel]
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, []unix.Timespec{mt, mt}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set times of %s: %w", rel, err)
		}
	}
	return nil
}

// removeNonDir clears dst for a new non-directory: whatever is there,
// including a whole directory tree from a lower layer, goes.
func removeNonDir(dst string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dst, &st); errors.Is(err, unix.ENOENT) {
		return nil
	} else if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return os.RemoveAll(dst)
	}
	return os.Remove(dst)
}

func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func isOpaque(path string) bool {
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(path, opaqueXattr, buf)
	return err == nil && n == 1 && buf[0] == 'y'
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	// io.Copy between files uses copy_file_range, so a file system with
	// reflinks shares the data rather than duplicating it.
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// setMeta gives dst the owner, mode and extended attributes of src. The
// owner goes first because chown clears set-id bits and file capabilities.
func setMeta(src, dst string, st *unix.Stat_t) error {
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Fchmodat(unix.AT_FDCWD, dst, st.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	return copyXattrs(src, dst)
}

func copyXattrs(src, dst string) error {
	names, err := listXattrs(src)
	if err != nil {
		return err
	}
	for _, name := range names {
		if strings.HasPrefix(name, overlayXattrPrefix) {
			continue
		}
		val, err := getXattr(src, name)
		if err != nil {
			return err
		}
		if err := unix.Lsetxattr(dst, name, val, 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	return nil
}

func listXattrs(path string) ([]string, error) {
	for size := 1024; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<20 {
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		var names []string
		for _, name := range strings.Split(string(buf[:n]), "\x00") {
			if name != "" {
				names = append(names, name)
			}
		}
		return names, nil
	}
}

func getXattr(path, name string) ([]byte, error) {
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get xattr %s: %w", name, err)
		}
		return buf[:n], nil
	}
}
