package image_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/runtime/image"
	"nexus.dev/nexus/runtime/image/imagetest"
	"nexus.dev/nexus/runtime/image/snapshot"
)

// nexusBin is the binary `make test` built; tests that run containers
// through `nexus runtime` need it.
func nexusBin(t *testing.T) string {
	t.Helper()
	return testutil.NexusBin(t)
}

// runBundle runs a prepared bundle to completion with `nexus runtime run`
// and returns its output and exit code.
func runBundle(t *testing.T, bin, bundleDir, id string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rtRoot := t.TempDir()
	t.Cleanup(func() { _ = exec.Command(bin, "runtime", "--root", rtRoot, "delete", "--force", id).Run() })
	out, err := exec.CommandContext(ctx, bin, "runtime", "--root", rtRoot, "run", "--bundle", bundleDir, id).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("nexus runtime run: %v: %s", err, out)
	return "", 0
}

func TestPulledImageRunsToCompletion(t *testing.T) {
	testutil.RequireRoot(t)
	bin := nexusBin(t)
	reg := imagetest.NewRegistry(t, imagetest.RegistryOptions{})
	img := imagetest.Image(t, thisArch(), v1.Config{Cmd: []string{"/bin/busybox", "sh", "-c", "echo hello-from-image; echo $GREETING; exit 3"}, Env: []string{"GREETING=from-config"}},
		imagetest.BusyboxLayer(t),
		imagetest.Layer(t, map[string]imagetest.File{"etc/motd": {Content: "second layer"}}))
	ref := reg.Push(t, "busybox:run", img)
	s := openStore(t)
	ctx := context.Background()
	if _, err := s.Pull(ctx, ref, image.PullOptions{}); err != nil {
		t.Fatal(err)
	}
	const id = "image-run-test"
	bundleDir, err := s.Prepare(ctx, ref, id, image.PrepareOptions{Hostname: "from-image"})
	if err != nil {
		t.Fatal(err)
	}
	released := false
	t.Cleanup(func() {
		if !released {
			_ = s.Release(context.Background(), id)
		}
	})
	var spec specs.Spec
	data, err := os.ReadFile(filepath.Join(bundleDir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Root.Path != filepath.Join(bundleDir, "rootfs") || spec.Hostname != "from-image" {
		t.Fatalf("spec root %q hostname %q", spec.Root.Path, spec.Hostname)
	}
	if data, err := os.ReadFile(filepath.Join(bundleDir, "rootfs/etc/motd")); err != nil || string(data) != "second layer" {
		t.Fatalf("rootfs lacks the second layer: %q %v", data, err)
	}
	if _, err := s.Remove(ctx, ref, image.RemoveOptions{}); err == nil || !strings.Contains(err.Error(), id) {
		t.Fatalf("remove of an image in use: %v", err)
	}

	out, code := runBundle(t, bin, bundleDir, id)
	if code != 3 || !strings.Contains(out, "hello-from-image") || !strings.Contains(out, "from-config") {
		t.Fatalf("exit %d, output %q; want 3 and the greeting", code, out)
	}

	mounted, err := s.IsMounted(id)
	if err != nil {
		t.Fatal(err)
	}
	if !mounted && snapshot.OverlaySupported() == nil {
		t.Fatal("overlayfs works here but the rootfs is not mounted")
	}
	if err := s.Release(ctx, id); err != nil {
		t.Fatal(err)
	}
	released = true
	if still, _ := s.IsMounted(id); mounted && still {
		t.Fatal("the rootfs is still mounted after Release")
	}
	if _, err := os.Stat(bundleDir); !os.IsNotExist(err) {
		t.Fatalf("Release left the bundle: %v", err)
	}
	// Released, the image can go and GC takes everything.
	if _, err := s.Remove(ctx, ref, image.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Blobs) != 4 || len(rep.Snapshots) != 2 {
		t.Fatalf("prune after release removed %d blobs and %d snapshots, want 4 and 2", len(rep.Blobs), len(rep.Snapshots))
	}
}

func TestPreparedContainerKeepsItsLayers(t *testing.T) {
	testutil.RequireRoot(t)
	s := openStore(t)
	ctx := context.Background()
	img := imagetest.Image(t, thisArch(), v1.Config{Cmd: []string{"/bin/true"}},
		imagetest.Layer(t, map[string]imagetest.File{"etc/a": {Content: "a"}}))
	if _, err := s.ImportImage(ctx, "example.com/keep:1", img); err != nil {
		t.Fatal(err)
	}
	bundleDir, err := s.Prepare(ctx, "example.com/keep:1", "keep", image.PrepareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Release(context.Background(), "keep") })
	if _, err := s.Prepare(ctx, "example.com/keep:1", "keep", image.PrepareOptions{}); err == nil || !strings.Contains(err.Error(), "already prepared") {
		t.Fatalf("second prepare with one ID: %v", err)
	}
	if _, err := s.Remove(ctx, "example.com/keep:1", image.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Blobs)+len(rep.Snapshots) != 0 {
		t.Fatalf("prune took the layers of a prepared container: %+v", rep)
	}
	if data, err := os.ReadFile(filepath.Join(bundleDir, "rootfs/etc/a")); err != nil || string(data) != "a" {
		t.Fatalf("rootfs after prune: %q %v", data, err)
	}
	if err := s.Release(ctx, "keep"); err != nil {
		t.Fatal(err)
	}
	if rep, err := s.Prune(ctx); err != nil || len(rep.Blobs) != 3 || len(rep.Snapshots) != 1 {
		t.Fatalf("prune after release: %+v %v", rep, err)
	}
	if _, err := s.Prepare(ctx, "example.com/keep:1", "../escape", image.PrepareOptions{}); err == nil || !strings.Contains(err.Error(), "invalid container ID") {
		t.Fatalf("prepare with a bad ID: %v", err)
	}
}

func TestBuiltinImageRuns(t *testing.T) {
	testutil.RequireRoot(t)
	bin := nexusBin(t)
	s := openStore(t)
	ctx := context.Background()
	img, err := s.EnsureBuiltin(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.EnsureBuiltin(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != img.Digest || !again.Stored.Equal(img.Stored) {
		t.Fatalf("a second EnsureBuiltin imported again: %+v then %+v", img, again)
	}
	const id = "builtin-run-test"
	bundleDir, err := s.Prepare(ctx, img.Name, id, image.PrepareOptions{Entrypoint: []string{}, Args: []string{"/nexus", "version"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Release(context.Background(), id) })
	out, code := runBundle(t, bin, bundleDir, id)
	if code != 0 || !strings.Contains(out, "nexus ") || !strings.Contains(out, "go: ") {
		t.Fatalf("exit %d, output %q; want 0 and the version", code, out)
	}
}

// TestBuiltinImageImportedOnce: containers of the built-in image started
// at once on a new node share one import of it.
func TestBuiltinImageImportedOnce(t *testing.T) {
	bin := nexusBin(t)
	s := openStore(t)
	const n = 8
	imgs := make([]image.Image, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { imgs[i], errs[i] = s.EnsureBuiltin(context.Background(), bin) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("EnsureBuiltin %d: %v", i, errs[i])
		}
		if imgs[i].Digest != imgs[0].Digest || !imgs[i].Stored.Equal(imgs[0].Stored) {
			t.Fatalf("concurrent EnsureBuiltin calls imported more than once: %+v and %+v", imgs[0], imgs[i])
		}
	}
}

// TestBuiltinImageFollowsTheBinary: EnsureBuiltin remembers which binary
// it last read, but a binary that was replaced or written in place (even
// with its size and modification time kept) gives a new image.
func TestBuiltinImageFollowsTheBinary(t *testing.T) {
	src, err := os.ReadFile(nexusBin(t))
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(t.TempDir(), "nexus")
	if err := os.WriteFile(exe, src, 0o755); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	ctx := context.Background()
	ensure := func(what string) image.Image {
		t.Helper()
		img, err := s.EnsureBuiltin(ctx, exe)
		if err != nil {
			t.Fatalf("EnsureBuiltin %s: %v", what, err)
		}
		return img
	}
	first := ensure("first")
	if again := ensure("again"); again.Digest != first.Digest {
		t.Fatalf("the same binary gave %s, then %s", first.Digest, again.Digest)
	}
	// Bytes after the ELF's last section leave it a valid executable.
	f, err := os.OpenFile(exe, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	grown := ensure("after a write")
	if grown.Digest == first.Digest {
		t.Fatalf("a changed binary kept image %s", first.Digest)
	}
	fi, err := os.Stat(exe)
	if err != nil {
		t.Fatal(err)
	}
	f, err = os.OpenFile(exe, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{2}, fi.Size()-1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chtimes(exe, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if same := ensure("after a write that kept size and time"); same.Digest == grown.Digest {
		t.Fatalf("a binary written in place (same size, same modification time) kept image %s", grown.Digest)
	}
}

// prepareAndExit prepares container id from ref in another process, which
// then exits: a preparation whose owner is gone, as a killed agent
// leaves one.
func prepareAndExit(t *testing.T, s *image.Store, ref, id string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), helperEnv+"=prepare:"+s.Root()+"|"+ref+"|"+id)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("prepare %s in another process: %v\n%s", id, err, out)
	}
}

// TestPruneReleasesAbandonedContainers: Prune releases a prepared container
// whose preparing process is gone and on which nothing runs, keeps one whose
// owner lives and one a process still runs on; Release refuses the latter
// with the process that uses it.
func TestPruneReleasesAbandonedContainers(t *testing.T) {
	testutil.RequireRoot(t)
	s := openStore(t)
	ctx := context.Background()
	img := imagetest.Image(t, thisArch(), v1.Config{Cmd: []string{"/bin/sh"}}, imagetest.BusyboxLayer(t))
	if _, err := s.ImportImage(ctx, "example.com/bb:1", img); err != nil {
		t.Fatal(err)
	}
	prepareAndExit(t, s, "example.com/bb:1", "abandoned")
	prepareAndExit(t, s, "example.com/bb:1", "running")
	if _, err := s.Prepare(ctx, "example.com/bb:1", "owned", image.PrepareOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"abandoned", "running", "owned"} {
		t.Cleanup(func() { s.Release(context.Background(), id) })
	}
	// "running": a process whose root is the container's, as a container's
	// init after pivot_root.
	rootfs := filepath.Join(s.Root(), "containers", "running", "rootfs")
	sleeper := exec.Command("/bin/busybox", "sleep", "600")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Chroot: rootfs}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })

	rep, err := s.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Released, []string{"abandoned"}) {
		t.Errorf("prune released %v, want only the abandoned container", rep.Released)
	}
	if m, err := s.IsMounted("abandoned"); err != nil || m {
		t.Errorf("the abandoned container's root file system is still mounted (%v)", err)
	}
	err = s.Release(ctx, "running")
	var inUse *image.ContainerInUseError
	if !errors.As(err, &inUse) || inUse.PID != sleeper.Process.Pid {
		t.Fatalf("release of a container a process runs on: %v, want a ContainerInUseError naming pid %d", err, sleeper.Process.Pid)
	}
	if m, err := s.IsMounted("running"); err != nil || !m {
		t.Fatalf("the refused release unmounted the root file system (%v)", err)
	}
	sleeper.Process.Kill()
	sleeper.Wait()
	if rep, err := s.Prune(ctx); err != nil || !slices.Equal(rep.Released, []string{"running"}) {
		t.Fatalf("prune once nothing runs on it: released %v (%v)", rep.Released, err)
	}
	if err := s.Release(ctx, "owned"); err != nil {
		t.Fatal(err)
	}
}
