package layer

import (
	"fmt"
	"path"
	"strings"
)

// Mode says how whiteouts are represented.
type Mode int

const (
	// Overlay: the directory is a fresh, empty per-layer snapshot used as an
	// overlayfs lowerdir. Whiteout entries (.wh.NAME) become overlay
	// whiteouts (char device 0:0 named NAME) and opaque markers
	// (.wh..wh..opq) become the xattr trusted.overlay.opaque="y" on the
	// directory.
	Overlay Mode = iota
	// Flatten: the layer is applied on top of a directory that already holds
	// the lower layers (copy fallback when overlayfs is unavailable):
	// whiteouts delete, opaque dirs are emptied first.
	Flatten
)

func (m Mode) String() string {
	switch m {
	case Overlay:
		return "overlay"
	case Flatten:
		return "flatten"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Limits caps what one layer may write, so that a small compressed layer
// cannot fill the disk or the inode table (a tar bomb).
type Limits struct {
	MaxBytes   int64 // total uncompressed file content bytes; 0 = DefaultLimits
	MaxEntries int64 // tar entries (inodes); 0 = DefaultLimits
}

// DefaultLimits returns 64 GiB of file content and 5,000,000 entries.
//
// The largest layers seen in practice (CUDA and ML framework images) hold
// about 20 GiB and a few hundred thousand files; a node_modules-heavy layer
// about a million. The defaults leave room above those while stopping an
// endless stream long before it exhausts a node's disk or, on a typical
// 100 GiB ext4 volume (about 6.5 million inodes), its inode table.
func DefaultLimits() Limits {
	return Limits{MaxBytes: 64 << 30, MaxEntries: 5_000_000}
}

// withDefaults fills zero fields from DefaultLimits and rejects negative ones.
func (l Limits) withDefaults() (Limits, error) {
	if l.MaxBytes < 0 || l.MaxEntries < 0 {
		return l, fmt.Errorf("layer limits must not be negative (MaxBytes %d, MaxEntries %d); use 0 for the defaults", l.MaxBytes, l.MaxEntries)
	}
	d := DefaultLimits()
	if l.MaxBytes == 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxEntries == 0 {
		l.MaxEntries = d.MaxEntries
	}
	return l, nil
}

// Options control Apply.
type Options struct {
	Mode   Mode
	Limits Limits
	// Progress, if set, is called with the cumulative number of compressed
	// bytes read from the layer, at most about ten times a second and once
	// at the end.
	Progress func(bytesRead int64)
	// NoOwnership skips lchown (for unprivileged use), and with it the
	// extended attributes outside the user.* namespace, which need
	// privileges too. By default uid/gid and all xattrs are preserved.
	NoOwnership bool
}

// Stats says what Apply wrote.
type Stats struct {
	Entries int64 // tar entries processed, whiteouts included
	Bytes   int64 // file content bytes written
}

// HostileError names the tar entry and why it was refused.
type HostileError struct{ Entry, Reason string }

func (e *HostileError) Error() string {
	return fmt.Sprintf("layer entry %q: %s; the image is unsafe, refusing to unpack it", e.Entry, e.Reason)
}

func hostile(entry, format string, args ...any) *HostileError {
	return &HostileError{Entry: entry, Reason: fmt.Sprintf(format, args...)}
}

// Reserved names from the OCI image-spec (layer.md, "Whiteouts").
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
)

// Extended attributes that belong to overlayfs. A layer that carried them
// could hide lower files without a whiteout entry, so they are refused.
var overlayXattrPrefixes = []string{"trusted.overlay.", "user.overlay."}

// cleanName turns a tar entry name into a clean path relative to the layer
// root ("" for the root itself), or says why it is refused.
func cleanName(name string) (string, string) {
	if name == "" {
		return "", "empty name"
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", "name contains a NUL byte"
	}
	if name[0] == '/' {
		return "", "absolute path; layer entries must be relative to the layer root"
	}
	p := path.Clean(name)
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", "path climbs out of the layer root"
	}
	if p == "." {
		return "", ""
	}
	return p, ""
}

// splitName splits a clean relative path into its parent ("" for the root)
// and its last element.
func splitName(p string) (parent, base string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

func joinName(parent, base string) string {
	if parent == "" {
		return base
	}
	return parent + "/" + base
}

// isOverlayXattr reports whether key is in a namespace overlayfs reserves.
func isOverlayXattr(key string) bool {
	for _, p := range overlayXattrPrefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}
