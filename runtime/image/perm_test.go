package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/runtime/image"
)

// helperEnv makes this test binary, run as a program, do one thing and exit:
// "euid" prints its effective uid (as a setuid program from an image, that
// shows whose rights it got); "open:PATH" opens PATH for writing;
// "prepare:ROOT|REF|ID" prepares container ID from image REF in the store
// at ROOT and exits without releasing it.
const helperEnv = "NEXUS_IMAGE_TEST_HELPER"

func TestMain(m *testing.M) {
	switch v := os.Getenv(helperEnv); {
	case v == "euid":
		fmt.Printf("euid=%d\n", os.Geteuid())
		os.Exit(0)
	case strings.HasPrefix(v, "open:"):
		f, err := os.OpenFile(strings.TrimPrefix(v, "open:"), os.O_WRONLY, 0)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		f.Close()
		fmt.Println("opened")
		os.Exit(0)
	case strings.HasPrefix(v, "prepare:"):
		args := strings.SplitN(strings.TrimPrefix(v, "prepare:"), "|", 3)
		s, err := image.Open(image.Config{Root: args[0]})
		if err == nil {
			_, err = s.Prepare(context.Background(), args[1], args[2], image.PrepareOptions{})
		}
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// setuidRootfs is a root filesystem tar with a setuid-root copy of this test
// binary (bin/whoami, which prints its effective uid) and a character device
// anyone may write (dev/null, 1:3, mode 0666).
func setuidRootfs(t *testing.T) []byte {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct {
		hdr  tar.Header
		data []byte
	}{
		{tar.Header{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755}, nil},
		{tar.Header{Typeflag: tar.TypeReg, Name: "bin/whoami", Mode: 0o4755, Size: int64(len(exe))}, exe},
		{tar.Header{Typeflag: tar.TypeDir, Name: "dev/", Mode: 0o755}, nil},
		{tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}, nil},
	} {
		if err := tw.WriteHeader(&e.hdr); err != nil {
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

// asNobody runs path as uid/gid nobody with the helper variable set to what.
func asNobody(path, what string) (string, error) {
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(), helperEnv+"="+what)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: testutil.Nobody, Gid: testutil.Nobody}}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestStoreIsClosedToOtherUsers unpacks an image with a setuid-root program
// and a device node anyone may write, then tries to use both from the
// snapshot as nobody: the store's directories must stop it (Moby's
// CVE-2021-41091). A store left open by an earlier version is closed when
// it is opened.
func TestStoreIsClosedToOtherUsers(t *testing.T) {
	testutil.RequireRoot(t)
	rootfs := setuidRootfs(t)
	for _, tc := range []struct {
		name string
		// before prepares the store directory the way an earlier version
		// left it.
		before func(t *testing.T, root string)
	}{
		{name: "new store", before: func(*testing.T, string) {}},
		{name: "store left traversable by an earlier version", before: func(t *testing.T, root string) {
			s, err := image.Open(image.Config{Root: root})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Import(context.Background(), bytes.NewReader(rootfs), image.ImportOptions{Name: "local/setuid:1"}); err != nil {
				t.Fatal(err)
			}
			s.Close()
			err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
				if err != nil || !d.IsDir() || strings.Contains(p, "/fs") {
					return err
				}
				return os.Chmod(p, 0o711)
			})
			if err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A parent every user may traverse, as /var/lib is.
			parent, err := os.MkdirTemp("", "nexus-store-perm-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(parent) })
			if err := os.Chmod(parent, 0o755); err != nil {
				t.Fatal(err)
			}
			root := filepath.Join(parent, "images")
			tc.before(t, root)
			s, err := image.Open(image.Config{Root: root})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			imgs, err := s.Import(context.Background(), bytes.NewReader(rootfs), image.ImportOptions{Name: "local/setuid:1"})
			if err != nil {
				t.Fatal(err)
			}
			d, err := s.Inspect(context.Background(), imgs[0].Name)
			if err != nil {
				t.Fatal(err)
			}
			fs := filepath.Join(root, "snapshots", d.Layers[0].DiffID.Hex, "fs")
			// As root the program runs and reports euid 0: the image is
			// intact, only other users are kept out.
			cmd := exec.Command(filepath.Join(fs, "bin/whoami"))
			cmd.Env = append(os.Environ(), helperEnv+"=euid")
			if out, err := cmd.Output(); err != nil || strings.TrimSpace(string(out)) != "euid=0" {
				t.Fatalf("the setuid program as root: %q %v", out, err)
			}

			out, err := asNobody(filepath.Join(fs, "bin/whoami"), "euid")
			if err == nil {
				t.Fatalf("nobody ran the image's setuid-root program from %s: it printed %q", fs, out)
			}
			if !errors.Is(err, syscall.EACCES) {
				t.Fatalf("nobody running the image's setuid program: %v (%s), want permission denied", err, out)
			}

			// The device node, opened by this binary run as nobody (TestMain
			// does it, whatever test is named).
			b, err := testutil.CommandAsNobody(t, "TestMain", helperEnv+"=open:"+filepath.Join(fs, "dev/null")).CombinedOutput()
			out = string(b)
			if err == nil || !strings.Contains(out, "permission denied") {
				t.Fatalf("nobody opening the image's device node: %v, output %q; want permission denied", err, out)
			}

			err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
				if err != nil || p == root || !d.IsDir() {
					return err
				}
				if d.Name() == "fs" {
					return filepath.SkipDir // the image's own tree
				}
				fi, err := d.Info()
				if err == nil && fi.Mode().Perm()&0o077 != 0 {
					t.Errorf("%s has mode %04o: others may enter it", p, fi.Mode().Perm())
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(root); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("store root: %v %v, want mode 0700", fi.Mode(), err)
			}
		})
	}
}
