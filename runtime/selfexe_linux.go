package runtime

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/runtime/initbin"
)

// sealedSelf returns a file through which this binary can be executed while
// no process, inside a container or not, can write to it: the init stage
// runs inside the container's pid namespace, where a hostile process could
// open /proc/<pid>/exe and overwrite the runtime binary (CVE-2019-5736).
//
// The cheap way is a detached, read-only bind mount of the binary (open_tree
// + mount_setattr): it costs two syscalls, needs no copy and disappears with
// the last process using it. Where that is not allowed (no CAP_SYS_ADMIN,
// old kernel) the binary is copied into a sealed memfd instead.
func sealedSelf(stateRoot string) (*os.File, error) {
	path := "/proc/self/exe"
	if len(initbin.Init) > 0 {
		p, err := initProgram(stateRoot)
		if err != nil {
			return nil, err
		}
		path = p
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err == nil {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
		if err = unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err == nil {
			return os.NewFile(uintptr(fd), "nexus (read-only)"), nil
		}
		unix.Close(fd)
	}
	return sealedCopy()
}

func sealedCopy() (*os.File, error) {
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return nil, fmt.Errorf("open own binary: %w", err)
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("nexus", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("copy own binary to a sealed memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "nexus (sealed)")
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return nil, fmt.Errorf("copy own binary to a sealed memfd: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal own binary copy: %w", err)
	}
	return f, nil
}

// initProgramMode lets every user read and execute the init program: an
// init forked into a new user namespace runs as a mapped uid, to which the
// host's root owner is a stranger. Nobody can write it (it is executed
// through a read-only mount, see sealedSelf), and only root can reach it by
// path (its directory is 0700).
const initProgramMode = 0o555

// initProgram writes the embedded nexus-init program (once per build)
// into the state root, which only root can reach, and returns its path. It
// is executed like the binary itself, through a read-only detached mount.
func initProgram(stateRoot string) (string, error) {
	dir := filepath.Join(stateRoot, ".init")
	path := filepath.Join(dir, "nexus-init-"+initbin.InitHash[:min(16, len(initbin.InitHash))])
	if fi, err := os.Stat(path); err == nil && fi.Size() == int64(len(initbin.Init)) && fi.Mode().Perm() == initProgramMode {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("write the init program: %w", err)
	}
	if err := initbin.WriteFile(path, initbin.Init, initProgramMode); err != nil {
		return "", fmt.Errorf("write the init program: %w", err)
	}
	return path, nil
}

// execThrough returns files with f added last, as the child's last
// descriptor, and the path that executes f through the child's number
// for it: /proc/self/fd/<len(files)>. files itself is not changed.
//
// The parent's number for f (/proc/self/fd/<f.Fd()>) is not safe to name:
// Go keeps only the descriptors it passes on in place while it arranges
// them in the child. Before exec it moves its error pipe, if that has a
// lower number, to one past the highest descriptor it passes on
// (golang.org/issue/61751) — the number a descriptor opened just after
// the sync socket usually has. Whenever another goroutine had closed two
// descriptors in between, the pipe landed on f's number and execve
// failed with EACCES ("fork/exec /proc/self/fd/51: permission denied"):
// 14 % of the inits of four concurrent Creates, in one process, failed so.
//
// The init inherits f (not close-on-exec); it marks every descriptor
// above the preserved ones close-on-exec before it executes the
// container's process, so f never reaches the container. Until then,
// /proc/<init>/fd/<f> gives no more than /proc/<init>/exe: the read-only
// file.
func execThrough(files []uintptr, f *os.File) (path string, out []uintptr) {
	out = append(slices.Clip(files), f.Fd())
	return "/proc/self/fd/" + strconv.Itoa(len(out)-1), out
}
