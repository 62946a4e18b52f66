package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/runtime/image"
	"nexus.dev/nexus/runtime/image/imagetest"
)

func TestImageCLIEndToEnd(t *testing.T) {
	reg := imagetest.NewRegistry(t, imagetest.RegistryOptions{User: "bob", Password: "pw"})
	imagetest.DockerConfig(t, reg.Host, "bob", "pw")
	img := imagetest.Image(t, "linux/"+goruntime.GOARCH, v1.Config{Entrypoint: []string{"/bin/app"}, Cmd: []string{"--serve"}, ExposedPorts: map[string]struct{}{"80/tcp": {}}},
		imagetest.Layer(t, map[string]imagetest.File{"bin/app": {Content: "app", Mode: 0o755}}),
		imagetest.Layer(t, map[string]imagetest.File{"etc/app.conf": {Content: strings.Repeat("conf ", 100000)}}))
	ref := reg.Push(t, "team/app:1", img)
	dataDir := t.TempDir()
	nexus := func(args ...string) string {
		t.Helper()
		out, err := run(t, append([]string{"--data-dir", dataDir, "image"}, args...)...)
		if err != nil {
			t.Fatalf("nexus image %v: %v\n%s", args, err, out)
		}
		return out
	}

	out := nexus("pull", ref)
	_, layers := imagetest.Digests(t, img)
	for _, l := range layers {
		short := "sha256:" + l.Hex[:12]
		if !strings.Contains(out, "pulling layer "+short) || !strings.Contains(out, "done layer "+short) {
			t.Errorf("pull output lacks progress lines for %s:\n%s", short, out)
		}
	}
	if !strings.Contains(out, "Pulled "+ref) {
		t.Errorf("pull output lacks the result:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "images", "meta.db")); err != nil {
		t.Errorf("the store is not in <data-dir>/images: %v", err)
	}

	out = nexus("ls")
	if !strings.Contains(out, "NAME") || !strings.Contains(out, ref) {
		t.Errorf("ls:\n%s", out)
	}
	var listed []image.Image
	if err := json.Unmarshal([]byte(nexus("ls", "-o", "json")), &listed); err != nil || len(listed) != 1 {
		t.Fatalf("ls -o json: %v %v", listed, err)
	}
	digest, _ := img.Digest()
	if listed[0].Digest != digest {
		t.Errorf("listed digest %s, want %s", listed[0].Digest, digest)
	}

	var details []image.Details
	if err := json.Unmarshal([]byte(nexus("inspect", listed[0].ID[:8], "-o", "json")), &details); err != nil || len(details) != 1 {
		t.Fatalf("inspect -o json: %v %v", details, err)
	}
	d := details[0]
	if len(d.Layers) != 2 || d.RunConfig.Entrypoint[0] != "/bin/app" || d.RunConfig.ExposedPorts[0] != "80/tcp" || !d.Layers[1].Unpacked {
		t.Errorf("inspect: %+v", d)
	}
	out = nexus("inspect", ref)
	for _, want := range []string{"Digest:", digest.String(), `Entrypoint:`, `"/bin/app"`, "Layers:", layers[1].String()} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect lacks %q:\n%s", want, out)
		}
	}

	// A docker save archive of the same image, imported under another name.
	archive := filepath.Join(t.TempDir(), "app.tar")
	writeDockerArchive(t, archive, img)
	out = nexus("import", "--name", "example.com/imported:2", archive)
	if !strings.Contains(out, "Imported example.com/imported:2") {
		t.Errorf("import:\n%s", out)
	}

	out = nexus("rm", ref)
	if !strings.Contains(out, "Removed "+ref) {
		t.Errorf("rm:\n%s", out)
	}
	// The imported image shares every layer: prune frees nothing of them.
	var rep image.PruneReport
	if err := json.Unmarshal([]byte(nexus("prune", "-o", "json")), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Snapshots) != 0 {
		t.Errorf("prune removed layers still in use: %+v", rep)
	}
	nexus("rm", "example.com/imported:2")
	out = nexus("prune")
	if !strings.Contains(out, "Deleted") || !strings.Contains(out, "2 unpacked layers") {
		t.Errorf("prune:\n%s", out)
	}
	if out := nexus("ls", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("ls after rm: %s", out)
	}
}

func writeDockerArchive(t *testing.T, path string, img v1.Image) {
	t.Helper()
	data := imagetest.DockerSave(t, "example.com/saved:1", img)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestImageCLIErrors(t *testing.T) {
	dataDir := t.TempDir()
	otherPlatform := "linux/arm64"
	if goruntime.GOARCH == "arm64" {
		otherPlatform = "linux/amd64"
	}
	// An address where no registry answers, as on a machine without network.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := closed.Addr().String()
	closed.Close()
	tests := []struct {
		args   []string
		want   string
		absent string // a word the error must not have
	}{
		{[]string{"image", "ls", "-o", "yaml"}, "unknown output format", ""},
		{[]string{"image", "pull", "Not A Ref"}, "invalid image reference", ""},
		{[]string{"image", "pull", "--platform", "linux/amd64/v1/x/y", "busybox"}, "--platform", ""},
		{[]string{"image", "import", "--platform", "linux/amd64/v1/x/y", "x.tar"}, "--platform", ""},
		{[]string{"image", "pull", "--platform", otherPlatform, "nexus.local/hello"}, "drop --platform", ""},
		{[]string{"image", "pull", "-o", "yaml", "busybox"}, "unknown output format", ""},
		{[]string{"image", "prune", "-o", "xml"}, "unknown output format", ""},
		{[]string{"image", "inspect", "busybox"}, "nexus image pull busybox", ""},
		{[]string{"image", "rm", "busybox"}, "not in the image store", ""},
		{[]string{"image", "import", filepath.Join(dataDir, "missing.tar")}, "no such file", ""},
		{[]string{"image", "pull", "http://127.0.0.1:5000/team/app:1"}, "needs --insecure", "name.Insecure"},
		{[]string{"image", "pull", "HTTPS://registry.example.com/app:1"}, "e.g. registry.example.com/app:1", "name.Insecure"},
		{[]string{"image", "pull", nowhere + "/library/busybox"}, "`nexus image import FILE`", ""},
		{[]string{"image", "pull", nowhere + "/library/busybox"}, "nexus image pull nexus.local/hello", ""},
	}
	for _, tt := range tests {
		out, err := run(t, append([]string{"--data-dir", dataDir}, tt.args...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.absent != "" && strings.Contains(err.Error(), tt.absent)) {
			t.Errorf("%v: err = %v, want %q without %q\n%s", tt.args, err, tt.want, tt.absent, out)
		}
	}
}

func TestImageHelpHasExamples(t *testing.T) {
	for _, sub := range []string{"ls", "pull", "import", "inspect", "rm", "prune", "release"} {
		out, err := run(t, "image", sub, "--help")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "Examples:") || !strings.Contains(out, "nexus image "+sub) || !strings.Contains(out, "--root") {
			t.Errorf("image %s --help lacks examples or --root:\n%s", sub, out)
		}
	}
}

func TestImagePullProgressPlainLines(t *testing.T) {
	var buf bytes.Buffer
	p := newPullProgress(&buf)
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	d := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	step := func(after time.Duration, state image.ProgressState, done int64) {
		now = now.Add(after)
		p.event(image.ProgressEvent{Digest: d, Kind: "layer", State: state, Done: done, Total: 40 << 20})
	}
	step(0, image.StateWaiting, 0)
	step(0, image.StateDownloading, 1<<20)
	step(500*time.Millisecond, image.StateDownloading, 6<<20)  // within a second: no line
	step(600*time.Millisecond, image.StateDownloading, 12<<20) // a second later: a line
	step(100*time.Millisecond, image.StateDone, 40<<20)
	step(100*time.Millisecond, image.StateUnpacked, 40<<20)
	p.finish()
	want := "pulling layer sha256:abababababab 1.0 MiB/40.0 MiB\n" +
		"pulling layer sha256:abababababab 12.0 MiB/40.0 MiB\n" +
		"done layer sha256:abababababab (40.0 MiB)\n" +
		"unpacked layer sha256:abababababab (40.0 MiB)\n"
	if buf.String() != want {
		t.Errorf("progress lines:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestImagePullProgressTerminal(t *testing.T) {
	var buf bytes.Buffer
	p := newPullProgress(&buf)
	p.tty = true
	a := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}
	b := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("b", 64)}
	p.event(image.ProgressEvent{Digest: a, Kind: "layer", State: image.StateDownloading, Done: 1 << 20, Total: 2 << 20})
	p.event(image.ProgressEvent{Digest: b, Kind: "layer", State: image.StateExists, Done: 3 << 20, Total: 3 << 20})
	p.event(image.ProgressEvent{Digest: a, Kind: "layer", State: image.StateUnpacked, Done: 2 << 20, Total: 2 << 20})
	p.finish()
	out := buf.String()
	// Each redraw moves up over the previous one (two blobs + the total).
	if !strings.Contains(out, "\x1b[3A") {
		t.Errorf("no redraw in %q", out)
	}
	last := out[strings.LastIndex(out, "\x1b[3A"):]
	for _, want := range []string{"layer sha256:aaaaaaaaaaaa  unpacked", "layer sha256:bbbbbbbbbbbb  exists", "total  1/2 blobs  5.0 MiB/5.0 MiB"} {
		if !strings.Contains(last, want) {
			t.Errorf("final frame lacks %q:\n%q", want, last)
		}
	}
}

// TestImagePullBuiltin: the built-in image comes from the binary itself, with
// no registry, and pulling it again reuses what is stored.
func TestImagePullBuiltin(t *testing.T) {
	bin := nexusBinary(t)
	dir := t.TempDir()
	for i, platform := range []string{"", "linux/" + goruntime.GOARCH} {
		args := []string{"--data-dir", dir, "image", "pull", "-q", "-o", "json", "nexus.local/hello"}
		if platform != "" {
			args = append(args, "--platform", platform) // this machine's is the built-in image's own
		}
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("pull %d: %v: %s", i, err, out)
		}
		var img struct{ Name, Digest string }
		if err := json.Unmarshal(out, &img); err != nil {
			t.Fatalf("pull -o json printed %q: %v", out, err)
		}
		if img.Name != "nexus.local/hello:latest" || !strings.HasPrefix(img.Digest, "sha256:") {
			t.Fatalf("pulled %+v, want nexus.local/hello:latest with a digest", img)
		}
	}
	out, err := exec.Command(bin, "--data-dir", dir, "image", "inspect", "nexus.local/hello:latest").CombinedOutput()
	if err != nil {
		t.Fatalf("inspect: %v: %s", err, out)
	}
	if !strings.Contains(string(out), `["/nexus", "hello"]`) {
		t.Errorf("inspect does not show the hello entrypoint:\n%s", out)
	}
}

// TestImageRmNamesTheRelease: an image a prepared container uses (one left
// behind by a killed process, say) is refused by image rm with the command
// that releases the container; after that release, rm removes it.
func TestImageRmNamesTheRelease(t *testing.T) {
	testutil.RequireRoot(t) // Prepare mounts the container's overlay
	dataDir := t.TempDir()
	const ref, id = "example.com/app:1", "left-behind"
	img := imagetest.Image(t, "linux/"+goruntime.GOARCH, v1.Config{Cmd: []string{"/bin/app"}},
		imagetest.Layer(t, map[string]imagetest.File{"bin/app": {Content: "app", Mode: 0o755}}))
	s, err := image.Open(image.Config{Root: filepath.Join(dataDir, "images")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.ImportImage(ctx, ref, img); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, ref, id, image.PrepareOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Close() // the commands below open the store themselves
	t.Cleanup(func() {
		if s, err := image.Open(image.Config{Root: filepath.Join(dataDir, "images")}); err == nil {
			_ = s.Release(context.Background(), id)
			s.Close()
		}
	})

	out, err := run(t, "--data-dir", dataDir, "image", "rm", ref)
	if err == nil || !strings.Contains(err.Error(), "prepared container(s) "+id) || !strings.Contains(err.Error(), "`nexus image release "+id+"`") {
		t.Fatalf("image rm of an image a prepared container uses: %v, want a refusal naming `nexus image release %s`\n%s", err, id, out)
	}
	if out, err := run(t, "--data-dir", dataDir, "image", "release", id); err != nil || !strings.Contains(out, id) {
		t.Fatalf("image release %s: %v\n%s", id, err, out)
	}
	if out, err := run(t, "--data-dir", dataDir, "image", "rm", ref); err != nil || !strings.Contains(out, "Removed "+ref) {
		t.Fatalf("image rm after the release: %v\n%s", err, out)
	}
}
