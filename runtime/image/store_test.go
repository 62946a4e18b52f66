package image_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"nexus.dev/nexus/runtime/image"
	"nexus.dev/nexus/runtime/image/imagetest"
)

func openStore(t *testing.T) *image.Store {
	t.Helper()
	s, err := image.Open(image.Config{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// otherArch is a platform that is not this machine's.
func otherArch() string {
	if goruntime.GOARCH == "s390x" {
		return "linux/arm64"
	}
	return "linux/s390x"
}

func thisArch() string { return "linux/" + goruntime.GOARCH }

// testImage is a three-layer image for platform: the layers share nothing
// with other platforms' images, and the top one deletes a file of the
// bottom one (a whiteout).
func testImage(t *testing.T, platform string) v1.Image {
	return imagetest.Image(t, platform, v1.Config{Cmd: []string{"/bin/app"}, Env: []string{"A=1"}, WorkingDir: "/srv", ExposedPorts: map[string]struct{}{"8080/tcp": {}}},
		imagetest.Layer(t, map[string]imagetest.File{"etc/platform": {Content: platform}, "etc/old": {Content: "old"}}),
		imagetest.Layer(t, map[string]imagetest.File{"bin/app": {Content: "#!/bin/sh\n" + platform, Mode: 0o755}}),
		imagetest.Layer(t, map[string]imagetest.File{"etc/.wh.old": {}, "srv/data": {Content: strings.Repeat(platform, 1<<18)}}),
	)
}

// snapshotFile reads path from the snapshot of img's layer i.
func snapshotFile(t *testing.T, s *image.Store, img v1.Image, i int, path string) (string, error) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(s.Root(), "snapshots", cf.RootFS.DiffIDs[i].Hex, "fs", path))
	return string(data), err
}

func blobExists(s *image.Store, d v1.Hash) bool {
	_, err := os.Stat(filepath.Join(s.Root(), "blobs/sha256", d.Hex))
	return err == nil
}

func ingestEmpty(t *testing.T, s *image.Store) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Root(), "ingest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("ingest/ holds leftovers: %v", entries)
	}
}

func TestPullMultiArch(t *testing.T) {
	for _, tc := range []struct {
		name       string
		user, pass string
	}{
		{name: "anonymous"},
		{name: "basic auth from DOCKER_CONFIG", user: "alice", pass: "s3cret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := imagetest.NewRegistry(t, imagetest.RegistryOptions{User: tc.user, Password: tc.pass})
			mine, other := testImage(t, thisArch()), testImage(t, otherArch())
			index := imagetest.Index(t, other, mine)
			ref := reg.PushIndex(t, "team/app:1.0", index)
			if tc.user != "" {
				imagetest.DockerConfig(t, reg.Host, tc.user, tc.pass)
			} else {
				t.Setenv("DOCKER_CONFIG", t.TempDir())
			}
			s := openStore(t)
			ctx := context.Background()
			var events []image.ProgressEvent
			img, err := s.Pull(ctx, ref, image.PullOptions{Progress: func(e image.ProgressEvent) { events = append(events, e) }})
			if err != nil {
				t.Fatal(err)
			}
			wantDigest, _ := mine.Digest()
			if img.Digest != wantDigest || img.Name != reg.Ref("team/app:1.0") || img.Platform.String() != thisArch() {
				t.Fatalf("pulled %+v, want digest %s for %s", img, wantDigest, thisArch())
			}
			if got, err := snapshotFile(t, s, mine, 0, "etc/platform"); err != nil || got != thisArch() {
				t.Fatalf("bottom layer unpacked wrong: %q %v", got, err)
			}
			d, err := s.Inspect(ctx, img.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Layers) != 3 || !d.Layers[2].Unpacked || d.RunConfig.WorkingDir != "/srv" || !slices.Equal(d.RunConfig.ExposedPorts, []string{"8080/tcp"}) {
				t.Fatalf("inspect: %+v", d)
			}
			_, layers := imagetest.Digests(t, mine)
			done := map[v1.Hash]bool{}
			for _, e := range events {
				if e.State == image.StateDone || e.State == image.StateUnpacked {
					done[e.Digest] = true
				}
			}
			for _, l := range layers {
				if !done[l] {
					t.Errorf("no done event for layer %s in %v", l, events)
				}
			}
			// The other platform's layers were not fetched.
			_, otherLayers := imagetest.Digests(t, other)
			for _, l := range otherLayers {
				if n := reg.BlobGets(l); n != 0 {
					t.Errorf("layer %s of the other platform fetched %d times", l, n)
				}
			}

			// By the index's digest: the same image, under a digest name.
			idxDigest, err := index.Digest()
			if err != nil {
				t.Fatal(err)
			}
			byDigest := reg.Ref("team/app@" + idxDigest.String())
			got, err := s.Pull(ctx, byDigest, image.PullOptions{})
			if err != nil || got.Digest != wantDigest || got.Name != byDigest {
				t.Fatalf("pull by digest: %+v %v", got, err)
			}
			if got, err := s.Get(ctx, reg.Ref("team/app@"+wantDigest.String())); err != nil || got.Digest != wantDigest {
				t.Fatalf("get by the platform manifest's digest: %+v %v", got, err)
			}

			_, err = s.Pull(ctx, ref, image.PullOptions{Platform: &v1.Platform{OS: "linux", Architecture: "mips64"}})
			if err == nil || !strings.Contains(err.Error(), "linux/mips64") || !strings.Contains(err.Error(), otherArch()) || !strings.Contains(err.Error(), thisArch()) {
				t.Fatalf("pull of a missing platform: %v", err)
			}
		})
	}
}

func TestPullNeedsCredentials(t *testing.T) {
	reg := imagetest.NewRegistry(t, imagetest.RegistryOptions{User: "alice", Password: "s3cret"})
	ref := reg.Push(t, "private:1", testImage(t, thisArch()))
	s := openStore(t)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	if _, err := s.Pull(context.Background(), ref, image.PullOptions{}); err == nil || !strings.Contains(err.Error(), "401") && !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
		t.Fatalf("pull without credentials: %v", err)
	}
	imagetest.DockerConfig(t, reg.Host, "alice", "wrong")
	if _, err := s.Pull(context.Background(), ref, image.PullOptions{}); err == nil {
		t.Fatal("pull with wrong credentials succeeded")
	}
	if imgs, _ := s.List(context.Background()); len(imgs) != 0 {
		t.Fatalf("failed pulls recorded %v", imgs)
	}
}

func TestConcurrentPullsFetchEachBlobOnce(t *testing.T) {
	reg := imagetest.NewRegistry(t, imagetest.RegistryOptions{})
	img := testImage(t, thisArch())
	ref := reg.Push(t, "app:1", img)
	cfg, layers := imagetest.Digests(t, img)
	// Slow blobs make the two pulls overlap.
	for _, d := range append(layers, cfg) {
		reg.Delay(d, 200*time.Millisecond)
	}
	s := openStore(t)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	start := make(chan struct{})
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = s.Pull(context.Background(), ref, image.PullOptions{})
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range append(layers, cfg) {
		if n := reg.BlobGets(d); n != 1 {
			t.Errorf("blob %s downloaded %d times, want once", d, n)
		}
	}
	// A third pull finds everything stored.
	if _, err := s.Pull(context.Background(), ref, image.PullOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, d := range layers {
		if n := reg.BlobGets(d); n != 1 {
			t.Errorf("blob %s downloaded again by a repeated pull", d)
		}
	}
}

func TestPullRejectsCorruptBlob(t *testing.T) {
	reg := imagetest.NewRegistry(t, imagetest.RegistryOptions{})
	img := testImage(t, thisArch())
	ref := reg.Push(t, "app:1", img)
	_, layers := imagetest.Digests(t, img)
	bad := layers[1]
	reg.Corrupt(bad, true)
	s := openStore(t)
	ctx := context.Background()
	_, err := s.Pull(ctx, ref, image.PullOptions{})
	if err == nil || !strings.Contains(err.Error(), bad.String()) {
		t.Fatalf("pull of a corrupt layer: err = %v, want it to name %s", err, bad)
	}
	if blobExists(s, bad) {
		t.Error("the corrupt blob was stored")
	}
	if imgs, _ := s.List(ctx); len(imgs) != 0 {
		t.Errorf("a failed pull recorded %v", imgs)
	}
	ingestEmpty(t, s)
	// The store is still usable: the registry heals, the pull succeeds.
	reg.Corrupt(bad, false)
	if _, err := s.Pull(ctx, ref, image.PullOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(ctx, ref); err != nil {
		t.Fatal(err)
	}
}

func TestInterruptedPullLeavesNothing(t *testing.T) {
	reg := imagetest.NewRegistry(t, imagetest.RegistryOptions{})
	img := testImage(t, thisArch())
	ref := reg.Push(t, "app:1", img)
	_, layers := imagetest.Digests(t, img)
	big := layers[2]
	stall := reg.Stall(big)
	s := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Pull(ctx, ref, image.PullOptions{})
		errc <- err
	}()
	select {
	case <-stall.Reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the download never started")
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pull: err = %v", err)
	}
	if blobExists(s, big) {
		t.Error("a half-downloaded blob was stored")
	}
	if imgs, _ := s.List(context.Background()); len(imgs) != 0 {
		t.Errorf("a cancelled pull recorded %v", imgs)
	}
	ingestEmpty(t, s)
	stall.Release()
	if _, err := s.Pull(context.Background(), ref, image.PullOptions{}); err != nil {
		t.Fatalf("pull after an interrupted one: %v", err)
	}
}

func TestOpenRemovesLeftovers(t *testing.T) {
	root := t.TempDir()
	s, err := image.Open(image.Config{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	leftovers := []string{"ingest/blob-123", "snapshots/.tmp-abc-1/fs/file", "snapshots/" + strings.Repeat("a", 64) + "/fs/file"}
	for _, p := range leftovers {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	complete := filepath.Join(root, "snapshots", strings.Repeat("b", 64))
	if err := os.MkdirAll(filepath.Join(complete, "fs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(complete, "done.json"), []byte("{}"), 0o444); err != nil {
		t.Fatal(err)
	}
	if _, err := image.Open(image.Config{Root: root}); err != nil {
		t.Fatal(err)
	}
	for _, p := range leftovers {
		if _, err := os.Stat(filepath.Join(root, strings.SplitN(p, "/", 3)[0], strings.SplitN(p, "/", 3)[1])); err == nil {
			t.Errorf("Open left %s", p)
		}
	}
	if _, err := os.Stat(complete); err != nil {
		t.Errorf("Open removed a complete snapshot: %v", err)
	}
}

func TestTamperedBlobIsDetected(t *testing.T) {
	reg := imagetest.NewRegistry(t, imagetest.RegistryOptions{})
	img := testImage(t, thisArch())
	ref := reg.Push(t, "app:1", img)
	s := openStore(t)
	ctx := context.Background()
	if _, err := s.Pull(ctx, ref, image.PullOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, layers := imagetest.Digests(t, img)
	tamper := func(d v1.Hash) {
		p := filepath.Join(s.Root(), "blobs/sha256", d.Hex)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 1
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tamper(layers[0])
	err := s.Verify(ctx, ref)
	var corrupt *image.CorruptBlobError
	if !errors.As(err, &corrupt) || corrupt.Digest != layers[0] {
		t.Fatalf("verify of a tampered layer: %v", err)
	}
	tamper(cfg)
	if _, err := s.Inspect(ctx, ref); err == nil || !strings.Contains(err.Error(), cfg.String()) {
		t.Fatalf("inspect with a tampered config: %v", err)
	}
	// A damaged image blocks GC (which deletes nothing) until it is removed.
	if _, err := s.Prune(ctx); err == nil || !strings.Contains(err.Error(), "nothing was deleted") {
		t.Fatalf("prune with a damaged image: %v", err)
	}
	if _, err := s.Remove(ctx, ref, image.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(ctx, ref, image.PullOptions{}); err != nil {
		t.Fatalf("re-pull after removing the damaged image: %v", err)
	}
}

func TestBadReferences(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	for _, ref := range []string{"", "UPPER/case", "has space", "busybox@sha256:1234", "busybox:a:b", "busybox:bad tag"} {
		_, err := s.Pull(ctx, ref, image.PullOptions{})
		if err == nil || !strings.Contains(err.Error(), "write it like") || (ref != "" && !strings.Contains(err.Error(), ref)) {
			t.Errorf("pull %q: err = %v, want one naming the reference and showing a good one", ref, err)
		}
	}
	_, err := s.Get(ctx, "busybox")
	if !errors.Is(err, image.ErrNotFound) || !strings.Contains(err.Error(), "docker.io/library/busybox:latest") {
		t.Errorf("get of a missing image: %v", err)
	}
}

func TestGetAcceptsShortNamesDigestsAndIDs(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	img := testImage(t, thisArch())
	stored, err := s.ImportImage(ctx, "busybox", img)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Name != "docker.io/library/busybox:latest" {
		t.Fatalf("name %q", stored.Name)
	}
	for _, ref := range []string{"busybox", "busybox:latest", "docker.io/library/busybox", "index.docker.io/library/busybox:latest",
		"busybox@" + stored.Digest.String(), stored.Digest.String(), stored.ID, stored.Digest.Hex[:6]} {
		got, err := s.Get(ctx, ref)
		if err != nil || got.Digest != stored.Digest {
			t.Errorf("get %q: %+v %v", ref, got, err)
		}
	}
}

func TestPruneKeepsSharedLayers(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	base := imagetest.Layer(t, map[string]imagetest.File{"etc/base": {Content: "shared"}})
	a := imagetest.Image(t, thisArch(), v1.Config{Cmd: []string{"a"}}, base, imagetest.Layer(t, map[string]imagetest.File{"a": {Content: "a"}}))
	b := imagetest.Image(t, thisArch(), v1.Config{Cmd: []string{"b"}}, base, imagetest.Layer(t, map[string]imagetest.File{"b": {Content: "b"}}))
	if _, err := s.ImportImage(ctx, "example.com/a:1", a); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportImage(ctx, "example.com/b:1", b); err != nil {
		t.Fatal(err)
	}
	if rep, err := s.Prune(ctx); err != nil || len(rep.Blobs)+len(rep.Snapshots) != 0 {
		t.Fatalf("prune with everything in use removed %+v (%v)", rep, err)
	}
	if _, err := s.Remove(ctx, "example.com/a:1", image.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	aDigest, _ := a.Digest()
	aCfg, aLayers := imagetest.Digests(t, a)
	wantBlobs := []string{aDigest.String(), aCfg.String(), aLayers[1].String()}
	var gotBlobs []string
	for _, d := range rep.Blobs {
		gotBlobs = append(gotBlobs, d.String())
	}
	slices.Sort(wantBlobs)
	slices.Sort(gotBlobs)
	if !slices.Equal(gotBlobs, wantBlobs) {
		t.Errorf("prune removed blobs %v, want %v", gotBlobs, wantBlobs)
	}
	acf, _ := a.ConfigFile()
	if len(rep.Snapshots) != 1 || rep.Snapshots[0] != acf.RootFS.DiffIDs[1] {
		t.Errorf("prune removed snapshots %v, want only %s", rep.Snapshots, acf.RootFS.DiffIDs[1])
	}
	if rep.Bytes <= 0 {
		t.Errorf("prune reclaimed %d bytes", rep.Bytes)
	}
	if err := s.Verify(ctx, "example.com/b:1"); err != nil {
		t.Fatalf("the remaining image lost content: %v", err)
	}
	if got, err := snapshotFile(t, s, b, 0, "etc/base"); err != nil || got != "shared" {
		t.Fatalf("shared layer: %q %v", got, err)
	}
}

func TestRemoveByIDWithSeveralNames(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	img := testImage(t, thisArch())
	one, err := s.ImportImage(ctx, "example.com/app:1", img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportImage(ctx, "example.com/app:latest", img); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Remove(ctx, one.ID, image.RemoveOptions{}); err == nil || !strings.Contains(err.Error(), "2 names") {
		t.Fatalf("remove by ID of an image with two names: %v", err)
	}
	removed, err := s.Remove(ctx, one.ID, image.RemoveOptions{Force: true})
	if err != nil || len(removed) != 2 {
		t.Fatalf("forced remove: %v %v", removed, err)
	}
	if imgs, _ := s.List(ctx); len(imgs) != 0 {
		t.Fatalf("left %v", imgs)
	}
}

// Two stores on one directory behave like two processes: concurrent pulls
// of one image still download each blob once (a lock file per blob).
func TestPullsOfTwoStoresFetchEachBlobOnce(t *testing.T) {
	reg := imagetest.NewRegistry(t, imagetest.RegistryOptions{})
	img := testImage(t, thisArch())
	ref := reg.Push(t, "app:1", img)
	cfg, layers := imagetest.Digests(t, img)
	for _, d := range append(layers, cfg) {
		reg.Delay(d, 200*time.Millisecond)
	}
	root := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		s, err := image.Open(image.Config{Root: root})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Pull(context.Background(), ref, image.PullOptions{})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range append(layers, cfg) {
		if n := reg.BlobGets(d); n != 1 {
			t.Errorf("blob %s downloaded %d times by two stores, want once", d, n)
		}
	}
}

// Two stores on one directory behave like two processes: GC waits for a
// pull in progress and then keeps what it stored.
func TestPruneWaitsForPullOfAnotherStore(t *testing.T) {
	reg := imagetest.NewRegistry(t, imagetest.RegistryOptions{})
	img := testImage(t, thisArch())
	ref := reg.Push(t, "app:1", img)
	_, layers := imagetest.Digests(t, img)
	stall := reg.Stall(layers[2])
	root := t.TempDir()
	puller, err := image.Open(image.Config{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	pruner, err := image.Open(image.Config{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := puller.Pull(context.Background(), ref, image.PullOptions{})
		errc <- err
	}()
	<-stall.Reached
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := pruner.Prune(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("prune during a pull: err = %v, want it to wait", err)
	}
	// Open does not clean up under a running pull either.
	if _, err := image.Open(image.Config{Root: root}); err != nil {
		t.Fatal(err)
	}
	stall.Release()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	rep, err := pruner.Prune(context.Background())
	if err != nil || len(rep.Blobs)+len(rep.Snapshots) != 0 {
		t.Fatalf("prune after the pull removed %+v (%v)", rep, err)
	}
	if err := pruner.Verify(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
}
