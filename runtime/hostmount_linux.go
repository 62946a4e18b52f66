package runtime

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// A spec without a mount namespace shares the runtime's (the runtime spec:
// an unlisted namespace is inherited). The init then builds the container's
// file system in the host's mount namespace: it binds the rootfs onto itself,
// makes that mount a slave (the container's mounts do not propagate back to
// the host's peers), mounts everything below it and chroots into it; the
// host's / is never remounted, pivoted or moved. Every mount of the container
// sits on that one bind, so detaching it removes them all: Delete (and a
// failed Create) does that, where runc leaves them behind.

// mountIDOf is the id of the mount at the top of path.
func mountIDOf(path string) (uint64, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &st); err != nil {
		return 0, fmt.Errorf("statx %s: %w", path, err)
	}
	if st.Mask&unix.STATX_MNT_ID == 0 {
		return 0, fmt.Errorf("statx %s: this kernel does not report mount ids", path)
	}
	return st.Mnt_id, nil
}

// maxStackedMounts bounds unmountAbove: a container cannot make Delete loop
// by stacking mounts on its root.
const maxStackedMounts = 64

// unmountAbove detaches the mounts stacked on rootfs until the one with id
// below, which was there before the container, is on top again.
func unmountAbove(rootfs string, below uint64) error {
	for range maxStackedMounts {
		id, err := mountIDOf(rootfs)
		if err != nil {
			return err
		}
		if id == below {
			return nil
		}
		if err := unix.Unmount(rootfs, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount the container's mounts on %s: %w", rootfs, err)
		}
	}
	return fmt.Errorf("unmount the container's mounts on %s: more than %d mounts stacked on it", rootfs, maxStackedMounts)
}
