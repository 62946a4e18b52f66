package builtin

import (
	"archive/tar"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var (
	staticOnce sync.Once
	staticExe  string
	staticErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if staticExe != "" {
		os.RemoveAll(filepath.Dir(staticExe))
	}
	os.Exit(code)
}

// testExe returns a small static executable, built once per test binary.
func testExe(t *testing.T) string {
	t.Helper()
	staticOnce.Do(func() {
		dir, err := os.MkdirTemp("", "builtin-exe")
		if err != nil {
			staticErr = err
			return
		}
		os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module staticexe\n\ngo 1.21\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() { println(\"static\") }\n"), 0o644)
		staticExe = filepath.Join(dir, "static")
		cmd := exec.Command("go", "build", "-o", staticExe, ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOFLAGS=-buildvcs=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			staticErr = errors.New(string(out))
		}
	})
	if staticErr != nil {
		t.Fatalf("build a static test executable: %v", staticErr)
	}
	return staticExe
}

func TestImageIsReproducible(t *testing.T) {
	exe := testExe(t)
	a, err := Image(exe)
	if err != nil {
		t.Fatal(err)
	}
	// A copy with another name and mtime is the same executable.
	cp := filepath.Join(t.TempDir(), "copy")
	data, _ := os.ReadFile(exe)
	os.WriteFile(cp, data, 0o700)
	b, err := Image(cp)
	if err != nil {
		t.Fatal(err)
	}
	da, err := a.Digest()
	if err != nil {
		t.Fatal(err)
	}
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("two images of the same executable differ: %s and %s", da, db)
	}
	// A different executable gives a different image.
	other := filepath.Join(t.TempDir(), "other")
	os.WriteFile(other, append(data, 0), 0o700)
	c, err := Image(other)
	if err != nil {
		t.Fatal(err)
	}
	if dc, _ := c.Digest(); dc == da {
		t.Fatal("a different executable gave the same digest")
	}
}

func TestImageConfig(t *testing.T) {
	img, err := Image(testExe(t))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if !slices.Equal(c.Entrypoint, []string{"/nexus", "hello"}) || len(c.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
	}
	if !slices.Equal(c.Env, []string{"PATH=/", "PORT=8080"}) || c.User != "65534:65534" || c.WorkingDir != "/" {
		t.Errorf("env %q user %q workdir %q", c.Env, c.User, c.WorkingDir)
	}
	if _, ok := c.ExposedPorts["8080/tcp"]; !ok || len(c.ExposedPorts) != 1 {
		t.Errorf("exposed ports %v", c.ExposedPorts)
	}
	if c.Labels["org.opencontainers.image.title"] == "" || c.Labels["org.opencontainers.image.version"] == "" {
		t.Errorf("labels %v", c.Labels)
	}
	if cf.OS != goruntime.GOOS || cf.Architecture != goruntime.GOARCH || cf.Created.Unix() != 0 {
		t.Errorf("platform %s/%s created %v", cf.OS, cf.Architecture, cf.Created)
	}
	if len(cf.RootFS.DiffIDs) != 1 || len(cf.History) != 1 {
		t.Errorf("rootfs %+v history %+v", cf.RootFS, cf.History)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
		t.Errorf("manifest %+v", m)
	}
}

type tarEntry struct {
	mode       int64
	typ        byte
	uid, gid   int
	data, link string
}

// layerFiles lists the only layer of img by name.
func layerFiles(t *testing.T, img v1.Image) map[string]tarEntry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]tarEntry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		if h.ModTime.Unix() != 0 {
			t.Errorf("%s has mtime %v, not the fixed epoch", h.Name, h.ModTime)
		}
		files[h.Name] = tarEntry{h.Mode, h.Typeflag, h.Uid, h.Gid, string(data), h.Linkname}
	}
	return files
}

func TestLayerHoldsExecutableAndAccounts(t *testing.T) {
	exe := testExe(t)
	img, err := Image(exe)
	if err != nil {
		t.Fatal(err)
	}
	files := layerFiles(t, img)
	var names []string
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	if want := []string{"etc/", "etc/group", "etc/passwd", "fetch", "hostname", "nexus", "resolve", "tmp/"}; !slices.Equal(names, want) {
		t.Fatalf("layer lists %q, want %q", names, want)
	}
	data, _ := os.ReadFile(exe)
	if f := files["nexus"]; f.typ != tar.TypeReg || f.mode != 0o755 || f.uid != 0 || f.data != string(data) {
		t.Errorf("/nexus: type %c mode %o uid %d, %d bytes", f.typ, f.mode, f.uid, len(f.data))
	}
	for _, applet := range []string{"fetch", "hostname"} {
		if f := files[applet]; f.typ != tar.TypeSymlink || f.link != "nexus" {
			t.Errorf("/%s: type %c, link %q: want a link to nexus", applet, f.typ, f.link)
		}
	}
	if f := files["tmp/"]; f.typ != tar.TypeDir || f.mode != 0o1777 {
		t.Errorf("/tmp: type %c mode %o", f.typ, f.mode)
	}
	for _, want := range []string{"root:x:0:0:", "nobody:x:65534:65534:"} {
		if !strings.Contains(files["etc/passwd"].data, want) {
			t.Errorf("/etc/passwd lacks %q", want)
		}
	}
	if !strings.Contains(files["etc/group"].data, ":65534:") {
		t.Errorf("/etc/group lacks group 65534: %q", files["etc/group"].data)
	}
}

func TestImageRefusesWhatCannotRun(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "script")
	os.WriteFile(text, []byte("#!/bin/sh\necho hi\n"), 0o755)
	// A relocatable object and a binary for another machine: the static
	// executable with its ELF type or machine changed.
	exe := testExe(t)
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	order := f.ByteOrder
	f.Close()
	other := elf.EM_X86_64
	if elfMachines[goruntime.GOARCH] == elf.EM_X86_64 {
		other = elf.EM_AARCH64
	}
	object := patchELF(t, exe, filepath.Join(dir, "object"), 16, order, uint16(elf.ET_REL))
	foreign := patchELF(t, exe, filepath.Join(dir, "foreign"), 18, order, uint16(other))
	tests := []struct {
		name, exe, want string
	}{
		{"missing", filepath.Join(dir, "missing"), "no such file"},
		{"not ELF", text, "is not an ELF executable"},
		{"not executable", object, "is an ELF ET_REL, not an executable"},
		{"other machine", foreign, "build nexus for this machine"},
	}
	if p, err := exec.LookPath("true"); err == nil && isDynamic(p) {
		tests = append(tests, struct{ name, exe, want string }{"dynamic", p, "build nexus with CGO_ENABLED=0 (make build)"})
	} else {
		t.Log("no dynamically linked `true` here: the dynamic case is not tested")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Image(tt.exe); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// patchELF copies the ELF file src to dst with the 16-bit header field at
// off (16 is e_type, 18 e_machine) set to v.
func patchELF(t *testing.T, src, dst string, off int, order binary.ByteOrder, v uint16) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	order.PutUint16(data[off:], v)
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// isDynamic reports whether the ELF file at path asks for a dynamic loader.
func isDynamic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}
