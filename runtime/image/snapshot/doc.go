// Package snapshot gives a container its root filesystem from the unpacked
// layer directories of an image (runtime/image/layer, Overlay mode): each
// layer is a directory in which a deleted file is an overlayfs whiteout (a
// 0:0 character device) and a directory that hides what lower layers hold
// carries trusted.overlay.opaque="y".
//
// Mount stacks the layers with overlayfs under a writable upper directory of
// the container's own, so layers are shared read-only by every container of
// an image and a container's writes land in its upper directory. It prefers
// the new mount API (fsopen/fsconfig with one "lowerdir+" per layer, kernel
// 6.8+), which has no limit on the length of the layer list, and falls back
// to mount(2), whose options must fit in one page. When the layers exceed
// what one mount takes (500 lower layers in overlayfs, or a page of options
// with mount(2)), the bottom-most layers are merged once, with Copy, into a
// flattened directory that replaces them in the stack. That costs a copy of
// those layers' files (time and disk proportional to their size) the first
// time; later mounts of the same layers reuse the flattened directory when
// Mounter.CacheDir is set.
//
// Copy is the fallback where overlayfs cannot be mounted (OverlaySupported
// says why): it materialises the merged view as plain files, interpreting
// whiteouts and opaque directories as overlayfs would.
package snapshot
