package initstage

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// maxSymlinks is the kernel's limit on symlinks followed in one lookup.
const maxSymlinks = 40

// EscapeError reports a path inside a container that reaches outside the
// root filesystem through a symlink.
type EscapeError struct {
	Path, Link, Target string
}

func (e *EscapeError) Error() string {
	return fmt.Sprintf("path %s escapes the root filesystem: symlink %s points to %s", e.Path, e.Link, e.Target)
}

// resolveInRoot resolves path (as the container sees it) inside rootfs and
// returns it relative to rootfs. Symlinks are followed as they would be in
// the container (absolute targets start at rootfs); one whose target climbs
// above the root is rejected with *EscapeError rather than clamped, because
// such a link in an image is an attack, not an accident. Missing trailing
// components are returned as they are.
//
// This check is advisory on its own (a file can change after it); every
// later open goes through openat2 with RESOLVE_IN_ROOT, so even a raced
// symlink cannot leave the root.
func resolveInRoot(rootfs, path string) (string, error) {
	var resolved []string
	pending := strings.Split(path, "/")
	links := 0
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(resolved) == 0 {
				return "", &EscapeError{Path: path, Link: "(lexical)", Target: ".."}
			}
			resolved = resolved[:len(resolved)-1]
			continue
		}
		cur := "/" + strings.Join(append(resolved, c), "/")
		fi, err := os.Lstat(filepath.Join(rootfs, cur))
		if err != nil {
			// Missing: the rest can contain no symlink yet, but may still
			// contain "..", which is resolved lexically.
			resolved = append(resolved, c)
			continue
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			resolved = append(resolved, c)
			continue
		}
		links++
		if links > maxSymlinks {
			return "", fmt.Errorf("path %s: too many levels of symbolic links", path)
		}
		target, err := os.Readlink(filepath.Join(rootfs, cur))
		if err != nil {
			return "", fmt.Errorf("path %s: %w", path, err)
		}
		if filepath.IsAbs(target) {
			resolved = nil
		}
		// Check the link on its own: does it climb above the root?
		if ClimbsAbove(len(resolved), target) {
			return "", &EscapeError{Path: path, Link: cur, Target: target}
		}
		pending = append(strings.Split(target, "/"), pending...)
	}
	return strings.Join(resolved, "/"), nil
}

// openInRoot opens rel (relative to the root directory fd) without letting
// any symlink or ".." leave the root.
func openInRoot(rootFd int, rel string, flags int) (*os.File, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(rootFd, rel, &how)
	if err != nil {
		return nil, &os.PathError{Op: "openat2", Path: rel, Err: err}
	}
	return os.NewFile(uintptr(fd), rel), nil
}

// mkdirAllInRoot creates rel and its parents inside the root, each step
// resolved within the root, and returns an O_PATH handle to it.
func mkdirAllInRoot(rootFd int, rel string, mode uint32) (*os.File, error) {
	cur := ""
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." {
			continue
		}
		next := c
		if cur != "" {
			next = cur + "/" + c
		}
		if f, err := openInRoot(rootFd, next, unix.O_PATH|unix.O_DIRECTORY); err == nil {
			f.Close()
			cur = next
			continue
		}
		parent, err := openInRoot(rootFd, cur, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return nil, err
		}
		err = unix.Mkdirat(int(parent.Fd()), c, mode)
		parent.Close()
		if err != nil && err != unix.EEXIST {
			return nil, &os.PathError{Op: "mkdir", Path: next, Err: err}
		}
		cur = next
	}
	return openInRoot(rootFd, cur, unix.O_PATH|unix.O_DIRECTORY)
}

// createFileInRoot makes sure rel exists as a regular (empty) file, e.g. as
// the mount point for a file bind mount, and returns an O_PATH handle.
func createFileInRoot(rootFd int, rel string) (*os.File, error) {
	if f, err := openInRoot(rootFd, rel, unix.O_PATH); err == nil {
		return f, nil
	}
	dir, base := filepath.Split(rel)
	parent, err := mkdirAllInRoot(rootFd, dir, 0o755)
	if err != nil {
		return nil, err
	}
	defer parent.Close()
	fd, err := unix.Openat(int(parent.Fd()), base, unix.O_CREAT|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil && err != unix.EEXIST {
		return nil, &os.PathError{Op: "create", Path: rel, Err: err}
	}
	if err == nil {
		unix.Close(fd)
	}
	return openInRoot(rootFd, rel, unix.O_PATH)
}

// procFdPath is how mount(2) is pointed at an already resolved handle.
func procFdPath(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }

// ClimbsAbove reports whether walking p lexically from depth levels below
// the root goes above the root at any point.
func ClimbsAbove(depth int, p string) bool {
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}
