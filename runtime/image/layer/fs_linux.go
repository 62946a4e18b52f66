package layer

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// beneath is how every path inside the snapshot is resolved: never above the
// root, never through a symbolic link (not even one that stays inside).
var beneath = unix.OpenHow{Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}

// openDir opens the existing directory p (relative, clean; "" is the root)
// beneath the root with flags (O_PATH or O_RDONLY). The root itself is
// returned as u.root, which the caller must not close. A symbolic link on
// the way fails with ELOOP.
func (u *unpacker) openDir(p string, flags int) (int, error) {
	if p == "" {
		return u.root, nil
	}
	how := beneath
	how.Flags = uint64(flags | unix.O_DIRECTORY | unix.O_CLOEXEC)
	for {
		fd, err := unix.Openat2(u.root, p, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue // EAGAIN: a rename raced the lookup; nothing renames here
		}
		if err == unix.ENOSYS || err == unix.EPERM && !openat2Works(u.root) {
			return u.walkExisting(p, flags)
		}
		return fd, err
	}
}

// openat2Works tells a seccomp filter's EPERM from a real one.
func openat2Works(root int) bool {
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC}
	fd, err := unix.Openat2(root, ".", &how)
	if err == nil {
		unix.Close(fd)
	}
	return err == nil
}

// walkExisting is openDir for kernels without openat2 (before 5.6): one
// component at a time, each opened with O_NOFOLLOW.
func (u *unpacker) walkExisting(p string, flags int) (int, error) {
	cur := u.root
	for i, c := range strings.Split(p, "/") {
		fl := unix.O_PATH
		if i == strings.Count(p, "/") {
			fl = flags
		}
		fd, err := unix.Openat(cur, c, fl|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOTDIR {
			var st unix.Stat_t
			if unix.Fstatat(cur, c, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				err = unix.ELOOP
			}
		}
		if cur != u.root {
			unix.Close(cur)
		}
		if err != nil {
			return -1, err
		}
		cur = fd
	}
	return cur, nil
}

// parent returns an O_PATH fd of the directory p for the entry named entry,
// creating missing directories as tar does (mode 0755, owned by the
// unpacking user). The fd is cached for the next entry; do not close it.
//
// A symbolic link on the way is refused if this layer wrote it: following it
// would let the layer write anywhere. In Flatten mode a link (or file) that a
// lower layer left there is replaced by a directory instead, which is what
// the overlay mount of the same layers would show.
func (u *unpacker) parent(entry, p string) (int, error) {
	if p == u.parentPath && u.parentFD >= 0 {
		return u.parentFD, nil
	}
	u.dropParent()
	fd, err := u.openDir(p, unix.O_PATH)
	if err != nil {
		fd, err = u.walkCreate(entry, p)
		if err != nil {
			return -1, err
		}
	}
	u.parentPath, u.parentFD = p, fd
	return fd, nil
}

func (u *unpacker) dropParent() {
	if u.parentFD >= 0 && u.parentFD != u.root {
		unix.Close(u.parentFD)
	}
	u.parentFD, u.parentPath = -1, ""
}

// walkCreate opens p one component at a time, creating what is missing and,
// in Flatten mode, replacing what a lower layer left that is not a directory.
func (u *unpacker) walkCreate(entry, p string) (int, error) {
	cur := u.root
	done := func(err error) (int, error) {
		if cur != u.root {
			unix.Close(cur)
		}
		return -1, err
	}
	for i := 0; i <= len(p); {
		j := strings.IndexByte(p[i:], '/')
		if j < 0 {
			j = len(p)
		} else {
			j += i
		}
		c, sofar := p[i:j], p[:j]
		i = j + 1
		fd, err := unix.Openat(cur, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOTDIR || err == unix.ELOOP {
			var st unix.Stat_t
			if err := unix.Fstatat(cur, c, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return done(fmt.Errorf("inspect parent %q: %w", sofar, err))
			}
			if !u.fromLowerLayer(sofar) {
				if st.Mode&unix.S_IFMT == unix.S_IFLNK {
					done(nil)
					return -1, hostile(entry, "writes through a symlink: parent %q is a symbolic link", sofar)
				}
				return done(fmt.Errorf("parent %q is not a directory", sofar))
			}
			if err := u.remove(cur, sofar, c); err != nil {
				return done(err)
			}
			err = unix.ENOENT
		}
		if err == unix.ENOENT {
			if err := unix.Mkdirat(cur, c, 0o755); err != nil && err != unix.EEXIST {
				return done(fmt.Errorf("create parent directory %q: %w", sofar, err))
			}
			u.markWritten(sofar)
			fd, err = unix.Openat(cur, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
		if err != nil {
			return done(fmt.Errorf("open parent directory %q: %w", sofar, err))
		}
		if cur != u.root {
			unix.Close(cur)
		}
		cur = fd
	}
	return cur, nil
}

// removeAt deletes name in dirfd and, if it is a directory, everything in it,
// never following a symbolic link. A missing name is not an error.
func removeAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	names, err := readDirNames(fd, ".")
	if err == nil {
		for _, n := range names {
			if err = removeAt(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return err
	}
	return nil
}

// readDirNames lists the directory name in dirfd (not following a symbolic
// link), without "." and "..".
func readDirNames(dirfd int, name string) ([]string, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return f.Readdirnames(-1)
}

// procPath names base inside the directory open as dirfd through /proc, for
// the calls that have no *at form (lsetxattr, llistxattr). The kernel
// resolves the fd's magic link to that very directory, so no path string is
// re-resolved.
func procPath(dirfd int, base string) string {
	p := "/proc/self/fd/" + strconv.Itoa(dirfd)
	if base != "" {
		p += "/" + base
	}
	return p
}

// futimens sets the times of an open file (utimensat with a NULL path).
func futimens(fd int, ts *[2]unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// chmodNoFollow sets the mode of base in dirfd, which is not a symbolic
// link: fchmodat2 where the kernel has it (6.6), else chmod through the
// /proc entry of an O_PATH fd of base itself.
func chmodNoFollow(dirfd int, base string, mode uint32) error {
	err := unix.Fchmodat(dirfd, base, mode, unix.AT_SYMLINK_NOFOLLOW)
	if err != unix.EOPNOTSUPP && err != unix.ENOSYS {
		return err
	}
	fd, err := unix.Openat(dirfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return unix.ELOOP
	}
	return unix.Chmod(procPath(fd, ""), mode)
}
