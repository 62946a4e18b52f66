// Package builtin makes Nexus's built-in image: the static nexus binary
// itself, packaged as a one-layer OCI image whose entrypoint is
// `nexus hello`, a small HTTP server that reports where it runs. Demos and
// tests start real containers from it without a registry or network access.
//
// The image is reproducible: the same executable always gives the same
// digest, because every timestamp in it is fixed (the Unix epoch, as ko and
// other reproducible image builders do) and the layer is written in a fixed
// order.
package builtin

import (
	"archive/tar"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	goruntime "runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"nexus.dev/nexus/internal/buildinfo"
	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/internal/hello"
)

// Reference names the built-in image. The .local domain is reserved for
// local use (RFC 6762), so it never collides with a real registry.
const Reference = "nexus.local/hello:latest"

// Port is the port the image's server listens on (its PORT variable).
const Port = 8080

// ExePath is where the executable lies inside the image.
const ExePath = "/nexus"

// epoch is every timestamp in the image: fixed, so the digest depends on
// the executable only.
var epoch = time.Unix(0, 0).UTC()

// passwd and group give the image root and nobody, the user it runs as.
const (
	passwd = "root:x:0:0:root:/:/nexus\nnobody:x:65534:65534:nobody:/nonexistent:/nexus\n"
	group  = "root:x:0:\nnogroup:x:65534:\n"
)

// Image packages the executable at exe (normally os.Executable() of a static
// `nexus` build) as a single-layer OCI image for runtime.GOOS/GOARCH:
//
//   - /nexus (0755, root), /etc/passwd and /etc/group with root and nobody,
//     /tmp (1777), and a link to /nexus for each applet (hello.AppletNames:
//     the executable called by such a name runs that applet);
//   - entrypoint ["/nexus", "hello"], PATH=/ and PORT=8080, port 8080/tcp
//     exposed, user 65534:65534 (nobody: the server needs no privilege for
//     a port above 1024), working directory /, stop signal SIGTERM;
//   - labels org.opencontainers.image.title and .version (the version of
//     the running nexus, which is exe itself in normal use).
//
// It refuses an exe that is not a static ELF executable for this machine:
// a dynamically linked one would not start in an image with no libraries.
//
// The layer is streamed from exe each time it is read (its digests, then
// its content), never held in memory: a 40 MB binary held twice (the file
// and the layer) left `nexus up` 120 MB larger for good after its first
// container of this image (bench/orchestration). Each read checks that exe
// is still the file it was (device, inode, size, modification and change
// times), so every read gives the same bytes.
func Image(exe string) (v1.Image, error) {
	f, err := os.Open(exe)
	if err != nil {
		return nil, fmt.Errorf("built-in image: read executable: %w", err)
	}
	defer f.Close()
	id, err := fsutil.IdentityOf(f)
	if err != nil {
		return nil, fmt.Errorf("built-in image: read executable: %w", err)
	}
	if err := checkStatic(exe, f); err != nil {
		return nil, fmt.Errorf("built-in image: %w", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return openLayer(exe, id)
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("built-in image: make layer: %w", err)
	}

	info := buildinfo.Read()
	cfg := &v1.ConfigFile{
		Architecture: goruntime.GOARCH,
		OS:           goruntime.GOOS,
		Created:      v1.Time{Time: epoch},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint:   []string{ExePath, "hello"},
			Env:          []string{"PATH=/", fmt.Sprintf("PORT=%d", Port)},
			ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", Port): {}},
			User:         "65534:65534",
			WorkingDir:   "/",
			StopSignal:   "SIGTERM",
			Labels: map[string]string{
				"org.opencontainers.image.title":       "nexus hello",
				"org.opencontainers.image.description": "the nexus binary running `nexus hello`, an HTTP server that reports its hostname, addresses and request count",
				"org.opencontainers.image.version":     info.Version,
			},
		},
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, fmt.Errorf("built-in image: set config: %w", err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "nexus built-in image: " + ExePath},
	})
	if err != nil {
		return nil, fmt.Errorf("built-in image: add layer: %w", err)
	}
	return img, nil
}

// elfMachines maps the architectures Nexus is built for to their ELF machine.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "386": elf.EM_386, "arm": elf.EM_ARM,
	"riscv64": elf.EM_RISCV, "ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390, "loong64": elf.EM_LOONGARCH,
}

// checkStatic makes sure data is an ELF executable for this machine that
// needs no dynamic loader (no PT_INTERP program header).
func checkStatic(name string, data io.ReaderAt) error {
	f, err := elf.NewFile(data)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			return fmt.Errorf("%s is not an ELF executable (%v): give the path of a nexus binary", name, err)
		}
		return fmt.Errorf("read ELF header of %s: %w", name, err)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("%s is an ELF %s, not an executable: give the path of a nexus binary", name, f.Type)
	}
	if m, ok := elfMachines[goruntime.GOARCH]; ok && f.Machine != m {
		return fmt.Errorf("%s is built for %s, but this image is for %s/%s: build nexus for this machine", name, f.Machine, goruntime.GOOS, goruntime.GOARCH)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked and would not start in an image without libraries: build nexus with CGO_ENABLED=0 (make build)", name)
		}
	}
	return nil
}

// openLayer streams the image's only layer, with the executable read from
// exe, which must still be the file id describes.
func openLayer(exe string, id fsutil.Identity) (io.ReadCloser, error) {
	f, err := os.Open(exe)
	if err != nil {
		return nil, fmt.Errorf("built-in image: read executable: %w", err)
	}
	if now, err := fsutil.IdentityOf(f); err != nil || now != id {
		f.Close()
		return nil, fmt.Errorf("built-in image: %s changed while the image was made from it: try again", exe)
	}
	pr, pw := io.Pipe()
	go func() {
		defer f.Close()
		err := writeLayer(pw, io.NewSectionReader(f, 0, id.Size), id.Size)
		if err == nil {
			if now, ierr := fsutil.IdentityOf(f); ierr != nil || now != id {
				err = fmt.Errorf("built-in image: %s changed while the image was made from it: try again", exe)
			}
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}

// writeLayer writes the image's only layer to w, with size bytes of exe as
// the executable.
func writeLayer(w io.Writer, exe io.Reader, size int64) error {
	tw := tar.NewWriter(w)
	type entry struct {
		hdr  tar.Header
		data io.Reader
		size int64
	}
	entries := []entry{
		{tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755}, nil, 0},
		{tar.Header{Typeflag: tar.TypeReg, Name: "etc/group", Mode: 0o644}, strings.NewReader(group), int64(len(group))},
		{tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644}, strings.NewReader(passwd), int64(len(passwd))},
		{tar.Header{Typeflag: tar.TypeReg, Name: ExePath[1:], Mode: 0o755}, exe, size},
		{tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}, nil, 0},
	}
	for _, a := range hello.AppletNames() {
		entries = append(entries, entry{tar.Header{Typeflag: tar.TypeSymlink, Name: a, Linkname: ExePath[1:], Mode: 0o777}, nil, 0})
	}
	for _, e := range entries {
		h := e.hdr
		h.Size = e.size
		h.ModTime = epoch
		h.Uname, h.Gname = "root", "root"
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return err
		}
		if e.data != nil {
			if _, err := io.Copy(tw, e.data); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}
