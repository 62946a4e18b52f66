package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/runtime/image/layer"
)

// ImportOptions configures Import.
type ImportOptions struct {
	// Name names the image. It is required for a root filesystem and for an
	// archive whose image carries no name; for an archive with one image it
	// replaces the archive's names. An archive with several images keeps
	// its own names and refuses Name.
	Name string
	// Platform chooses from a multi-platform OCI layout; nil means this
	// machine's.
	Platform *v1.Platform
	// Progress, if set, is called as blobs are stored and layers unpacked.
	Progress func(ProgressEvent)
}

// Import stores the images of an archive read from r: an OCI image layout
// as a tar (index.json and blobs/), a `docker save` archive (manifest.json,
// in the format of any Docker version), or a plain root filesystem tar
// (which becomes a one-layer image and needs o.Name). The archive may be
// compressed with gzip or zstd.
//
// The stream is copied into ingest/ first, and that copy is removed however
// Import ends. A read blocked on a source that has stopped sending returns
// when ctx ends only if r can be interrupted: if r has SetReadDeadline (an
// *os.File of a pipe or FIFO in non-blocking mode, a net.Conn), Import sets
// a deadline in the past once ctx is done.
func (s *Store) Import(ctx context.Context, r io.Reader, o ImportOptions) ([]Image, error) {
	unlock, err := s.lock(ctx, unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if d, ok := r.(interface{ SetReadDeadline(time.Time) error }); ok {
		stop := context.AfterFunc(ctx, func() { _ = d.SetReadDeadline(time.Unix(1, 0)) })
		defer stop()
	}
	// A stream gives no random access: keep it in ingest/ while importing.
	f, err := s.spool(ctx, r)
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	return s.importFile(ctx, f, o)
}

// ImportPath is Import from a file (a FIFO is read as a stream), or from a
// directory, which is taken as a root filesystem.
func (s *Store) ImportPath(ctx context.Context, path string, o ImportOptions) ([]Image, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if fi.IsDir() {
		unlock, err := s.lock(ctx, unix.LOCK_SH)
		if err != nil {
			return nil, err
		}
		defer unlock()
		return s.importDir(ctx, path, o)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer f.Close()
	if !fi.Mode().IsRegular() {
		return s.Import(ctx, f, o)
	}
	var head [4]byte
	n, _ := io.ReadFull(f, head[:])
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if isCompressed(head[:n]) {
		return s.Import(ctx, f, o)
	}
	unlock, err := s.lock(ctx, unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.importFile(ctx, f, o)
}

func isCompressed(head []byte) bool {
	return (len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b) ||
		(len(head) == 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd)
}

// spool copies r, decompressed, into a temporary file in ingest/.
func (s *Store) spool(ctx context.Context, r io.Reader) (*os.File, error) {
	plain, err := layer.Decompress(r)
	if err != nil {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return nil, fmt.Errorf("import: %w", err)
	}
	defer plain.Close()
	f, err := os.CreateTemp(s.path(dirIngest), "import-")
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if _, err := io.Copy(f, ctxReader{ctx, plain}); err != nil {
		f.Close()
		os.Remove(f.Name())
		if ctx.Err() != nil {
			err = context.Cause(ctx) // not the deadline that stopped the read
		}
		return nil, fmt.Errorf("import: read archive: %w", err)
	}
	return f, nil
}

func (s *Store) importFile(ctx context.Context, f *os.File, o ImportOptions) ([]Image, error) {
	a, err := openArchive(f)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	report := progressFunc(o.Progress)
	switch {
	case a.has("oci-layout") && a.has("index.json"):
		if a.hostile != nil {
			return nil, fmt.Errorf("import: %w", a.hostile)
		}
		return s.importOCI(ctx, a, o, report)
	case a.has("manifest.json"):
		if a.hostile != nil {
			return nil, fmt.Errorf("import: %w", a.hostile)
		}
		return s.importDocker(ctx, a, o, report)
	case a.has("index.json"):
		return nil, errors.New("import: the archive has index.json but no oci-layout file: it is not an OCI image layout")
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return s.importRootfs(ctx, f, o, report)
}

// imageNames validates and canonicalises names an archive gives an image.
func imageNames(raw []string) ([]string, error) {
	var out []string
	for _, n := range raw {
		r, err := ParseReference(n)
		if err != nil {
			return nil, err
		}
		out = append(out, CanonicalName(r))
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// nameArchiveImages applies o.Name to the images found in an archive.
func nameArchiveImages(names [][]string, o ImportOptions, what []string) error {
	if o.Name != "" {
		if len(names) != 1 {
			return fmt.Errorf("import: the archive holds %d images, which keep the archive's names: %w", len(names), ErrNameForSeveral)
		}
		n, err := imageNames([]string{o.Name})
		if err != nil {
			return err
		}
		names[0] = n
		return nil
	}
	for i, n := range names {
		if len(n) == 0 {
			return fmt.Errorf("import: image %s in the archive has no name: %w", what[i], ErrNameRequired)
		}
	}
	return nil
}

// dockerManifest is one entry of a `docker save` manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// importDocker imports a `docker save` archive. manifest.json names the
// config and the layer tars by path; this works for the format before
// Docker 25 (<id>/layer.tar, <hex>.json, possibly symlinked layers) and
// after it (blobs/sha256/<hex>). A manifest is built for each image with
// the layers as they are in the archive.
func (s *Store) importDocker(ctx context.Context, a *archive, o ImportOptions, report func(ProgressEvent)) ([]Image, error) {
	data, err := a.readSmall("manifest.json")
	if err != nil {
		return nil, fmt.Errorf("import docker archive: %w", err)
	}
	var entries []dockerManifest
	if err := json.Unmarshal(data, &entries); err != nil {
		return nil, fmt.Errorf("import docker archive: manifest.json does not parse: %w", err)
	}
	if len(entries) == 0 {
		return nil, errors.New("import docker archive: manifest.json lists no images")
	}
	names := make([][]string, len(entries))
	what := make([]string, len(entries))
	for i, e := range entries {
		if names[i], err = imageNames(e.RepoTags); err != nil {
			return nil, fmt.Errorf("import docker archive: %w", err)
		}
		what[i] = e.Config
	}
	if err := nameArchiveImages(names, o, what); err != nil {
		return nil, err
	}
	var out []Image
	for i, e := range entries {
		imgs, err := s.importDockerImage(ctx, a, e, names[i], report)
		if err != nil {
			return nil, fmt.Errorf("import docker archive: image %s: %w", e.Config, err)
		}
		out = append(out, imgs...)
	}
	return out, nil
}

func (s *Store) importDockerImage(ctx context.Context, a *archive, e dockerManifest, names []string, report func(ProgressEvent)) ([]Image, error) {
	cfgRaw, err := a.readSmall(e.Config)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cfgRaw)), Digest: digestOf(cfgRaw)},
	}
	if _, err := s.ingestBytes(ctx, cfgRaw); err != nil {
		return nil, err
	}
	for _, p := range e.Layers {
		r, err := a.open(p)
		if err != nil {
			return nil, fmt.Errorf("layer listed in manifest.json: %w", err)
		}
		mt, err := layerMediaType(r)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", p, err)
		}
		// The digest of a layer in this format is not written anywhere:
		// hash it (while storing it) to name it.
		d, n, err := s.ingest(ctx, io.NewSectionReader(r, 0, r.Size()), r.Size(), v1.Hash{})
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", p, err)
		}
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Size: n, Digest: d})
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	// Every blob is stored now; storeImage checks the whole and unpacks.
	st, err := s.storeImage(ctx, raw, storedOnly, report)
	if err != nil {
		return nil, err
	}
	return s.name(names, st, "")
}

// layerMediaType names a layer's format by its first bytes.
func layerMediaType(r io.ReaderAt) (types.MediaType, error) {
	var head [4]byte
	n, err := r.ReadAt(head[:], 0)
	if err != nil && err != io.EOF {
		return "", err
	}
	switch {
	case n >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return types.OCILayer, nil
	case n == 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd:
		return types.OCILayerZStd, nil
	}
	return types.OCIUncompressedLayer, nil
}

// OCI annotations that name an image in a layout's index.json.
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// importOCI imports an OCI image layout. Its blobs are stored verbatim, so
// the image keeps the manifest digest it has in the layout (and had in its
// registry).
func (s *Store) importOCI(ctx context.Context, a *archive, o ImportOptions, report func(ProgressEvent)) ([]Image, error) {
	data, err := a.readSmall("index.json")
	if err != nil {
		return nil, fmt.Errorf("import OCI layout: %w", err)
	}
	idx, err := parseIndex(data)
	if err != nil {
		return nil, fmt.Errorf("import OCI layout: index.json: %w", err)
	}
	if len(idx.Manifests) == 0 {
		return nil, errors.New("import OCI layout: index.json lists no images")
	}
	platform := DefaultPlatform()
	if o.Platform != nil {
		platform = *o.Platform
	}
	blob := func(d v1.Hash) (*io.SectionReader, error) {
		if err := checkDigest(d); err != nil {
			return nil, err
		}
		r, err := a.open("blobs/sha256/" + d.Hex)
		if err != nil {
			return nil, fmt.Errorf("blob %s is listed but absent: %w", d, err)
		}
		return r, nil
	}
	readBlob := func(d v1.Hash) ([]byte, error) {
		r, err := blob(d)
		if err != nil {
			return nil, err
		}
		if r.Size() > maxMetaBlob {
			return nil, fmt.Errorf("blob %s is too large for a manifest", d)
		}
		raw, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		if got := digestOf(raw); got != d {
			return nil, fmt.Errorf("blob %s: content hashes to %s (digest mismatch)", d, got)
		}
		return raw, nil
	}
	var imgs [][]byte
	var names [][]string
	var what []string
	for _, d := range idx.Manifests {
		raw, err := readBlob(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("import OCI layout: %w", err)
		}
		switch {
		case isIndex(d.MediaType):
			child, err := parseIndex(raw)
			if err != nil {
				return nil, fmt.Errorf("import OCI layout: %w", err)
			}
			cd, err := choosePlatform(child, platform, "index "+d.Digest.String())
			if err != nil {
				return nil, fmt.Errorf("import OCI layout: %w", err)
			}
			if raw, err = readBlob(cd.Digest); err != nil {
				return nil, fmt.Errorf("import OCI layout: %w", err)
			}
		case isManifest(d.MediaType):
			if d.Platform != nil && !platformMatches(d.Platform, platform) && len(idx.Manifests) > 1 {
				continue // one of several platforms
			}
		default:
			return nil, fmt.Errorf("import OCI layout: %w", unsupportedManifest(d.MediaType))
		}
		var n []string
		if v := d.Annotations[annotationContainerdName]; v != "" {
			n = append(n, v)
		} else if v := d.Annotations[annotationRefName]; v != "" && !isBareTag(v) {
			n = append(n, v)
		}
		if n, err = imageNames(n); err != nil {
			return nil, fmt.Errorf("import OCI layout: %w", err)
		}
		imgs = append(imgs, raw)
		names = append(names, n)
		what = append(what, d.Digest.String())
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("import OCI layout: no image for %s in the archive", platform)
	}
	if err := nameArchiveImages(names, o, what); err != nil {
		return nil, err
	}
	fetch := func(_ context.Context, d v1.Descriptor) (io.ReadCloser, error) {
		r, err := blob(d.Digest)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(r), nil
	}
	var out []Image
	for i, img := range imgs {
		st, err := s.storeImage(ctx, img, fetch, report)
		if err != nil {
			return nil, fmt.Errorf("import OCI layout: image %s: %w", what[i], err)
		}
		named, err := s.name(names[i], st, "")
		if err != nil {
			return nil, err
		}
		out = append(out, named...)
	}
	return out, nil
}

// isBareTag reports whether an org.opencontainers.image.ref.name is only
// a tag ("latest"), which names no repository.
func isBareTag(v string) bool {
	for _, c := range v {
		if c == '/' || c == ':' || c == '@' {
			return false
		}
	}
	return true
}

// importRootfs makes a one-layer image of a root filesystem tar.
func (s *Store) importRootfs(ctx context.Context, r io.Reader, o ImportOptions, report func(ProgressEvent)) ([]Image, error) {
	if o.Name == "" {
		return nil, fmt.Errorf("import: the archive is neither an OCI layout nor a docker save archive, so it is taken as a root filesystem: %w", ErrNameRequired)
	}
	names, err := imageNames([]string{o.Name})
	if err != nil {
		return nil, err
	}
	d, n, err := s.ingest(ctx, r, -1, v1.Hash{})
	if err != nil {
		return nil, fmt.Errorf("import root filesystem: %w", err)
	}
	return s.rootfsImage(ctx, names, v1.Descriptor{MediaType: types.OCIUncompressedLayer, Size: n, Digest: d}, report)
}

// importDir makes a one-layer image of a root filesystem directory.
func (s *Store) importDir(ctx context.Context, dir string, o ImportOptions) ([]Image, error) {
	if o.Name == "" {
		return nil, fmt.Errorf("import: a root filesystem directory: %w", ErrNameRequired)
	}
	names, err := imageNames([]string{o.Name})
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	written := make(chan error, 1)
	go func() {
		err := layer.WriteTar(ctx, pw, dir)
		pw.CloseWithError(err)
		written <- err
	}()
	d, n, err := s.ingest(ctx, pr, -1, v1.Hash{})
	// Unblock WriteTar if ingest stopped early, and wait for it.
	pr.CloseWithError(errors.New("import stopped"))
	if werr := <-written; werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return nil, fmt.Errorf("import root filesystem %s: %w", dir, err)
	}
	return s.rootfsImage(ctx, names, v1.Descriptor{MediaType: types.OCIUncompressedLayer, Size: n, Digest: d}, progressFunc(o.Progress))
}

// rootfsImage stores the config and manifest of a one-layer image whose
// layer, an uncompressed tar, is stored already.
func (s *Store) rootfsImage(ctx context.Context, names []string, l v1.Descriptor, report func(ProgressEvent)) ([]Image, error) {
	now := time.Now().UTC().Truncate(time.Second)
	cfg := v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: now},
		RootFS:       v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{l.Digest}},
		Config:       v1.Config{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		History:      []v1.History{{Created: v1.Time{Time: now}, CreatedBy: "nexus image import"}},
	}
	cfgRaw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cd, err := s.ingestBytes(ctx, cfgRaw)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cfgRaw)), Digest: cd},
		Layers:        []v1.Descriptor{l},
	})
	if err != nil {
		return nil, err
	}
	st, err := s.storeImage(ctx, raw, storedOnly, report)
	if err != nil {
		return nil, fmt.Errorf("import root filesystem: %w", err)
	}
	return s.name(names, st, "")
}

// ImportImage stores an image held in memory (built by go-containerregistry)
// under name.
func (s *Store) ImportImage(ctx context.Context, name string, img v1.Image) (Image, error) {
	return s.importImage(ctx, name, img, "")
}

func (s *Store) importImage(ctx context.Context, name string, img v1.Image, source string) (Image, error) {
	names, err := imageNames([]string{name})
	if err != nil {
		return Image{}, err
	}
	unlock, err := s.lock(ctx, unix.LOCK_SH)
	if err != nil {
		return Image{}, err
	}
	defer unlock()
	raw, err := img.RawManifest()
	if err != nil {
		return Image{}, fmt.Errorf("import %s: manifest: %w", name, err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return Image{}, fmt.Errorf("import %s: config: %w", name, err)
	}
	fetch := func(_ context.Context, d v1.Descriptor) (io.ReadCloser, error) {
		if d.Digest == cfgName {
			cfg, err := img.RawConfigFile()
			if err != nil {
				return nil, err
			}
			return io.NopCloser(bytes.NewReader(cfg)), nil
		}
		l, err := img.LayerByDigest(d.Digest)
		if err != nil {
			return nil, err
		}
		return l.Compressed()
	}
	st, err := s.storeImage(ctx, raw, fetch, func(ProgressEvent) {})
	if err != nil {
		return Image{}, fmt.Errorf("import %s: %w", name, err)
	}
	imgs, err := s.name(names, st, source)
	if err != nil {
		return Image{}, err
	}
	return imgs[0], nil
}

// storedOnly is the fetch function of an import, whose blobs are all in the
// store before storeImage runs: it should never be called.
func storedOnly(context.Context, v1.Descriptor) (io.ReadCloser, error) {
	return nil, errors.New("blob vanished from the store during import")
}
