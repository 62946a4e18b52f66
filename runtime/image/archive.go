package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// archive gives random access to the files of an uncompressed tar file
// without extracting it: Import reads manifest.json or index.json first and
// then the blobs they name, in any order.
type archive struct {
	f     *os.File
	files map[string]archiveEntry
	// hostile is the first entry whose name escapes the archive, if any. A
	// root filesystem tar is judged by layer.Apply instead, so this only
	// fails imports of image archives.
	hostile error
}

type archiveEntry struct {
	offset, size int64
	link         string // symlink target, for the legacy docker save format
}

// countingReader tracks the offset archive/tar has read to: tar.Reader
// reads a header exactly, so after Next the count is where the data starts.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// maxArchiveEntries bounds the index of one archive.
const maxArchiveEntries = 1 << 20

func openArchive(f *os.File) (*archive, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	cr := &countingReader{r: f}
	tr := tar.NewReader(cr)
	a := &archive{f: f, files: map[string]archiveEntry{}}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read archive: not a tar file or damaged: %w", err)
		}
		if len(a.files) >= maxArchiveEntries {
			return nil, fmt.Errorf("read archive: more than %d entries", maxArchiveEntries)
		}
		name, ok := cleanArchiveName(hdr.Name)
		if !ok {
			if a.hostile == nil {
				a.hostile = fmt.Errorf("archive entry %q escapes the archive (absolute path or ..): refusing the archive", hdr.Name)
			}
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			a.files[name] = archiveEntry{offset: cr.n, size: hdr.Size}
		case tar.TypeSymlink:
			a.files[name] = archiveEntry{link: hdr.Linkname}
		case tar.TypeLink:
			target, ok := cleanArchiveName(hdr.Linkname)
			if !ok {
				if a.hostile == nil {
					a.hostile = fmt.Errorf("archive entry %q links to %q outside the archive: refusing the archive", hdr.Name, hdr.Linkname)
				}
				continue
			}
			if e, ok := a.files[target]; ok {
				a.files[name] = e
			}
		}
	}
	return a, nil
}

// cleanArchiveName normalises an entry name ("./manifest.json" is
// "manifest.json") and refuses names that leave the archive.
func cleanArchiveName(name string) (string, bool) {
	if name == "" || strings.HasPrefix(name, "/") || strings.IndexByte(name, 0) >= 0 {
		return "", false
	}
	p := path.Clean(name)
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", false
	}
	return p, true
}

var errNotInArchive = errors.New("not in the archive")

// open returns the content of the file called name, following symlinks
// that stay inside the archive.
func (a *archive) open(name string) (*io.SectionReader, error) {
	orig := name
	for hops := 0; hops < 16; hops++ {
		e, ok := a.files[name]
		if !ok {
			return nil, fmt.Errorf("%s: %w", orig, errNotInArchive)
		}
		if e.link == "" {
			return io.NewSectionReader(a.f, e.offset, e.size), nil
		}
		target := e.link
		if !strings.HasPrefix(target, "/") {
			target = path.Join(path.Dir(name), target)
		}
		next, ok := cleanArchiveName(strings.TrimPrefix(target, "/"))
		if !ok || strings.HasPrefix(e.link, "/") {
			return nil, fmt.Errorf("%s: symlink to %q leaves the archive", orig, e.link)
		}
		name = next
	}
	return nil, fmt.Errorf("%s: too many symlinks", orig)
}

// readSmall reads a JSON document of the archive.
func (a *archive) readSmall(name string) ([]byte, error) {
	r, err := a.open(name)
	if err != nil {
		return nil, err
	}
	if r.Size() > maxMetaBlob {
		return nil, fmt.Errorf("%s is %d bytes, more than a manifest or config may be", name, r.Size())
	}
	return io.ReadAll(r)
}

func (a *archive) has(name string) bool {
	_, ok := a.files[name]
	return ok
}
