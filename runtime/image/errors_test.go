package image_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/runtime/image"
	"nexus.dev/nexus/runtime/image/imagetest"
)

// TestErrorsAreTypedAndInLibraryTerms checks that the store's errors can be
// told apart by type, for a caller to say what to do next in its own words,
// and that they name no command line flag or command themselves.
func TestErrorsAreTypedAndInLibraryTerms(t *testing.T) {
	testutil.RequireRoot(t) // Prepare mounts
	s := openStore(t)
	ctx := context.Background()
	img := testImage(t, thisArch())
	one, err := s.ImportImage(ctx, "example.com/app:1", img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportImage(ctx, "example.com/app:2", img); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "example.com/app:1", "user-of-app", image.PrepareOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Release(context.Background(), "user-of-app") })
	reg := imagetest.NewRegistry(t, imagetest.RegistryOptions{})
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	ref := reg.PushIndex(t, "team/app:1", imagetest.Index(t, testImage(t, otherArch())))
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	var (
		notFound    *image.NotFoundError
		names       *image.SeveralNamesError
		inUse       *image.InUseError
		platform    *image.PlatformError
		url         *image.URLError
		unreachable *image.RegistryUnreachableError
	)
	for _, tc := range []struct {
		name  string
		do    func() error
		check func(error) bool
	}{
		{"get a missing name", func() error { _, err := s.Get(ctx, "busybox"); return err },
			func(err error) bool {
				return errors.As(err, &notFound) && notFound.Name == "docker.io/library/busybox:latest" && errors.Is(err, image.ErrNotFound)
			}},
		{"get a missing digest", func() error { _, err := s.Get(ctx, "sha256:"+strings.Repeat("ab", 32)); return err },
			func(err error) bool { return errors.As(err, &notFound) && notFound.Name == "" }},
		{"remove by ID, two names", func() error { _, err := s.Remove(ctx, one.ID, image.RemoveOptions{}); return err },
			func(err error) bool { return errors.As(err, &names) && len(names.Names) == 2 }},
		{"remove the names of an image in use", func() error {
			if _, err := s.Remove(ctx, "example.com/app:2", image.RemoveOptions{}); err != nil {
				return err
			}
			_, err := s.Remove(ctx, "example.com/app:1", image.RemoveOptions{})
			return err
		}, func(err error) bool {
			return errors.As(err, &inUse) && inUse.Image == "example.com/app:1" && len(inUse.Containers) == 1 && inUse.Containers[0] == "user-of-app"
		}},
		{"import a root filesystem without a name", func() error {
			_, err := s.Import(ctx, bytes.NewReader(imagetest.LayerTar(t, map[string]imagetest.File{"f": {Content: "x"}})), image.ImportOptions{})
			return err
		}, func(err error) bool { return errors.Is(err, image.ErrNameRequired) }},
		{"pull a platform the index lacks", func() error { _, err := s.Pull(ctx, ref, image.PullOptions{}); return err },
			func(err error) bool {
				return errors.As(err, &platform) && platform.Want == thisArch() && len(platform.Have) == 1 && platform.Have[0] == otherArch()
			}},
		{"pull a URL", func() error { _, err := s.Pull(ctx, "http://"+reg.Host+"/team/app:1", image.PullOptions{}); return err },
			func(err error) bool { return errors.As(err, &url) && url.Scheme == "http" }},
		{"pull a URL of another scheme", func() error { _, err := s.Pull(ctx, "oci://"+reg.Host+"/team/app:1", image.PullOptions{}); return err },
			func(err error) bool { return errors.As(err, &url) && url.Scheme == "oci" }},
		{"pull from a registry nobody answers at", func() error {
			_, err := s.Pull(ctx, closedAddr+"/team/app:1", image.PullOptions{})
			return err
		}, func(err error) bool { return errors.As(err, &unreachable) && unreachable.Registry == closedAddr }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if err == nil || !tc.check(err) {
				t.Fatalf("error %v (%T) is not the one expected", err, err)
			}
			for _, word := range []string{"--", "nexus image", "name.Insecure"} {
				if strings.Contains(err.Error(), word) {
					t.Errorf("error %q speaks of %q, a word of a command line or another API", err, word)
				}
			}
		})
	}
}
