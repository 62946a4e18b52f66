package image_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"nexus.dev/nexus/runtime/image"
	"nexus.dev/nexus/runtime/image/imagetest"
	"nexus.dev/nexus/runtime/image/layer"
)

// archiveEntry is one file of a hand-built archive.
type archiveEntry struct {
	name string
	data []byte
	link string // a symlink when set
}

func writeArchive(t *testing.T, entries []archiveEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if e.link != "" {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeSymlink, e.link, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha(data []byte) v1.Hash {
	h, _, _ := v1.SHA256(bytes.NewReader(data))
	return h
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestImportDockerSaveArchive(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	img := testImage(t, thisArch())
	var buf bytes.Buffer
	refs := map[name.Reference]v1.Image{}
	for _, r := range []string{"example.com/app:1", "app:latest"} {
		ref, err := name.ParseReference(r)
		if err != nil {
			t.Fatal(err)
		}
		refs[ref] = img
	}
	if err := tarball.MultiRefWrite(refs, &buf); err != nil {
		t.Fatal(err)
	}
	imgs, err := s.Import(ctx, &buf, image.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range imgs {
		names = append(names, i.Name)
	}
	if strings.Join(names, ",") != "docker.io/library/app:latest,example.com/app:1" {
		t.Fatalf("imported names %v", names)
	}
	if got, err := snapshotFile(t, s, img, 1, "bin/app"); err != nil || !strings.Contains(got, thisArch()) {
		t.Fatalf("layer content %q %v", got, err)
	}
	if err := s.Verify(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	d, err := s.Inspect(ctx, "example.com/app:1")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Layers) != 3 || len(d.Names) != 2 || !slices3Unpacked(d.Layers) {
		t.Fatalf("inspect %+v", d)
	}
}

func slices3Unpacked(ls []image.LayerInfo) bool {
	for _, l := range ls {
		if !l.Unpacked {
			return false
		}
	}
	return true
}

// legacyArchive builds the `docker save` format of Docker before 25 by
// hand: <id>/layer.tar, <id>/json, <id>/VERSION, <config hex>.json,
// repositories and manifest.json; the second image's second layer is a
// symlink to the first image's, as docker writes shared layers.
func legacyArchive(t *testing.T) []byte {
	l1 := imagetest.LayerTar(t, map[string]imagetest.File{"etc/os-release": {Content: "legacy"}})
	l2 := imagetest.LayerTar(t, map[string]imagetest.File{"app/one": {Content: "one"}})
	config := func(layers ...[]byte) []byte {
		cf := v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"}, Config: v1.Config{Cmd: []string{"/app/one"}}}
		for _, l := range layers {
			cf.RootFS.DiffIDs = append(cf.RootFS.DiffIDs, sha(l))
		}
		return mustJSON(t, cf)
	}
	c1, c2 := config(l1), config(l1, l2)
	id1, id2, id3 := strings.Repeat("1", 64), strings.Repeat("2", 64), strings.Repeat("3", 64)
	manifest := []map[string]any{
		{"Config": sha(c1).Hex + ".json", "RepoTags": []string{"legacy/base:1"}, "Layers": []string{id1 + "/layer.tar"}},
		{"Config": sha(c2).Hex + ".json", "RepoTags": []string{"legacy/app:2", "legacy/app:latest"}, "Layers": []string{id2 + "/layer.tar", id3 + "/layer.tar"}},
	}
	return writeArchive(t, []archiveEntry{
		{name: id1 + "/VERSION", data: []byte("1.0")},
		{name: id1 + "/json", data: []byte(`{"id":"` + id1 + `"}`)},
		{name: id1 + "/layer.tar", data: l1},
		{name: id2 + "/layer.tar", link: "../" + id1 + "/layer.tar"},
		{name: "./" + id3 + "/layer.tar", data: l2},
		{name: sha(c1).Hex + ".json", data: c1},
		{name: sha(c2).Hex + ".json", data: c2},
		{name: "repositories", data: []byte(`{"legacy/base":{"1":"` + id1 + `"}}`)},
		{name: "manifest.json", data: mustJSON(t, manifest)},
	})
}

func TestImportLegacyDockerArchive(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "legacy.tar")
	if err := os.WriteFile(path, legacyArchive(t), 0o644); err != nil {
		t.Fatal(err)
	}
	imgs, err := s.ImportPath(ctx, path, image.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 3 {
		t.Fatalf("imported %v", imgs)
	}
	base, err := s.Inspect(ctx, "legacy/base:1")
	if err != nil {
		t.Fatal(err)
	}
	app, err := s.Inspect(ctx, "legacy/app")
	if err != nil {
		t.Fatal(err)
	}
	if len(app.Layers) != 2 || app.Layers[0].Digest != base.Layers[0].Digest || app.Layers[0].MediaType != types.OCIUncompressedLayer {
		t.Fatalf("layers: base %+v app %+v", base.Layers, app.Layers)
	}
	if err := s.Verify(ctx, "legacy/app:2"); err != nil {
		t.Fatal(err)
	}
	// Gzipped, from a stream, with a name that replaces the archive's:
	// refused, since the archive holds two images.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(legacyArchive(t))
	zw.Close()
	if _, err := s.Import(ctx, &gz, image.ImportOptions{Name: "renamed:1"}); !errors.Is(err, image.ErrNameForSeveral) || !strings.Contains(err.Error(), "2 images") {
		t.Fatalf("--name for a two-image archive: %v", err)
	}
}

// ociArchive builds an OCI image layout tar by hand; edit may change the
// manifest and the layer bytes before they are written.
func ociArchive(t *testing.T, refName string, edit func(m *v1.Manifest, layer *[]byte)) []byte {
	layerData := imagetest.LayerTar(t, map[string]imagetest.File{"hello.txt": {Content: "from an OCI layout"}})
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(layerData)
	zw.Close()
	compressed := gz.Bytes()
	cfg := mustJSON(t, v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{sha(layerData)}}})
	m := v1.Manifest{
		SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cfg)), Digest: sha(cfg)},
		Layers: []v1.Descriptor{{MediaType: types.OCILayer, Size: int64(len(compressed)), Digest: sha(compressed)}},
	}
	layerBlob := compressed
	if edit != nil {
		edit(&m, &layerBlob)
	}
	raw := mustJSON(t, m)
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{{
		MediaType: types.OCIManifestSchema1, Size: int64(len(raw)), Digest: sha(raw),
		Annotations: map[string]string{"org.opencontainers.image.ref.name": refName},
	}}}
	return writeArchive(t, []archiveEntry{
		{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{name: "index.json", data: mustJSON(t, idx)},
		{name: "blobs/sha256/" + sha(cfg).Hex, data: cfg},
		{name: "blobs/sha256/" + m.Layers[0].Digest.Hex, data: layerBlob},
		{name: "blobs/sha256/" + sha(raw).Hex, data: raw},
	})
}

func TestImportOCILayout(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	imgs, err := s.Import(ctx, bytes.NewReader(ociArchive(t, "example.com/oci:1", nil)), image.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Name != "example.com/oci:1" {
		t.Fatalf("imported %v", imgs)
	}
	// A bare tag names no repository: the import needs a name.
	if _, err := s.Import(ctx, bytes.NewReader(ociArchive(t, "latest", nil)), image.ImportOptions{}); !errors.Is(err, image.ErrNameRequired) {
		t.Fatalf("unnamed image: %v", err)
	}
	imgs, err = s.Import(ctx, bytes.NewReader(ociArchive(t, "latest", nil)), image.ImportOptions{Name: "example.com/named:2"})
	if err != nil || imgs[0].Name != "example.com/named:2" {
		t.Fatalf("named import: %v %v", imgs, err)
	}
}

func TestImportRootfs(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/motd"), []byte("rootfs dir"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportPath(ctx, dir, image.ImportOptions{}); !errors.Is(err, image.ErrNameRequired) {
		t.Fatalf("rootfs without a name: %v", err)
	}
	imgs, err := s.ImportPath(ctx, dir, image.ImportOptions{Name: "local/rootfs:dir"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.Inspect(ctx, imgs[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(s.Root(), "snapshots", d.Layers[0].DiffID.Hex, "fs/etc/motd"))
	if err != nil || string(data) != "rootfs dir" {
		t.Fatalf("unpacked rootfs: %q %v", data, err)
	}
	// A rootfs tar, gzipped, from a stream.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(imagetest.LayerTar(t, map[string]imagetest.File{"etc/motd": {Content: "rootfs tar"}}))
	zw.Close()
	imgs, err = s.Import(ctx, &gz, image.ImportOptions{Name: "local/rootfs:tar"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(ctx, imgs[0].ID); err != nil {
		t.Fatal(err)
	}
}

func TestImportRejectsBadArchives(t *testing.T) {
	l1 := imagetest.LayerTar(t, map[string]imagetest.File{"a": {Content: "a"}})
	cfg := func(diffIDs ...v1.Hash) []byte {
		return mustJSON(t, v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs}})
	}
	docker := func(config []byte, layers []string, extra ...archiveEntry) []byte {
		entries := append([]archiveEntry{
			{name: "c.json", data: config},
			{name: "l1/layer.tar", data: l1},
			{name: "manifest.json", data: mustJSON(t, []map[string]any{{"Config": "c.json", "RepoTags": []string{"bad:1"}, "Layers": layers}})},
		}, extra...)
		return writeArchive(t, entries)
	}
	hostileLayer := writeArchive(t, []archiveEntry{{name: "../../etc/evil", data: []byte("x")}})
	tests := []struct {
		name    string
		archive []byte
		want    string
	}{
		{"layer listed but absent", docker(cfg(sha(l1), sha(l1)), []string{"l1/layer.tar", "l2/layer.tar"}), "l2/layer.tar: not in the archive"},
		{"hostile path in the archive", docker(cfg(sha(l1)), []string{"l1/layer.tar"}, archiveEntry{name: "../escape", data: []byte("x")}), `"../escape" escapes the archive`},
		{"symlink out of the archive", docker(cfg(sha(l1)), []string{"l1/layer.tar", "l2/layer.tar"}, archiveEntry{name: "l2/layer.tar", link: "../../../etc/passwd"}), "leaves the archive"},
		{"diff_id mismatch", docker(cfg(sha([]byte("other"))), []string{"l1/layer.tar"}), "diff_id mismatch"},
		{"config disagrees with layers", docker(cfg(sha(l1), sha(l1)), []string{"l1/layer.tar"}), "lists 2 layers"},
		{"manifest.json not JSON", writeArchive(t, []archiveEntry{{name: "manifest.json", data: []byte("{")}}), "manifest.json does not parse"},
		{"index.json without oci-layout", writeArchive(t, []archiveEntry{{name: "index.json", data: []byte("{}")}}), "not an OCI image layout"},
		{"not a tar", []byte("this is not a tar file at all, not even close, and it goes on for a while so that the tar reader sees a whole block of it: " + strings.Repeat("x", 600)), "not a tar file"},
		{"blob digest mismatch", ociArchive(t, "example.com/x:1", func(m *v1.Manifest, l *[]byte) {
			(*l)[len(*l)-5] ^= 1
		}), "digest mismatch"},
		{"unsupported layer media type", ociArchive(t, "example.com/x:1", func(m *v1.Manifest, l *[]byte) {
			m.Layers[0].MediaType = "application/vnd.example.thing"
		}), `"application/vnd.example.thing"`},
		{"artifact, not an image", ociArchive(t, "example.com/x:1", func(m *v1.Manifest, l *[]byte) {
			m.Config.MediaType = "application/vnd.cncf.helm.config.v1+json"
		}), "not a container image"},
		{"hostile layer", docker(cfg(sha(hostileLayer)), []string{"l2/layer.tar"}, archiveEntry{name: "l2/layer.tar", data: hostileLayer}), "unsafe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			ctx := context.Background()
			_, err := s.Import(ctx, bytes.NewReader(tt.archive), image.ImportOptions{Name: "example.com/bad:1"})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if tt.name == "hostile layer" {
				var h *layer.HostileError
				if !errors.As(err, &h) {
					t.Errorf("err is not a *layer.HostileError: %T", err)
				}
			}
			if imgs, _ := s.List(ctx); len(imgs) != 0 {
				t.Errorf("a failed import recorded %v", imgs)
			}
			ingestEmpty(t, s)
			snaps, _ := os.ReadDir(filepath.Join(s.Root(), "snapshots"))
			if len(snaps) != 0 {
				t.Errorf("a failed import left snapshots %v", snaps)
			}
		})
	}
}

// TestImportOfAStalledStreamEndsWithItsContext feeds Import from a pipe that
// stops sending: cancelling the context must end the blocked read and
// remove the partial copy from ingest/.
func TestImportOfAStalledStreamEndsWithItsContext(t *testing.T) {
	s := openStore(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.Import(ctx, r, image.ImportOptions{Name: "example.com/stalled:1"})
		done <- err
	}()
	if _, err := w.Write(bytes.Repeat([]byte("x"), 1<<20)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if entries, _ := os.ReadDir(filepath.Join(s.Root(), "ingest")); len(entries) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the import never started its copy")
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopped := errors.New("stopped by the test")
	cancel(stopped)
	select {
	case err := <-done:
		if !errors.Is(err, stopped) {
			t.Errorf("Import: %v, want the context's cause", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Import still blocked 10 s after its context ended")
	}
	ingestEmpty(t, s)
}
