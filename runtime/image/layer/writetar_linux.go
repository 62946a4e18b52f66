package layer

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// WriteTar writes a deterministic (sorted, mtimes kept, uid/gid kept, xattrs,
// hard links detected by inode, device nodes) uncompressed tar of the tree
// under dir to w. Used to import a plain root filesystem directory as an
// image layer.
//
// The same tree always gives the same bytes: entries are sorted by name
// within each directory, a directory comes before its contents, user and
// group names are left out (only ids), mtimes are rounded to the second and
// access/change times are left out, as in the layers Docker builds. The root
// directory itself is not an entry. Sockets are skipped (tar cannot hold
// them). Extended attributes are kept except overlayfs' own and
// security.selinux, which is a label of this host, not of the image. The walk
// never follows a symbolic link.
func WriteTar(ctx context.Context, w io.Writer, dir string) error {
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s to archive it: %w", dir, err)
	}
	defer unix.Close(root)
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	a := &archiver{ctx: ctx, tw: tar.NewWriter(w), buf: *bufp, links: map[inode]string{}}
	if err := a.dir(root, ""); err != nil {
		return fmt.Errorf("archive %s: %w", dir, err)
	}
	if err := a.tw.Close(); err != nil {
		return fmt.Errorf("archive %s: %w", dir, err)
	}
	return nil
}

type inode struct{ dev, ino uint64 }

type archiver struct {
	ctx   context.Context
	tw    *tar.Writer
	buf   []byte
	links map[inode]string // first name of each multiply-linked inode
}

// dir writes the entries of the directory open as fd, whose archive name
// is prefix ("" or ending in "/").
func (a *archiver) dir(fd int, prefix string) error {
	names, err := readDirNames(fd, ".")
	if err != nil {
		return fmt.Errorf("read directory %q: %w", prefix, err)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := a.ctx.Err(); err != nil {
			return err
		}
		if err := a.entry(fd, prefix, n); err != nil {
			return err
		}
	}
	return nil
}

func (a *archiver) entry(dirfd int, prefix, n string) error {
	name := prefix + n
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat %q: %w", name, err)
	}
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
	}
	kind := st.Mode & unix.S_IFMT
	if kind != unix.S_IFDIR && kind != unix.S_IFSOCK && st.Nlink > 1 {
		id := inode{uint64(st.Dev), st.Ino}
		if first, ok := a.links[id]; ok {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			return a.header(hdr)
		}
		a.links[id] = name
	}
	switch kind {
	case unix.S_IFDIR:
		hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		fd, err := unix.Openat(dirfd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open directory %q: %w", name, err)
		}
		defer unix.Close(fd)
		if err := a.xattrs(hdr, fdXattrs(fd)); err != nil {
			return err
		}
		if err := a.header(hdr); err != nil {
			return err
		}
		return a.dir(fd, hdr.Name)
	case unix.S_IFREG:
		fd, err := unix.Openat(dirfd, n, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %q: %w", name, err)
		}
		defer unix.Close(fd)
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
		if err := a.xattrs(hdr, fdXattrs(fd)); err != nil {
			return err
		}
		if err := a.header(hdr); err != nil {
			return err
		}
		return a.content(fd, name, st.Size)
	case unix.S_IFLNK:
		target, err := readlinkat(dirfd, n)
		if err != nil {
			return fmt.Errorf("read symbolic link %q: %w", name, err)
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if kind == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default: // a socket: tar has no type for it, and a socket file is useless without its server
		return nil
	}
	if err := a.xattrs(hdr, pathXattrs(procPath(dirfd, n))); err != nil {
		return err
	}
	return a.header(hdr)
}

func (a *archiver) header(hdr *tar.Header) error {
	if err := a.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write tar header for %q: %w", hdr.Name, err)
	}
	return nil
}

// content copies exactly size bytes of the file open as fd.
func (a *archiver) content(fd int, name string, size int64) error {
	for size > 0 {
		b := a.buf
		if int64(len(b)) > size {
			b = b[:size]
		}
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %q: %w", name, err)
		}
		if n == 0 {
			return fmt.Errorf("read %q: the file shrank while it was archived", name)
		}
		if _, err := a.tw.Write(b[:n]); err != nil {
			return fmt.Errorf("write %q to the archive: %w", name, err)
		}
		size -= int64(n)
	}
	return nil
}

// xattrSource lists and reads the extended attributes of one file.
type xattrSource struct {
	list func([]byte) (int, error)
	get  func(string, []byte) (int, error)
}

func fdXattrs(fd int) xattrSource {
	return xattrSource{
		list: func(b []byte) (int, error) { return unix.Flistxattr(fd, b) },
		get:  func(k string, b []byte) (int, error) { return unix.Fgetxattr(fd, k, b) },
	}
}

func pathXattrs(p string) xattrSource {
	return xattrSource{
		list: func(b []byte) (int, error) { return unix.Llistxattr(p, b) },
		get:  func(k string, b []byte) (int, error) { return unix.Lgetxattr(p, k, b) },
	}
}

// xattrs adds the file's extended attributes to hdr as SCHILY.xattr records.
func (a *archiver) xattrs(hdr *tar.Header, src xattrSource) error {
	names, err := readXattr(src.list)
	if err == unix.ENOTSUP {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list extended attributes of %q: %w", hdr.Name, err)
	}
	for _, k := range strings.Split(string(names), "\x00") {
		if k == "" || isOverlayXattr(k) || k == "security.selinux" {
			continue
		}
		v, err := readXattr(func(b []byte) (int, error) { return src.get(k, b) })
		if err == unix.ENODATA {
			continue // removed since it was listed
		}
		if err != nil {
			return fmt.Errorf("read extended attribute %q of %q: %w", k, hdr.Name, err)
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords[paxXattr+k] = string(v)
	}
	return nil
}

// readXattr calls read with a buffer large enough for the result, retrying
// if it grew between the size query and the read.
func readXattr(read func([]byte) (int, error)) ([]byte, error) {
	for {
		n, err := read(nil)
		if err != nil || n == 0 {
			return nil, err
		}
		b := make([]byte, n)
		n, err = read(b)
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return nil, err
		}
		return b[:n], nil
	}
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		b := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, b)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(b[:n]), nil
		}
	}
}
