package initstage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// rootfsSetup builds the container's view of the file system inside its own
// mount namespace. It runs in the init stage, before pivot_root.
type rootfsSetup struct {
	cfg    *Config
	rootFd int // O_PATH handle on the rootfs; every lookup is relative to it
}

func (r *rootfsSetup) spec() *Spec { return r.cfg.Spec }

// afterPivot are the rootfsPropagation modes applied to the container's /
// only once it is the root: until then / stays a slave, since shared would
// propagate the container's mounts to the host and unbindable would refuse
// the bind of the rootfs onto itself.
const afterPivot = unix.MS_SHARED | unix.MS_UNBINDABLE

// prepare makes the host's mounts invisible to propagation and turns the
// rootfs into a mount point of its own, as pivot_root requires.
func (r *rootfsSetup) prepare() error {
	flags := uintptr(unix.MS_SLAVE | unix.MS_REC)
	if p, ok := propagationOptions[r.spec().Linux.RootfsPropagation]; ok && p&afterPivot == 0 {
		flags = p
	}
	if !r.cfg.HostMountNS {
		if err := unix.Mount("", "/", "", flags, ""); err != nil {
			return fmt.Errorf("make / %s in the container's mount namespace: %w", r.spec().Linux.RootfsPropagation, err)
		}
	}
	if err := unix.Mount(r.cfg.Rootfs, r.cfg.Rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind rootfs %s onto itself: %w", r.cfg.Rootfs, err)
	}
	if r.cfg.HostMountNS {
		// In the host's namespace only the container's own bind changes
		// propagation, so its mounts stay out of the host's peer groups.
		if err := unix.Mount("", r.cfg.Rootfs, "", flags, ""); err != nil {
			return fmt.Errorf("make rootfs %s %s: %w", r.cfg.Rootfs, r.spec().Linux.RootfsPropagation, err)
		}
	}
	fd, err := unix.Open(r.cfg.Rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open rootfs %s: %w", r.cfg.Rootfs, err)
	}
	r.rootFd = fd
	return nil
}

func (r *rootfsSetup) close() {
	if r.rootFd > 0 {
		unix.Close(r.rootFd)
		r.rootFd = 0
	}
}

// mountAll performs the spec's mounts in order.
func (r *rootfsSetup) mountAll() error {
	for i, m := range r.spec().Mounts {
		if err := r.mount(m); err != nil {
			return fmt.Errorf("mounts[%d] (%s on %s): %w", i, m.Type, m.Destination, err)
		}
	}
	return nil
}

func (r *rootfsSetup) mount(m specs.Mount) error {
	opts := parseMountOptions(m.Options)
	if m.Type == "bind" {
		opts.bind = true
	}
	rel, err := resolveInRoot(r.cfg.Rootfs, m.Destination)
	if err != nil {
		return err
	}
	if m.Type == "cgroup" || m.Type == "cgroup2" {
		return r.mountCgroup(m, rel, opts)
	}
	var target *os.File
	if opts.bind {
		source := m.Source
		if !filepath.IsAbs(source) {
			source = filepath.Join(r.cfg.Bundle, source)
		}
		fi, err := os.Stat(source)
		if err != nil {
			return fmt.Errorf("bind source: %w", err)
		}
		if fi.IsDir() {
			target, err = mkdirAllInRoot(r.rootFd, rel, 0o755)
		} else {
			target, err = createFileInRoot(r.rootFd, rel)
		}
		if err != nil {
			return fmt.Errorf("create mount point: %w", err)
		}
		defer target.Close()
		flags := uintptr(unix.MS_BIND)
		if opts.recursive {
			flags |= unix.MS_REC
		}
		if err := unix.Mount(source, procFdPath(target), "", flags, ""); err != nil {
			return fmt.Errorf("bind %s: %w", source, err)
		}
		// A bind mount takes its flags only on a remount.
		if opts.flags&^unix.MS_REMOUNT != 0 || opts.clear != 0 {
			mnt, err := r.reopen(rel)
			if err != nil {
				return err
			}
			defer mnt.Close()
			if err := remountBind(procFdPath(mnt), opts.flags, opts.clear); err != nil {
				return err
			}
		}
	} else {
		target, err = mkdirAllInRoot(r.rootFd, rel, 0o755)
		if err != nil {
			return fmt.Errorf("create mount point: %w", err)
		}
		defer target.Close()
		source := m.Source
		if source == "" {
			source = m.Type
		}
		data := opts.dataString()
		if m.Type == "tmpfs" && !strings.Contains(data, "mode=") && rel == "dev" {
			data = joinData(data, "mode=755")
		}
		err := unix.Mount(source, procFdPath(target), m.Type, opts.flags, data)
		if err != nil && m.Type == "sysfs" && errors.Is(err, unix.EPERM) {
			// sysfs cannot be mounted in a user namespace that does not own
			// the network namespace; fall back to the host's, read-only.
			err = unix.Mount("/sys", procFdPath(target), "", unix.MS_BIND|unix.MS_REC, "")
			if err == nil {
				var mnt *os.File
				if mnt, err = r.reopen(rel); err == nil {
					err = remountBind(procFdPath(mnt), unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, 0)
					mnt.Close()
				}
			}
		}
		if err != nil {
			return fmt.Errorf("mount %s: %w", m.Type, err)
		}
	}
	if len(opts.propagation) == 0 {
		return nil
	}
	mnt, err := r.reopen(rel)
	if err != nil {
		return err
	}
	defer mnt.Close()
	for _, p := range opts.propagation {
		if err := unix.Mount("", procFdPath(mnt), "", p, ""); err != nil {
			return fmt.Errorf("set propagation: %w", err)
		}
	}
	return nil
}

// reopen returns a handle on what is now mounted at rel: a handle taken
// before a mount still names the directory underneath it.
func (r *rootfsSetup) reopen(rel string) (*os.File, error) {
	f, err := openInRoot(r.rootFd, rel, unix.O_PATH)
	if err != nil {
		return nil, fmt.Errorf("reopen mount point: %w", err)
	}
	return f, nil
}

func joinData(a, b string) string {
	if a == "" {
		return b
	}
	return a + "," + b
}

// remountBind applies flags to an existing bind mount, keeping the flags the
// kernel locks in a user namespace.
func remountBind(target string, set, clear uintptr) error {
	flags := (lockedFlags(target) | set) &^ clear
	flags |= unix.MS_BIND | unix.MS_REMOUNT
	if err := unix.Mount("", target, "", flags&^unix.MS_REC, ""); err != nil {
		return fmt.Errorf("remount %#x: %w", flags, err)
	}
	return nil
}

// mountCgroup gives the container a cgroup file system at the destination:
// the unified hierarchy on a v2 host; on v1 and hybrid hosts a tmpfs with one
// directory per hierarchy (and "unified" for the v2 part). With a cgroup
// namespace the hierarchies are mounted fresh (the kernel roots them at the
// container's cgroup); without one the container's own cgroup directories
// are bind-mounted so it cannot see its neighbours.
func (r *rootfsSetup) mountCgroup(m specs.Mount, rel string, opts mountOptions) error {
	target, err := mkdirAllInRoot(r.rootFd, rel, 0o755)
	if err != nil {
		return fmt.Errorf("create mount point: %w", err)
	}
	defer target.Close()
	ro := opts.flags & unix.MS_RDONLY
	base := opts.flags &^ unix.MS_RDONLY
	hier := r.cfg.CgroupMounts
	if len(hier) == 1 && hier[0].Name == "" {
		// Pure v2 host: the destination is the hierarchy itself.
		return r.mountOneCgroup(hier[0], procFdPath(target), rel, base|ro)
	}
	if err := unix.Mount("tmpfs", procFdPath(target), "tmpfs", base|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755"); err != nil {
		return fmt.Errorf("mount tmpfs for cgroups: %w", err)
	}
	for _, h := range hier {
		dir, err := mkdirAllInRoot(r.rootFd, rel+"/"+h.Name, 0o755)
		if err != nil {
			return err
		}
		err = r.mountOneCgroup(h, procFdPath(dir), rel+"/"+h.Name, base|ro)
		dir.Close()
		if err != nil {
			return err
		}
	}
	if ro == 0 {
		return nil
	}
	mnt, err := r.reopen(rel)
	if err != nil {
		return err
	}
	defer mnt.Close()
	return remountBind(procFdPath(mnt), unix.MS_RDONLY, 0)
}

func (r *rootfsSetup) mountOneCgroup(h CgroupMount, target, rel string, flags uintptr) error {
	flags |= unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if r.cfg.NewCgroupNS && h.FSType == "cgroup2" {
		if err := unix.Mount("cgroup2", target, "cgroup2", flags, ""); err != nil {
			return fmt.Errorf("mount cgroup2: %w", err)
		}
		return nil
	}
	if r.cfg.NewCgroupNS && h.FSType == "cgroup" {
		if err := unix.Mount("cgroup", target, "cgroup", flags, h.Options); err != nil {
			return fmt.Errorf("mount cgroup %s: %w", h.Options, err)
		}
		return nil
	}
	if h.HostPath == "" {
		return nil
	}
	if err := unix.Mount(h.HostPath, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind cgroup %s: %w", h.HostPath, err)
	}
	mnt, err := r.reopen(rel)
	if err != nil {
		return err
	}
	defer mnt.Close()
	return remountBind(procFdPath(mnt), flags, 0)
}

// DefaultDevices are created in every container, as runc and Docker do.
var DefaultDevices = []specs.LinuxDevice{
	{Path: "/dev/null", Type: "c", Major: 1, Minor: 3},
	{Path: "/dev/zero", Type: "c", Major: 1, Minor: 5},
	{Path: "/dev/full", Type: "c", Major: 1, Minor: 7},
	{Path: "/dev/random", Type: "c", Major: 1, Minor: 8},
	{Path: "/dev/urandom", Type: "c", Major: 1, Minor: 9},
	{Path: "/dev/tty", Type: "c", Major: 5, Minor: 0},
}

// createDevices makes the default and the spec's device nodes. In a user
// namespace mknod is not allowed, so the host's node is bind-mounted instead.
func (r *rootfsSetup) createDevices() error {
	inUserNS := hasNamespace(r.spec().Linux.Namespaces, specs.UserNamespace)
	devs := append(append([]specs.LinuxDevice{}, DefaultDevices...), r.spec().Linux.Devices...)
	old := unix.Umask(0)
	defer unix.Umask(old)
	for _, d := range devs {
		rel := strings.TrimPrefix(filepath.Clean(d.Path), "/")
		dir, base := filepath.Split(rel)
		parent, err := mkdirAllInRoot(r.rootFd, dir, 0o755)
		if err != nil {
			return fmt.Errorf("device %s: %w", d.Path, err)
		}
		err = r.makeDevice(parent, base, d, inUserNS)
		parent.Close()
		if err != nil {
			return fmt.Errorf("device %s: %w", d.Path, err)
		}
	}
	return nil
}

func (r *rootfsSetup) makeDevice(parent *os.File, base string, d specs.LinuxDevice, bind bool) error {
	mode := uint32(0o666)
	if d.FileMode != nil {
		mode = uint32(*d.FileMode & 0o7777)
	}
	switch d.Type {
	case "c", "u":
		mode |= unix.S_IFCHR
	case "b":
		mode |= unix.S_IFBLK
	case "p":
		mode |= unix.S_IFIFO
	}
	// Replace whatever the image had at that path (an image cannot plant a
	// symlink here: unlinkat does not follow it).
	_ = unix.Unlinkat(int(parent.Fd()), base, 0)
	if bind {
		if err := checkHostDevice(d, mode&unix.S_IFMT); err != nil {
			return err
		}
		fd, err := unix.Openat(int(parent.Fd()), base, unix.O_CREAT|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return err
		}
		unix.Close(fd)
		t, err := openInRoot(int(parent.Fd()), base, unix.O_PATH)
		if err != nil {
			return err
		}
		defer t.Close()
		return unix.Mount(d.Path, procFdPath(t), "", unix.MS_BIND, "")
	}
	if err := unix.Mknodat(int(parent.Fd()), base, mode, int(unix.Mkdev(uint32(d.Major), uint32(d.Minor)))); err != nil {
		return err
	}
	uid, gid := 0, 0
	if d.UID != nil {
		uid = int(*d.UID)
	}
	if d.GID != nil {
		gid = int(*d.GID)
	}
	return unix.Fchownat(int(parent.Fd()), base, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
}

// checkHostDevice checks that the host's node at d.Path, which a user
// namespace bind-mounts in place of one it may not make, is the device the
// spec lists: without it the bind failed with a bare "no such file or
// directory", and a node of other numbers would give the container another
// device than it asked for.
func checkHostDevice(d specs.LinuxDevice, typ uint32) error {
	want := fmt.Sprintf("%s %d:%d", d.Type, d.Major, d.Minor)
	if typ == unix.S_IFIFO {
		want = "p"
	}
	var st unix.Stat_t
	if err := unix.Stat(d.Path, &st); err != nil {
		return fmt.Errorf("with a user namespace the device node cannot be made, so the host's %s is bind-mounted, and it cannot be used (%w): "+
			"make it on the host (mknod %s %s) or leave out the user namespace", d.Path, err, d.Path, strings.ReplaceAll(want, ":", " "))
	}
	sameNumbers := typ == unix.S_IFIFO ||
		int64(unix.Major(st.Rdev)) == d.Major && int64(unix.Minor(st.Rdev)) == d.Minor
	if st.Mode&unix.S_IFMT != typ || !sameNumbers {
		return fmt.Errorf("with a user namespace the host's %s is bind-mounted in place of the node, and it is %s, not the %s the spec lists: "+
			"correct linux.devices or the host's node", d.Path, describeNode(&st), want)
	}
	return nil
}

// describeNode names a file's type and device numbers as linux.devices does.
func describeNode(st *unix.Stat_t) string {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		return fmt.Sprintf("c %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	case unix.S_IFBLK:
		return fmt.Sprintf("b %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		return "p"
	case unix.S_IFDIR:
		return "a directory"
	default:
		return "not a device node"
	}
}

// devSymlinks are the links every Linux system has in /dev.
var devSymlinks = [][2]string{
	{"/proc/self/fd", "dev/fd"}, {"/proc/self/fd/0", "dev/stdin"},
	{"/proc/self/fd/1", "dev/stdout"}, {"/proc/self/fd/2", "dev/stderr"},
}

func (r *rootfsSetup) createDevSymlinks() error {
	links := devSymlinks
	if _, err := os.Stat("/proc/kcore"); err == nil {
		links = append(links, [2]string{"/proc/kcore", "dev/core"})
	}
	if f, err := openInRoot(r.rootFd, "dev/pts/ptmx", unix.O_PATH); err == nil {
		f.Close()
		links = append(links, [2]string{"pts/ptmx", "dev/ptmx"})
	}
	devDir, err := mkdirAllInRoot(r.rootFd, "dev", 0o755)
	if err != nil {
		return err
	}
	defer devDir.Close()
	for _, l := range links {
		name := strings.TrimPrefix(l[1], "dev/")
		if l[1] == "dev/ptmx" {
			_ = unix.Unlinkat(int(devDir.Fd()), name, 0)
		}
		if err := unix.Symlinkat(l[0], int(devDir.Fd()), name); err != nil && err != unix.EEXIST {
			return fmt.Errorf("symlink /%s: %w", l[1], err)
		}
	}
	return nil
}

// pivot makes the rootfs the container's / and detaches the host's tree.
// pivot_root cannot be used when the current root is the initial ramfs; then
// (or when asked) the rootfs is moved over / and chrooted into, which is
// weaker (a process with CAP_SYS_CHROOT could escape), hence not the default.
func (r *rootfsSetup) pivot() error {
	if r.cfg.HostMountNS {
		// pivot_root or a move over / would change the host's root.
		return chrootTo(r.cfg.Rootfs)
	}
	if r.cfg.NoPivot {
		return moveRoot(r.cfg.Rootfs)
	}
	oldRoot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open old root: %w", err)
	}
	defer unix.Close(oldRoot)
	if err := unix.Chdir(r.cfg.Rootfs); err != nil {
		return fmt.Errorf("chdir to rootfs: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return moveRoot(r.cfg.Rootfs)
		}
		return fmt.Errorf("pivot_root: %w", err)
	}
	// The old root is now mounted on top of the new one; detach it.
	if err := unix.Fchdir(oldRoot); err != nil {
		return fmt.Errorf("enter old root: %w", err)
	}
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make old root a slave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	return unix.Chdir("/")
}

func moveRoot(rootfs string) error {
	if err := unix.Chdir(rootfs); err != nil {
		return fmt.Errorf("chdir to rootfs: %w", err)
	}
	if err := unix.Mount(rootfs, "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move rootfs over /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}

// chrootTo makes dir the process's root and cwd.
func chrootTo(dir string) error {
	if err := unix.Chdir(dir); err != nil {
		return fmt.Errorf("chdir to the container's root %s: %w", dir, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot into the container's root: %w", err)
	}
	return unix.Chdir("/")
}

// finish runs after pivot: masks, read-only paths, read-only root and the
// final propagation of /.
func finishRootfs(s *Spec) error {
	for _, p := range s.Linux.MaskedPaths {
		if err := maskPath(p); err != nil {
			return fmt.Errorf("linux.maskedPaths %s: %w", p, err)
		}
	}
	for _, p := range s.Linux.ReadonlyPaths {
		if err := readonlyPath(p); err != nil {
			return fmt.Errorf("linux.readonlyPaths %s: %w", p, err)
		}
	}
	if s.Root.Readonly {
		if err := remountBind("/", unix.MS_RDONLY, 0); err != nil {
			return fmt.Errorf("root.readonly: %w", err)
		}
	}
	if p, ok := propagationOptions[s.Linux.RootfsPropagation]; ok && p&afterPivot != 0 {
		if err := unix.Mount("", "/", "", p, ""); err != nil {
			return fmt.Errorf("linux.rootfsPropagation: %w", err)
		}
	}
	return nil
}

// maskPath hides a path: directories get an empty read-only tmpfs, files
// get /dev/null bound over them. Missing paths need no mask.
func maskPath(p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	if fi.IsDir() {
		return unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0,mode=000")
	}
	if err := unix.Mount("/dev/null", p, "", unix.MS_BIND, ""); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return nil
}

func readonlyPath(p string) error {
	if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return remountBind(p, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, 0)
}
