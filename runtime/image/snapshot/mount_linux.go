package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// maxLowerLayers is overlayfs's limit on lower layers in one mount
// (OVL_MAX_STACK in fs/overlayfs).
const maxLowerLayers = 500

var (
	// probes caches OverlaySupportedIn's answer per directory.
	probes sync.Map // string -> *probe
)

// OverlaySupported reports whether overlayfs can be mounted here: nil if
// it can, else an error that says why. It probes once, by mounting a tiny
// overlay in a temporary directory, and caches the answer.
func OverlaySupported() error { return OverlaySupportedIn(os.TempDir()) }

// OverlaySupportedIn is OverlaySupported for upper directories on dir's
// file system, which is what matters for a store whose containers live
// there (a tmpfs /tmp says nothing about the data directory's disk).
func OverlaySupportedIn(dir string) error {
	v, _ := probes.LoadOrStore(dir, &probe{})
	p := v.(*probe)
	p.once.Do(func() { p.err = probeOverlay(dir) })
	return p.err
}

type probe struct {
	once sync.Once
	err  error
}

func probeOverlay(parent string) error {
	fs, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return fmt.Errorf("overlayfs: read /proc/filesystems: %w", err)
	}
	if !strings.Contains(string(fs), "\toverlay\n") {
		return errors.New("overlayfs is not available in this kernel: load it with `modprobe overlay`, or images are copied instead")
	}
	dir, err := os.MkdirTemp(parent, ".nexus-overlay-probe")
	if err != nil {
		return fmt.Errorf("overlayfs probe: %w", err)
	}
	defer os.RemoveAll(dir)
	sub := func(name string) string { return filepath.Join(dir, name) }
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.Mkdir(sub(d), 0o755); err != nil {
			return fmt.Errorf("overlayfs probe: %w", err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", sub("lower"), sub("upper"), sub("work"))
	if err := unix.Mount("overlay", sub("merged"), "overlay", 0, opts); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("mounting overlayfs is not permitted (%w): run as root with CAP_SYS_ADMIN", err)
		}
		return fmt.Errorf("overlayfs cannot be mounted in %s (%w): the file system there may not support it as an upper layer", dir, err)
	}
	if err := unix.Unmount(sub("merged"), unix.MNT_DETACH); err != nil {
		return fmt.Errorf("overlayfs probe: unmount %s: %w", sub("merged"), err)
	}
	return nil
}

// Mounter mounts container root filesystems. The zero value is ready to use.
type Mounter struct {
	// CacheDir holds flattened bottom layers for images with more layers
	// than one mount takes, named by the layers they merge, so every
	// container of such an image shares one copy. Nothing in it is removed
	// by the Mounter: it is a cache the image store may empty when no
	// container is mounted from it. Empty means a directory next to the
	// container's upper directory, used by that container alone and removed
	// with it.
	CacheDir string

	// classicOnly skips the new mount API, as on kernels before 6.8; tests
	// use it to exercise the fallback.
	classicOnly bool
}

// Mount makes target a merged view of layers (bottom-most first, the order
// of the image manifest) with upper and work dirs (created if missing, must
// be on the same fs). It uses a zero Mounter.
func Mount(ctx context.Context, layers []string, upper, work, target string) error {
	return (&Mounter{}).Mount(ctx, layers, upper, work, target)
}

// Mount makes target (created if missing) an overlayfs view of layers
// (bottom-most first) with the container's writable upper directory and
// overlayfs's work directory, both created if missing and on one file
// system. A new (empty) upper directory takes the owner and mode of the
// top-most layer's root, since the mount shows them as the container's "/".
// Unmount undoes it.
func (m *Mounter) Mount(ctx context.Context, layers []string, upper, work, target string) error {
	if err := checkMountArgs(layers, upper, work, target); err != nil {
		return err
	}
	for _, d := range []string{upper, work, target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("mount overlay on %s: %w", target, err)
		}
	}
	if err := sameFS(upper, work); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", target, err)
	}
	if err := adoptRootAttrs(upper, layers[len(layers)-1]); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", target, err)
	}
	newAPI := !m.classicOnly
	for {
		var fits func([]string) bool
		if newAPI {
			fits = func(lowers []string) bool { return len(lowers) <= maxLowerLayers }
		} else {
			fits = func(lowers []string) bool {
				return len(lowers) <= maxLowerLayers && len(classicOptions(lowers, upper, work, true)) < unix.Getpagesize()
			}
		}
		lowers, err := m.fitLayers(ctx, layers, upper, fits)
		if err != nil {
			return fmt.Errorf("mount overlay on %s: %w", target, err)
		}
		if newAPI {
			err = mountNewAPI(lowers, upper, work, target)
			if errors.Is(err, errNoLowerdirPlus) {
				newAPI = false
				continue
			}
		} else {
			err = mountClassic(lowers, upper, work, target)
		}
		if err != nil {
			return fmt.Errorf("mount overlay of %d layers on %s: %w", len(layers), target, err)
		}
		return nil
	}
}

func checkMountArgs(layers []string, upper, work, target string) error {
	if len(layers) == 0 {
		return fmt.Errorf("mount overlay on %s: no layers given: an image has at least one layer", target)
	}
	for name, p := range map[string]string{"upper": upper, "work": work, "target": target} {
		if p == "" {
			return fmt.Errorf("mount overlay on %q: no %s directory given", target, name)
		}
	}
	if filepath.Clean(upper) == filepath.Clean(work) {
		return fmt.Errorf("mount overlay on %s: upper and work are the same directory %s: give each its own", target, upper)
	}
	for i, l := range layers {
		fi, err := os.Stat(l)
		if err != nil {
			return fmt.Errorf("mount overlay on %s: layer %d: %w (unpack the image again)", target, i, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("mount overlay on %s: layer %d, %s, is not a directory", target, i, l)
		}
	}
	return nil
}

// adoptRootAttrs gives an empty (new) upper directory the owner and mode of
// the top-most layer's root. overlayfs shows the upper directory's
// attributes as the container's "/", so without this the root would have
// whatever mode the caller created the directory with (0700 from
// os.MkdirTemp, say) and a non-root process could not use it. An upper
// directory in use keeps what the container made of it.
func adoptRootAttrs(upper, top string) error {
	entries, err := os.ReadDir(upper)
	if err != nil {
		return fmt.Errorf("read upper dir: %w", err)
	}
	if len(entries) > 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(top, &st); err != nil {
		return fmt.Errorf("stat top layer: %w", err)
	}
	if err := unix.Chown(upper, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("give the upper dir the image root's owner: %w", err)
	}
	if err := unix.Chmod(upper, st.Mode&0o7777); err != nil {
		return fmt.Errorf("give the upper dir the image root's mode: %w", err)
	}
	return nil
}

func sameFS(upper, work string) error {
	var su, sw unix.Stat_t
	if err := unix.Stat(upper, &su); err != nil {
		return fmt.Errorf("stat upper dir: %w", err)
	}
	if err := unix.Stat(work, &sw); err != nil {
		return fmt.Errorf("stat work dir: %w", err)
	}
	if su.Dev != sw.Dev {
		return fmt.Errorf("upper dir %s and work dir %s are on different file systems: overlayfs needs them on one; put both in the container's directory", upper, work)
	}
	return nil
}

// fitLayers returns the lower layers to mount, bottom-most first: layers
// themselves when fits accepts them, else a flattened directory of the
// fewest bottom-most layers that makes them fit, followed by the rest.
func (m *Mounter) fitLayers(ctx context.Context, layers []string, upper string, fits func([]string) bool) ([]string, error) {
	if fits(layers) {
		return layers, nil
	}
	cacheDir := m.CacheDir
	if cacheDir == "" {
		cacheDir = filepath.Dir(filepath.Clean(upper))
	}
	// The flattened path's length does not depend on how many layers it
	// merges, so any placeholder of that length measures the fit.
	placeholder := flatPath(cacheDir, strings.Repeat("0", sha256.Size*2))
	for k := 2; k <= len(layers); k++ {
		lowers := append([]string{placeholder}, layers[k:]...)
		if !fits(lowers) {
			continue
		}
		flat, err := flatten(ctx, cacheDir, layers[:k])
		if err != nil {
			return nil, err
		}
		return append([]string{flat}, layers[k:]...), nil
	}
	return nil, fmt.Errorf("the layer paths are too long for a mount even with all %d layers flattened into %s: use a shorter data directory", len(layers), cacheDir)
}

func flatPath(cacheDir, key string) string { return filepath.Join(cacheDir, "flat-"+key) }

// flatten merges layers into a directory of cacheDir named by the layers
// (path, inode and change time of each, so a layer unpacked again gets a new
// one), building it under a temporary name and renaming it into place so a
// concurrent Mount never sees it half made.
func flatten(ctx context.Context, cacheDir string, layers []string) (string, error) {
	h := sha256.New()
	for _, l := range layers {
		var st unix.Stat_t
		if err := unix.Stat(l, &st); err != nil {
			return "", fmt.Errorf("flatten layers: %w", err)
		}
		abs, _ := filepath.Abs(l)
		fmt.Fprintf(h, "%s\x00%d:%d:%d.%d\n", abs, st.Dev, st.Ino, st.Ctim.Sec, st.Ctim.Nsec)
	}
	dst := flatPath(cacheDir, hex.EncodeToString(h.Sum(nil)))
	if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
		return dst, nil
	}
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return "", fmt.Errorf("flatten layers: %w", err)
	}
	tmp, err := os.MkdirTemp(cacheDir, ".flat-tmp-")
	if err != nil {
		return "", fmt.Errorf("flatten layers: %w", err)
	}
	if err := Copy(ctx, layers, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("flatten the %d bottom-most layers: %w", len(layers), err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.RemoveAll(tmp)
		// Another Mount made it first: use theirs.
		if fi, serr := os.Stat(dst); serr == nil && fi.IsDir() {
			return dst, nil
		}
		return "", fmt.Errorf("flatten layers: %w", err)
	}
	return dst, nil
}

// errNoLowerdirPlus means the kernel lacks fsconfig's "lowerdir+" (before
// 6.8) or the new mount API itself.
var errNoLowerdirPlus = errors.New("the kernel has no overlayfs lowerdir+ option")

// mountNewAPI mounts with fsopen/fsconfig/fsmount/move_mount, one
// "lowerdir+" per layer, top-most first as overlayfs stacks them.
func mountNewAPI(lowers []string, upper, work, target string) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if errors.Is(err, unix.ENOSYS) {
		return errNoLowerdirPlus
	}
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fd)
	for i := len(lowers) - 1; i >= 0; i-- {
		if err := unix.FsconfigSetString(fd, "lowerdir+", lowers[i]); err != nil {
			if i == len(lowers)-1 && errors.Is(err, unix.EINVAL) {
				return errNoLowerdirPlus
			}
			return fmt.Errorf("add layer %s: %w%s", lowers[i], err, fsLog(fd))
		}
	}
	if err := unix.FsconfigSetString(fd, "upperdir", upper); err != nil {
		return fmt.Errorf("set upper dir %s: %w%s", upper, err, fsLog(fd))
	}
	if err := unix.FsconfigSetString(fd, "workdir", work); err != nil {
		return fmt.Errorf("set work dir %s: %w%s", work, err, fsLog(fd))
	}
	// index=off lets layers be shared by many mounts whatever the kernel's
	// default; a kernel without the option has no index either.
	if unix.FsconfigSetString(fd, "index", "off") != nil {
		_ = fsLog(fd) // drain the refusal so a later error reports only its own
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("create overlay: %w%s", err, fsLog(fd))
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsmount overlay: %w%s", err, fsLog(fd))
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move overlay mount to %s: %w", target, err)
	}
	return nil
}

// fsLog drains the messages the kernel left on a file system context (why
// a parameter was refused) and returns them for an error message.
func fsLog(fd int) string {
	var msgs []string
	buf := make([]byte, 4096)
	for range 64 {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	if len(msgs) == 0 {
		return ""
	}
	return " (kernel: " + strings.Join(msgs, "; ") + ")"
}

// classicOptions is the mount(2) option string. Layers are listed top-most
// first, as overlayfs stacks them.
func classicOptions(lowers []string, upper, work string, indexOff bool) string {
	rev := slices.Clone(lowers)
	slices.Reverse(rev)
	opts := "lowerdir=" + strings.Join(rev, ":") + ",upperdir=" + upper + ",workdir=" + work
	if indexOff {
		opts += ",index=off"
	}
	return opts
}

func mountClassic(lowers []string, upper, work, target string) error {
	for _, p := range append(slices.Clone(lowers), upper, work) {
		if strings.ContainsAny(p, ":,\\") {
			return fmt.Errorf("path %s holds ':', ',' or '\\', which mount(2) options cannot carry: use a data directory without them", p)
		}
	}
	err := unix.Mount("overlay", target, "overlay", 0, classicOptions(lowers, upper, work, true))
	if errors.Is(err, unix.EINVAL) {
		// A kernel without the index option refuses it; it has no index either.
		err = unix.Mount("overlay", target, "overlay", 0, classicOptions(lowers, upper, work, false))
	}
	if err != nil {
		return fmt.Errorf("mount(2) overlay on %s: %w", target, err)
	}
	return nil
}

// Unmount unmounts every mount stacked on target. It is idempotent: a
// target that is not mounted (or does not exist) is not an error. A mount
// still busy is detached lazily (MNT_DETACH), so it disappears from the
// namespace at once and is freed when its last user goes.
func Unmount(target string) error {
	for range 16 {
		// UMOUNT_NOFOLLOW: a symlink put at target must not redirect the
		// unmount elsewhere; the kernel then answers EINVAL.
		err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		if errors.Is(err, unix.EBUSY) {
			err = unix.Unmount(target, unix.UMOUNT_NOFOLLOW|unix.MNT_DETACH)
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		default:
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 16 unmounts", target)
}
