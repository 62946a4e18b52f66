// Package layer applies image layers (tar streams, optionally gzip- or
// zstd-compressed) to a snapshot directory, and writes a directory tree back
// out as a layer tar.
//
// A layer comes from a registry or an archive the node does not control, so
// every entry is treated as hostile until proven otherwise. The safety model:
//
//   - Names are cleaned lexically. A name that is absolute, climbs above the
//     layer root with "..", or holds a NUL byte is refused. Absolute names
//     are refused rather than made relative (as Docker does) because no tool
//     that builds image layers writes them: one in a layer is a sign the
//     archive was made to attack an unpacker that trusts it.
//   - Nothing is ever resolved through a path string the kernel could follow
//     out of the snapshot. The snapshot directory is opened once; every parent
//     directory is opened beneath it with openat2(RESOLVE_BENEATH|
//     RESOLVE_NO_SYMLINKS), and every change is an *at system call relative
//     to that directory fd with symlinks not followed (O_NOFOLLOW,
//     AT_SYMLINK_NOFOLLOW, linkat without AT_SYMLINK_FOLLOW).
//   - An entry whose parent path goes through a symbolic link the same layer
//     wrote (merged /usr: lib -> usr/lib, then lib/libc.so.6), and a hard
//     link whose target does, is resolved the way the container will see
//     it: with the layer root as "/". This package reads and follows each
//     link itself, one component at a time, each open O_NOFOLLOW relative to
//     a directory already reached; an absolute target starts again at the
//     layer root and ".." stops there, so a link to "/" or to "../../etc"
//     leads into the snapshot, never out of it. More than 40 links on one
//     path (a loop) are refused.
//   - Symbolic links themselves are created exactly as written, whatever
//     they point to: their targets are resolved inside the container's root
//     at run time, never by this package.
//   - A layer may not set overlayfs' own extended attributes
//     (trusted.overlay.*, user.overlay.*): they would forge whiteouts and
//     opaque directories that the layer did not declare the OCI way.
//   - Total file bytes and entry counts are capped (Limits), so a small
//     compressed layer cannot fill the disk or the inode table (a tar bomb).
//
// Refusals are *HostileError values naming the entry and the reason. Apply
// stops at the first one; whatever it wrote stays inside the snapshot
// directory, which the caller throws away.
//
// Whiteouts (".wh.NAME") and opaque-directory markers (".wh..wh..opq") follow
// the OCI image-spec. In Overlay mode each layer gets its own fresh directory
// (an overlayfs lowerdir, shared by every image that uses the layer) and the
// markers become overlayfs whiteouts (0:0 character devices) and the
// trusted.overlay.opaque xattr. In Flatten mode, the copy fallback for hosts
// without overlayfs, the layer is applied on top of the lower layers' files
// and the markers delete what they hide; the result is the tree the overlay
// mount would show.
package layer
