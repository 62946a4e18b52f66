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

// maxSymlinks is how many symbolic links one path may go through, the
// kernel's own limit (MAXSYMLINKS), so that a loop of links ends.
const maxSymlinks = 40

// parent returns an O_PATH fd of the directory that p, the parent path of
// the entry named entry, names inside the layer, and that directory's path
// with every symbolic link resolved. Missing directories are created as tar
// does (mode 0755, owned by the unpacking user). The fd is cached for the
// next entry; do not close it.
func (u *unpacker) parent(entry, p string) (fd int, resolved string, err error) {
	if p == u.parentPath && u.parentFD >= 0 {
		return u.parentFD, u.parentResolved, nil
	}
	u.dropParent()
	fd, err = u.openDir(p, unix.O_PATH)
	resolved = p
	if err != nil {
		fd, resolved, err = u.resolve(entry, p, true)
		if err != nil {
			return -1, "", err
		}
	}
	u.parentPath, u.parentResolved, u.parentFD = p, resolved, fd
	return fd, resolved, nil
}

func (u *unpacker) dropParent() {
	if u.parentFD >= 0 && u.parentFD != u.root {
		unix.Close(u.parentFD)
	}
	u.parentFD, u.parentPath, u.parentResolved = -1, "", ""
}

// resolve opens the directory p names inside the layer the way the
// container will see it: a symbolic link this layer wrote is followed with
// the layer root as "/" (an absolute target starts again at the root, ".."
// stops there), so merged-/usr trees (lib -> usr/lib, then lib/...) unpack
// as they run, and no link can lead out of the snapshot. Links are read and
// followed here, one component at a time, never by the kernel: every open is
// O_NOFOLLOW relative to a directory already reached, and ".." only goes
// back to one. With create, missing directories are made. In Flatten mode a
// link or file that a lower layer left in the way is replaced by a directory
// instead, which is what the overlay mount of the same layers shows (there
// the layer's directory hides the lower link). It returns an O_PATH fd (u.root
// for the root itself, which the caller must not close) and the resolved path.
// openat2(RESOLVE_IN_ROOT) resolves the same way, but it can neither create
// the directories missing on the way nor tell this layer's links from a
// lower layer's.
func (u *unpacker) resolve(entry, p string, create bool) (int, string, error) {
	var stack []string // the directories reached, component by component
	fds := []int{u.root}
	cleanup := func(keepTop bool) {
		last := len(fds) - 1
		for i, fd := range fds {
			if i > 0 && !(keepTop && i == last) {
				unix.Close(fd)
			}
		}
	}
	todo := strings.Split(p, "/")
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 0 {
				unix.Close(fds[len(fds)-1])
				fds, stack = fds[:len(fds)-1], stack[:len(stack)-1]
			}
			continue
		}
		cur := fds[len(fds)-1]
		sofar := joinName(strings.Join(stack, "/"), c)
		fd, err := unix.Openat(cur, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOTDIR || err == unix.ELOOP {
			var st unix.Stat_t
			if err := unix.Fstatat(cur, c, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				cleanup(false)
				return -1, "", fmt.Errorf("inspect parent %q: %w", sofar, err)
			}
			switch {
			case u.fromLowerLayer(sofar):
				if !create {
					cleanup(false)
					return -1, "", unix.ENOENT // this layer has no such directory
				}
				if err := u.remove(cur, sofar, c); err != nil {
					cleanup(false)
					return -1, "", err
				}
				err = unix.ENOENT
			case st.Mode&unix.S_IFMT == unix.S_IFLNK:
				links++
				if links > maxSymlinks {
					cleanup(false)
					return -1, "", hostile(entry, "more than %d symbolic links on the way to %q (a loop?)", maxSymlinks, p)
				}
				target, err := readlinkat(cur, c)
				if err != nil {
					cleanup(false)
					return -1, "", fmt.Errorf("read symbolic link %q: %w", sofar, err)
				}
				if strings.HasPrefix(target, "/") {
					cleanup(false)
					fds, stack = fds[:1], nil
				}
				todo = append(strings.Split(target, "/"), todo...)
				continue
			default:
				cleanup(false)
				return -1, "", fmt.Errorf("parent %q is not a directory", sofar)
			}
		}
		if err == unix.ENOENT && create {
			if err := unix.Mkdirat(cur, c, 0o755); err != nil && err != unix.EEXIST {
				cleanup(false)
				return -1, "", fmt.Errorf("create parent directory %q: %w", sofar, err)
			}
			u.markWritten(sofar)
			fd, err = unix.Openat(cur, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
		if err != nil {
			cleanup(false)
			if err == unix.ENOENT {
				return -1, "", err
			}
			return -1, "", fmt.Errorf("open parent directory %q: %w", sofar, err)
		}
		fds, stack = append(fds, fd), append(stack, c)
	}
	cleanup(true)
	return fds[len(fds)-1], strings.Join(stack, "/"), nil
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
