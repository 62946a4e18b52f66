package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"nexus.dev/nexus/runtime/image"
)

// FuzzImport feeds arbitrary bytes to Import as an archive (docker save, OCI
// layout or root filesystem tar). Import may accept or refuse them, but must
// never panic, and a refused archive must leave no image name and nothing
// in ingest/.
func FuzzImport(f *testing.F) {
	img, err := random.Image(512, 2)
	if err != nil {
		f.Fatal(err)
	}
	var save bytes.Buffer
	if err := tarball.Write(name.MustParseReference("fuzz/seed:1"), img, &save); err != nil {
		f.Fatal(err)
	}
	f.Add(save.Bytes())
	var rootfs bytes.Buffer
	tw := tar.NewWriter(&rootfs)
	for _, e := range []struct{ name, body string }{{"manifest.json", `[{"Config":"c.json","RepoTags":["a:b"],"Layers":["l.tar"]}]`}, {"c.json", `{"rootfs":{"type":"layers","diff_ids":[]}}`}, {"etc/hostname", "x\n"}} {
		_ = tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
		_, _ = tw.Write([]byte(e.body))
	}
	_ = tw.Close()
	f.Add(rootfs.Bytes())
	f.Add([]byte(`{"imageLayoutVersion":"1.0.0"}`))

	f.Fuzz(func(t *testing.T, data []byte) {
		root := t.TempDir()
		s, err := image.Open(image.Config{Root: root})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx := context.Background()
		_, ierr := s.Import(ctx, bytes.NewReader(data), image.ImportOptions{Name: "fuzz/target:1"})
		imgs, err := s.List(ctx)
		if err != nil {
			t.Fatalf("list after import: %v", err)
		}
		if ierr != nil && len(imgs) != 0 {
			t.Fatalf("import failed (%v) but left images %v", ierr, imgs)
		}
		left, _ := os.ReadDir(filepath.Join(root, "ingest"))
		for _, e := range left {
			if filepath.Ext(e.Name()) != ".lock" {
				t.Fatalf("import left %s in ingest/ (err %v)", e.Name(), ierr)
			}
		}
	})
}

// FuzzParseReference: any string either parses to a name whose canonical
// form parses to itself, or fails with an error in the store's terms.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"busybox", "docker.io/library/busybox:1.36", "http://127.0.0.1:5000/a:1", "HTTPS://r.example.com/a", "r:5000/team/app@sha256:" + strings.Repeat("a", 64), "UPPER/case", "a:b:c", "", "http://"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		r, err := image.ParseReference(ref)
		if err != nil {
			if strings.Contains(err.Error(), "name.Insecure") {
				t.Errorf("error names go-containerregistry's API: %v", err)
			}
			return
		}
		c := image.CanonicalName(r)
		r2, err := image.ParseReference(c)
		if err != nil || image.CanonicalName(r2) != c {
			t.Errorf("%q -> canonical %q -> %v (%v)", ref, c, r2, err)
		}
	})
}
