// Package imagetest gives image tests a registry and images without a
// network: an in-process OCI registry (go-containerregistry's
// pkg/registry) behind middleware that can demand basic auth, count blob
// downloads, corrupt or stall a blob; and small deterministic images,
// including one that carries a static busybox so it can run.
package imagetest

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"nexus.dev/nexus/internal/testrootfs"
	"nexus.dev/nexus/internal/testutil"
)

// RegistryOptions configures NewRegistry.
type RegistryOptions struct {
	// User and Password, when set, are required on every request (basic auth).
	User, Password string
}

// Registry is an in-process registry for one test.
type Registry struct {
	// Host is host:port, the registry part of references.
	Host string

	opts  RegistryOptions
	inner http.Handler

	mu      sync.Mutex
	gets    map[string]int
	corrupt map[string]bool
	delay   map[string]time.Duration
	stalls  map[string]*Stall
}

// Stall holds a blob's download after half its bytes.
type Stall struct {
	// Reached is closed when a download has sent half the blob.
	Reached chan struct{}
	release chan struct{}
	once    sync.Once
}

// Release lets held and later downloads finish.
func (s *Stall) Release() { s.once.Do(func() { close(s.release) }) }

var blobPath = regexp.MustCompile(`^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})$`)

// NewRegistry starts a registry that stops when the test ends.
func NewRegistry(t testing.TB, o RegistryOptions) *Registry {
	t.Helper()
	r := &Registry{
		opts:    o,
		inner:   registry.New(registry.Logger(log.New(io.Discard, "", 0))),
		gets:    map[string]int{},
		corrupt: map[string]bool{},
		delay:   map[string]time.Duration{},
		stalls:  map[string]*Stall{},
	}
	srv := httptest.NewServer(r)
	t.Cleanup(func() {
		r.mu.Lock()
		for _, s := range r.stalls {
			s.Release()
		}
		r.mu.Unlock()
		srv.Close()
	})
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.opts.User != "" {
		u, p, ok := req.BasicAuth()
		if !ok || u != r.opts.User || p != r.opts.Password {
			w.Header().Set("WWW-Authenticate", `Basic realm="imagetest"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
	}
	m := blobPath.FindStringSubmatch(req.URL.Path)
	if m == nil || req.Method != http.MethodGet {
		r.inner.ServeHTTP(w, req)
		return
	}
	digest := m[2]
	r.mu.Lock()
	r.gets[digest]++
	corrupt, delay, stall := r.corrupt[digest], r.delay[digest], r.stalls[digest]
	r.mu.Unlock()

	rec := httptest.NewRecorder()
	r.inner.ServeHTTP(rec, req)
	body := rec.Body.Bytes()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	if rec.Code != http.StatusOK {
		w.WriteHeader(rec.Code)
		w.Write(body)
		return
	}
	if corrupt && len(body) > 0 {
		body = bytes.Clone(body)
		body[len(body)/2] ^= 0xff
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-req.Context().Done():
			return
		}
	}
	if stall != nil {
		half := len(body) / 2
		w.Write(body[:half])
		w.(http.Flusher).Flush()
		select {
		case <-stall.Reached:
		default:
			close(stall.Reached)
		}
		select {
		case <-stall.release:
		case <-req.Context().Done():
			return
		}
		body = body[half:]
	}
	w.Write(body)
}

// BlobGets is how many times blob d was downloaded.
func (r *Registry) BlobGets(d v1.Hash) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gets[d.String()]
}

// Corrupt makes downloads of blob d flip one byte (or stop doing so).
func (r *Registry) Corrupt(d v1.Hash, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.corrupt[d.String()] = on
}

// Delay makes downloads of blob d wait before sending the body.
func (r *Registry) Delay(d v1.Hash, delay time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delay[d.String()] = delay
}

// Stall makes downloads of blob d stop after half the bytes until the
// returned Stall is released.
func (r *Registry) Stall(d v1.Hash) *Stall {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &Stall{Reached: make(chan struct{}), release: make(chan struct{})}
	r.stalls[d.String()] = s
	return s
}

// Ref is a reference to repoTag ("team/app:1") in this registry.
func (r *Registry) Ref(repoTag string) string { return r.Host + "/" + repoTag }

func (r *Registry) pushOptions() []remote.Option {
	auth := authn.Anonymous
	if r.opts.User != "" {
		auth = &authn.Basic{Username: r.opts.User, Password: r.opts.Password}
	}
	return []remote.Option{remote.WithAuth(auth)}
}

// Push uploads img as repoTag and returns its reference.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(r.Ref(repoTag))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, r.pushOptions()...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref.String()
}

// PushIndex uploads a multi-platform index as repoTag.
func (r *Registry) PushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) string {
	t.Helper()
	ref, err := name.ParseReference(r.Ref(repoTag))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, r.pushOptions()...); err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
	return ref.String()
}

// File is one entry of a test layer.
type File struct {
	Content string
	Mode    int64  // 0 means 0644 (0755 for directories)
	Link    string // symlink target; makes the entry a symlink
	Dir     bool
}

// LayerTar returns an uncompressed tar of files (path -> entry), written in
// name order with fixed times, so equal input gives equal digests.
func LayerTar(t testing.TB, files map[string]File) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	epoch := time.Unix(0, 0)
	for _, n := range names {
		f := files[n]
		hdr := &tar.Header{Name: n, ModTime: epoch, Mode: f.Mode, Format: tar.FormatPAX}
		switch {
		case f.Dir:
			hdr.Typeflag = tar.TypeDir
			if hdr.Mode == 0 {
				hdr.Mode = 0o755
			}
		case f.Link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.Link, 0o777
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.Content))
			if hdr.Mode == 0 {
				hdr.Mode = 0o644
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f.Content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Layer is a gzip layer of files.
func Layer(t testing.TB, files map[string]File) v1.Layer {
	t.Helper()
	data := LayerTar(t, files)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Image is an image of layers (bottom-most first) for platform
// ("linux/amd64") with run configuration cfg.
func Image(t testing.TB, platform string, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		t.Fatal(err)
	}
	cf := &v1.ConfigFile{
		OS: p.OS, Architecture: p.Architecture, Variant: p.Variant,
		Created: v1.Time{Time: time.Unix(1700000000, 0).UTC()},
		RootFS:  v1.RootFS{Type: "layers"},
		Config:  cfg,
	}
	img, err := mutate.ConfigFile(empty.Image, cf)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Index is a multi-platform index of imgs; each entry's platform is its
// config's.
func Index(t testing.TB, imgs ...v1.Image) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		mt, err := img.MediaType()
		if err != nil {
			t.Fatal(err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			MediaType: mt,
			Platform:  &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
		}})
	}
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
}

// BusyboxLayer is a layer with Debian's static busybox as /bin/busybox and
// the directories a container needs. It skips the test when busybox is
// not installed.
func BusyboxLayer(t testing.TB) v1.Layer {
	t.Helper()
	bb, err := testrootfs.FindBusybox()
	if err != nil {
		testutil.Missing(t, "%v", err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]File{
		"bin/busybox": {Content: string(data), Mode: 0o755},
		"bin/sh":      {Link: "busybox"},
		"etc/passwd":  {Content: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
		"etc/group":   {Content: "root:x:0:\nnogroup:x:65534:\n"},
	}
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "root"} {
		files[d] = File{Dir: true}
	}
	files["tmp"] = File{Dir: true, Mode: 0o1777}
	return Layer(t, files)
}

// DockerConfig writes a Docker config.json with credentials for host and
// points $DOCKER_CONFIG at it for the rest of the test.
func DockerConfig(t testing.TB, host, user, password string) {
	t.Helper()
	dir := t.TempDir()
	cfg := map[string]any{"auths": map[string]any{
		host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password))},
	}}
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
}

// Digests returns the digests of img's config and layers.
func Digests(t testing.TB, img v1.Image) (config v1.Hash, layers []v1.Hash) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		layers = append(layers, l.Digest)
	}
	return m.Config.Digest, layers
}

// DockerSave returns img as a `docker save` archive tagged ref.
func DockerSave(t testing.TB, ref string, img v1.Image) []byte {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tarball.Write(r, img, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
