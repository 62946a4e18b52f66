package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Apply reads a layer (gzip, zstd or plain tar, detected from the magic
// bytes) from r and writes it under dir. dir must exist; in Overlay mode it
// must also be empty. A hostile entry stops Apply with *HostileError. On any
// error dir holds a partial layer and should be removed.
//
// Apply reads r to its end (past the tar end-of-archive marker), so a caller
// that hashes r sees every byte and the gzip checksum is verified.
func Apply(ctx context.Context, dir string, r io.Reader, opts Options) (Stats, error) {
	if opts.Mode != Overlay && opts.Mode != Flatten {
		return Stats{}, fmt.Errorf("unpack layer into %s: unknown mode %d (want layer.Overlay or layer.Flatten)", dir, int(opts.Mode))
	}
	limits, err := opts.Limits.withDefaults()
	if err != nil {
		return Stats{}, err
	}
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Stats{}, fmt.Errorf("open layer snapshot directory %s: %w", dir, err)
	}
	defer unix.Close(root)
	if opts.Mode == Overlay {
		names, err := readDirNames(root, ".")
		if err != nil {
			return Stats{}, fmt.Errorf("read layer snapshot directory %s: %w", dir, err)
		}
		if len(names) > 0 {
			return Stats{}, fmt.Errorf("layer snapshot directory %s is not empty (holds %q): Overlay mode needs a fresh directory per layer; remove it and unpack again", dir, names[0])
		}
	}

	pr := &progressReader{r: r, fn: opts.Progress}
	s, err := openStream(pr)
	if err != nil {
		return Stats{}, err
	}
	bufp := copyBuffers.Get().(*[]byte)
	u := &unpacker{
		ctx:      ctx,
		root:     root,
		dir:      dir,
		mode:     opts.Mode,
		limits:   limits,
		noOwners: opts.NoOwnership,
		euid:     os.Geteuid(),
		buf:      *bufp,
		parentFD: -1,
		dirIdx:   map[string]int{},
	}
	if opts.Mode == Flatten {
		u.written = map[string]struct{}{}
	}
	err = u.run(s)
	u.dropParent()
	s.close()
	copyBuffers.Put(bufp)
	if opts.Progress != nil {
		opts.Progress(pr.n)
	}
	if err != nil {
		var h *HostileError
		if errors.As(err, &h) {
			return u.stats, h
		}
		return u.stats, fmt.Errorf("unpack layer into %s: %w", dir, err)
	}
	return u.stats, nil
}

// unpacker holds the state of one Apply.
type unpacker struct {
	ctx      context.Context
	root     int    // fd of the snapshot directory
	dir      string // its path, for messages only
	mode     Mode
	limits   Limits
	noOwners bool
	euid     int
	buf      []byte
	stats    Stats
	read     int64 // content bytes counted against limits.MaxBytes

	// The parent directory of the last entry, kept open because tar
	// streams list a directory's files one after another: its path as the
	// entry named it, the same with symbolic links resolved, and its fd.
	parentPath, parentResolved string
	parentFD                   int

	// written holds every path this layer created (Flatten mode only):
	// what whiteouts and opaque markers must not remove.
	written map[string]struct{}
	// dirs get their mode and times once all their children are written.
	dirs   []dirMeta
	dirIdx map[string]int
}

type dirMeta struct {
	path         string
	mode         uint32
	atime, mtime unix.Timespec
	dead         bool // removed or replaced later in the layer
}

func (u *unpacker) run(s *stream) error {
	tr := tar.NewReader(s)
	for {
		if err := u.ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return readError(s, err)
		}
		if err := u.entry(hdr, tr); err != nil {
			var h *HostileError
			if errors.As(err, &h) {
				return h
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = readError(s, err)
			}
			return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
	}
	// Read to the end: the tar end-of-archive blocks, padding, and the
	// compressed stream's trailer (whose checksum is verified on the way).
	// What is left counts against MaxBytes like file content.
	left := u.limits.MaxBytes - u.read
	n, err := io.CopyBuffer(io.Discard, io.LimitReader(s, left+1), u.buf)
	if err != nil {
		return readError(s, err)
	}
	if n > left {
		return hostile("(after the end of the archive)", "more than %d bytes of content and trailing data (limit Limits.MaxBytes); treated as a tar bomb", u.limits.MaxBytes)
	}
	return u.finishDirs()
}

func readError(s *stream, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("the layer is truncated (%s): %w; download it again", s.format, err)
	}
	return fmt.Errorf("read layer (%s): %w", s.format, err)
}

// entry applies one tar entry.
func (u *unpacker) entry(hdr *tar.Header, content io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // global PAX defaults; archive/tar applies none, neither do we
	}
	u.stats.Entries++
	if u.stats.Entries > u.limits.MaxEntries {
		return hostile(hdr.Name, "more than %d entries (limit Limits.MaxEntries); treated as a tar bomb", u.limits.MaxEntries)
	}
	if isRegular(hdr.Typeflag) {
		if hdr.Size < 0 || hdr.Size > u.limits.MaxBytes-u.read {
			return hostile(hdr.Name, "file content would take the layer past %d bytes (limit Limits.MaxBytes); treated as a tar bomb", u.limits.MaxBytes)
		}
		u.read += hdr.Size
	}
	name, why := cleanName(hdr.Name)
	if why != "" {
		return hostile(hdr.Name, "%s", why)
	}
	parent, base := splitName(name)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(hdr, parent, base)
	}
	if err := u.checkHeader(hdr); err != nil {
		return err
	}
	if name == "" {
		if hdr.Typeflag != tar.TypeDir {
			return hostile(hdr.Name, "the layer root can only be a directory")
		}
		return u.dirEntry(hdr, u.root, "", ".")
	}
	pfd, parent, err := u.parent(hdr.Name, parent)
	if err != nil {
		return err
	}
	name = joinName(parent, base)
	u.markWritten(name)
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		return u.regular(hdr, content, pfd, parent, base)
	case tar.TypeDir:
		return u.dirEntry(hdr, pfd, name, base)
	case tar.TypeSymlink:
		return u.symlink(hdr, pfd, parent, base)
	case tar.TypeLink:
		return u.hardlink(hdr, pfd, parent, base)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return u.node(hdr, pfd, parent, base)
	}
	return fmt.Errorf("unsupported tar entry type %q; layers hold files, directories, links, device nodes and fifos", hdr.Typeflag)
}

// isRegular reports whether entries of type t are regular files. archive/tar
// turns the old TypeRegA into TypeReg, and reads an old GNU sparse file
// (TypeGNUSparse) as its full content, holes as zeros.
func isRegular(t byte) bool {
	return t == tar.TypeReg || t == tar.TypeCont || t == tar.TypeGNUSparse
}

// checkHeader validates the fields of a non-whiteout entry before anything is
// created for it.
func (u *unpacker) checkHeader(hdr *tar.Header) error {
	if !u.noOwners && (hdr.Uid < 0 || hdr.Uid > math.MaxUint32-1 || hdr.Gid < 0 || hdr.Gid > math.MaxUint32-1) {
		return fmt.Errorf("owner %d:%d is out of range", hdr.Uid, hdr.Gid)
	}
	for k, v := range hdr.PAXRecords {
		key, ok := strings.CutPrefix(k, paxXattr)
		if !ok {
			continue
		}
		if isOverlayXattr(key) {
			return hostile(hdr.Name, "sets the overlayfs attribute %q, which would forge a whiteout or opaque directory", key)
		}
		if key == "" || len(key) > xattrNameMax || strings.IndexByte(key, 0) >= 0 {
			return fmt.Errorf("invalid extended attribute name %q", key)
		}
		if len(v) > xattrSizeMax {
			return fmt.Errorf("extended attribute %q is %d bytes, more than the kernel's %d", key, len(v), xattrSizeMax)
		}
	}
	switch hdr.Typeflag {
	case tar.TypeSymlink:
		if hdr.Linkname == "" || strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return fmt.Errorf("symbolic link target %q is empty or holds a NUL byte", hdr.Linkname)
		}
	case tar.TypeChar, tar.TypeBlock:
		if u.euid != 0 {
			return fmt.Errorf("device nodes can only be created by root (running as uid %d); unpack this layer as root", u.euid)
		}
		if hdr.Devmajor < 0 || hdr.Devminor < 0 || hdr.Devmajor > math.MaxUint32 || hdr.Devminor > math.MaxUint32 {
			return fmt.Errorf("device number %d:%d is out of range", hdr.Devmajor, hdr.Devminor)
		}
	}
	return nil
}

const paxXattr = "SCHILY.xattr."

// The kernel's limits on extended attributes (linux/limits.h).
const (
	xattrNameMax = 255
	xattrSizeMax = 65536
)

func (u *unpacker) markWritten(name string) {
	if u.written != nil {
		u.written[name] = struct{}{}
	}
}

// fromLowerLayer reports whether the existing file at name came from a lower
// layer rather than from this one. Only Flatten mode has lower layers in the
// directory.
func (u *unpacker) fromLowerLayer(name string) bool {
	if u.written == nil {
		return false
	}
	_, ok := u.written[name]
	return !ok
}

// regular writes a regular file.
func (u *unpacker) regular(hdr *tar.Header, content io.Reader, pfd int, parent, base string) error {
	fd, err := u.create(pfd, parent, base, func() (int, error) {
		return unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	})
	if err != nil {
		return fmt.Errorf("create file: %w", err)
	}
	err = u.fill(fd, content, hdr.Size)
	if err == nil {
		err = u.setAttrsFD(fd, hdr)
	}
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	return err
}

// fill copies size bytes of content into fd. Blocks of zeros are not
// written but left as holes, and the file gets its full size at the end:
// archive/tar hands a sparse entry's holes over as zeros, and writing them
// made a 10 GiB sparse entry in a 10 KiB layer take 10 GiB of disk (40 s);
// now it takes what its data takes, and the holes cost only the reading.
func (u *unpacker) fill(fd int, content io.Reader, size int64) error {
	var off, written int64 // written: the end of the last data written
	for off < size {
		if err := u.ctx.Err(); err != nil {
			return err
		}
		b := u.buf
		if int64(len(b)) > size-off {
			b = b[:size-off]
		}
		n, err := io.ReadFull(content, b)
		if err != nil {
			return fmt.Errorf("read file content: %w", err)
		}
		end, err := writeSparse(fd, b[:n], off)
		if err != nil {
			return fmt.Errorf("write file: %w", err)
		}
		if end > 0 {
			written = end
		}
		off += int64(n)
		u.stats.Bytes += int64(n)
	}
	if written < size {
		if err := unix.Ftruncate(fd, size); err != nil {
			return fmt.Errorf("set file size: %w", err)
		}
	}
	return nil
}

// holeBlock is the unit fill leaves as a hole when it is all zeros: the
// file system block of the usual file systems (ext4, xfs, btrfs).
const holeBlock = 4096

var zeroBlock [holeBlock]byte

// writeSparse writes b at off, skipping every block of holeBlock bytes
// (aligned to off, which fill keeps a multiple of holeBlock) that is all
// zeros. Runs of data blocks are written with one call each. It returns the
// file offset after the last byte it wrote, 0 if it wrote none.
func writeSparse(fd int, b []byte, off int64) (end int64, err error) {
	start := -1 // start of the pending run of data blocks
	flush := func(stop int) error {
		if start < 0 {
			return nil
		}
		err := pwriteAll(fd, b[start:stop], off+int64(start))
		start, end = -1, off+int64(stop)
		return err
	}
	for i := 0; i < len(b); i += holeBlock {
		blk := b[i:min(i+holeBlock, len(b))]
		if !bytes.Equal(blk, zeroBlock[:len(blk)]) {
			if start < 0 {
				start = i
			}
			continue
		}
		if err := flush(i); err != nil {
			return 0, err
		}
	}
	err = flush(len(b))
	return end, err
}

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// dirEntry creates (or keeps) a directory; its mode and times are set at the
// end, after its children.
func (u *unpacker) dirEntry(hdr *tar.Header, pfd int, name, base string) error {
	if name != "" {
		err := unix.Mkdirat(pfd, base, 0o700)
		if err == unix.EEXIST {
			var st unix.Stat_t
			if err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
				// A later entry wins; a directory merges with a directory.
				if err = u.remove(pfd, name, base); err == nil {
					err = unix.Mkdirat(pfd, base, 0o700)
				}
			}
		}
		if err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
	}
	if err := u.chown(pfd, base, hdr); err != nil {
		return err
	}
	if xattrs(hdr) {
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open directory: %w", err)
		}
		err = u.setXattrs(hdr, func(k string, v []byte) error { return unix.Fsetxattr(fd, k, v, 0) })
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	m := dirMeta{path: name, mode: uint32(hdr.Mode) & 0o7777, atime: atime(hdr), mtime: timespec(hdr.ModTime)}
	if i, ok := u.dirIdx[name]; ok {
		u.dirs[i] = m
	} else {
		u.dirIdx[name] = len(u.dirs)
		u.dirs = append(u.dirs, m)
	}
	return nil
}

func (u *unpacker) symlink(hdr *tar.Header, pfd int, parent, base string) error {
	if _, err := u.create(pfd, parent, base, func() (int, error) {
		return -1, unix.Symlinkat(hdr.Linkname, pfd, base)
	}); err != nil {
		return fmt.Errorf("create symbolic link: %w", err)
	}
	return u.setAttrsAt(pfd, base, hdr, false)
}

// hardlink links base to an earlier entry of the layer. The target is
// resolved like entry names (inside the layer, symbolic links followed with
// the layer root as "/"); linkat does not follow a target that is itself a
// link.
func (u *unpacker) hardlink(hdr *tar.Header, pfd int, parent, base string) error {
	target, why := cleanName(hdr.Linkname)
	if why != "" {
		return hostile(hdr.Name, "hard link target %q: %s", hdr.Linkname, why)
	}
	if target == "" {
		return hostile(hdr.Name, "hard link to the layer root")
	}
	name := joinName(parent, base)
	if target == name {
		return fmt.Errorf("hard link to itself")
	}
	tparent, tbase := splitName(target)
	tfd, err := u.openDir(tparent, unix.O_PATH)
	if err != nil {
		tfd, _, err = u.resolve(hdr.Name, tparent, false)
	}
	var h *HostileError
	switch {
	case errors.As(err, &h):
		return h
	case err == unix.ENOENT || err == unix.ENOTDIR:
		return fmt.Errorf("hard link target %q does not exist; a link must come after its target in the layer", hdr.Linkname)
	case err != nil:
		return fmt.Errorf("open directory of hard link target %q: %w", hdr.Linkname, err)
	}
	if tfd != u.root {
		defer unix.Close(tfd)
	}
	_, err = u.create(pfd, parent, base, func() (int, error) {
		return -1, unix.Linkat(tfd, tbase, pfd, base, 0)
	})
	switch {
	case err == unix.ENOENT:
		return fmt.Errorf("hard link target %q does not exist; a link must come after its target in the layer", hdr.Linkname)
	case err == unix.EPERM:
		return fmt.Errorf("hard link to %q refused by the kernel (a directory, or a file this user may not link to)", hdr.Linkname)
	case err != nil:
		return fmt.Errorf("create hard link to %q: %w", hdr.Linkname, err)
	}
	return nil
}

// node creates a character or block device or a fifo.
func (u *unpacker) node(hdr *tar.Header, pfd int, parent, base string) error {
	mode := uint32(unix.S_IFIFO)
	switch hdr.Typeflag {
	case tar.TypeChar:
		mode = unix.S_IFCHR
	case tar.TypeBlock:
		mode = unix.S_IFBLK
	}
	dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
	if _, err := u.create(pfd, parent, base, func() (int, error) {
		return -1, unix.Mknodat(pfd, base, mode|0o600, dev)
	}); err != nil {
		return fmt.Errorf("create %s: %w", nodeKind(hdr.Typeflag), err)
	}
	return u.setAttrsAt(pfd, base, hdr, true)
}

func nodeKind(t byte) string {
	switch t {
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	}
	return "fifo"
}

// create runs mk, which makes base in pfd exclusively. If base exists, it is
// removed (a later entry replaces an earlier one, or a lower layer's file)
// and mk runs once more.
func (u *unpacker) create(pfd int, parent, base string, mk func() (int, error)) (int, error) {
	fd, err := mk()
	if err != unix.EEXIST {
		return fd, err
	}
	if err := u.remove(pfd, joinName(parent, base), base); err != nil {
		return -1, err
	}
	return mk()
}

// remove deletes name (base in pfd) and, for a directory, all below it,
// without following symbolic links.
func (u *unpacker) remove(pfd int, name, base string) error {
	if i, ok := u.dirIdx[name]; ok {
		u.dirs[i].dead = true
		delete(u.dirIdx, name)
	}
	if err := removeAt(pfd, base); err != nil {
		return fmt.Errorf("replace existing %q: %w", name, err)
	}
	return nil
}

// chown sets the owner of base in pfd, not following a symbolic link.
func (u *unpacker) chown(pfd int, base string, hdr *tar.Header) error {
	if u.noOwners {
		return nil
	}
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set owner %d:%d: %w (unpack as root, or set NoOwnership)", hdr.Uid, hdr.Gid, err)
	}
	return nil
}

// setAttrsFD sets owner, then mode (so chown does not clear setuid bits),
// xattrs and times of an open regular file.
func (u *unpacker) setAttrsFD(fd int, hdr *tar.Header) error {
	if !u.noOwners {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("set owner %d:%d: %w (unpack as root, or set NoOwnership)", hdr.Uid, hdr.Gid, err)
		}
	}
	if err := unix.Fchmod(fd, uint32(hdr.Mode)&0o7777); err != nil {
		return fmt.Errorf("set mode: %w", err)
	}
	if xattrs(hdr) {
		if err := u.setXattrs(hdr, func(k string, v []byte) error { return unix.Fsetxattr(fd, k, v, 0) }); err != nil {
			return err
		}
	}
	if err := futimens(fd, &[2]unix.Timespec{atime(hdr), timespec(hdr.ModTime)}); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// setAttrsAt sets owner, mode (if withMode; symbolic links have none),
// xattrs and times of base in pfd without following it.
func (u *unpacker) setAttrsAt(pfd int, base string, hdr *tar.Header, withMode bool) error {
	if err := u.chown(pfd, base, hdr); err != nil {
		return err
	}
	if withMode {
		if err := chmodNoFollow(pfd, base, uint32(hdr.Mode)&0o7777); err != nil {
			return fmt.Errorf("set mode: %w", err)
		}
	}
	if xattrs(hdr) {
		// The parent is reached through its fd's /proc entry, and
		// lsetxattr does not follow base itself.
		p := procPath(pfd, base)
		if err := u.setXattrs(hdr, func(k string, v []byte) error { return unix.Lsetxattr(p, k, v, 0) }); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{atime(hdr), timespec(hdr.ModTime)}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

func xattrs(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, paxXattr) {
			return true
		}
	}
	return false
}

// setXattrs applies the entry's SCHILY.xattr.* records with set. Names were
// checked by checkHeader.
func (u *unpacker) setXattrs(hdr *tar.Header, set func(string, []byte) error) error {
	for k, v := range hdr.PAXRecords {
		key, ok := strings.CutPrefix(k, paxXattr)
		if !ok {
			continue
		}
		if u.noOwners && !strings.HasPrefix(key, "user.") {
			continue
		}
		if err := set(key, []byte(v)); err != nil {
			if err == unix.ENOTSUP {
				return fmt.Errorf("set extended attribute %q: the filesystem under %s does not support it: %w", key, u.dir, err)
			}
			return fmt.Errorf("set extended attribute %q: %w", key, err)
		}
	}
	return nil
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// atime is the entry's access time if the archive kept one, else its mtime.
func atime(hdr *tar.Header) unix.Timespec {
	if hdr.AccessTime.IsZero() {
		return timespec(hdr.ModTime)
	}
	return timespec(hdr.AccessTime)
}

// whiteout applies a ".wh." entry: an opaque marker, a whiteout, or AUFS
// metadata (".wh..wh.plnk" and the like), which means nothing here.
func (u *unpacker) whiteout(hdr *tar.Header, parent, base string) error {
	if base == opaqueMarker {
		pfd, parent, err := u.parent(hdr.Name, parent)
		if err != nil {
			return err
		}
		if u.mode == Overlay {
			if err := unix.Setxattr(procPath(pfd, ""), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
				return fmt.Errorf("mark directory opaque (trusted.overlay.opaque needs root): %w", err)
			}
			return nil
		}
		return u.clearOpaque(pfd, parent)
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil
	}
	target := base[len(whiteoutPrefix):]
	if target == "" || target == "." || target == ".." {
		return hostile(hdr.Name, "whiteout of %q names no file", target)
	}
	pfd, parent, err := u.parent(hdr.Name, parent)
	if err != nil {
		return err
	}
	name := joinName(parent, target)
	if u.mode == Overlay {
		err := unix.Mknodat(pfd, target, unix.S_IFCHR, 0)
		switch {
		case err == unix.EEXIST:
			// The layer itself has name; a whiteout only hides lower layers.
			return nil
		case err == unix.EPERM:
			return fmt.Errorf("create overlay whiteout for %q: creating a 0:0 character device needs root: %w", name, err)
		case err != nil:
			return fmt.Errorf("create overlay whiteout for %q: %w", name, err)
		}
		return nil
	}
	if !u.fromLowerLayer(name) {
		return nil
	}
	return u.remove(pfd, name, target)
}

// clearOpaque removes what lower layers put under the directory dir (open as
// fd), keeping what this layer wrote, at any depth: an opaque directory hides
// everything below it in the lower layers.
func (u *unpacker) clearOpaque(fd int, dir string) error {
	names, err := readDirNames(fd, ".")
	if err != nil {
		return fmt.Errorf("read opaque directory %q: %w", dir, err)
	}
	for _, n := range names {
		name := joinName(dir, n)
		if u.fromLowerLayer(name) {
			if err := u.remove(fd, name, n); err != nil {
				return err
			}
			continue
		}
		cfd, err := unix.Openat(fd, n, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOTDIR || err == unix.ELOOP {
			continue
		}
		if err != nil {
			return fmt.Errorf("open %q: %w", name, err)
		}
		err = u.clearOpaque(cfd, name)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}

// finishDirs sets the mode and times of every directory the layer listed,
// now that nothing more is written into them.
func (u *unpacker) finishDirs() error {
	for _, d := range u.dirs {
		if d.dead {
			continue
		}
		fd, err := u.openDir(d.path, unix.O_RDONLY)
		if err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP {
			continue // an ancestor was replaced later in the layer
		}
		if err != nil {
			return fmt.Errorf("layer entry %q: open directory to set its mode: %w", d.path, err)
		}
		err = unix.Fchmod(fd, d.mode)
		if err == nil {
			err = futimens(fd, &[2]unix.Timespec{d.atime, d.mtime})
		}
		if fd != u.root {
			unix.Close(fd)
		}
		if err != nil {
			return fmt.Errorf("layer entry %q: set directory mode and times: %w", d.path, err)
		}
	}
	return nil
}
