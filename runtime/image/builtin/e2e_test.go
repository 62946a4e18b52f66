package builtin

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"nexus.dev/nexus/internal/testnet"
	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/runtime/image/bundle"
)

// TestBuiltinImageRunsAndAnswers is the whole path a user takes: the
// built-in image of a real nexus build is unpacked, turned into a spec,
// run by `nexus runtime run` in a network namespace of its own, asked over
// HTTP, and stopped with SIGTERM, after which it exits 0 and is gone.
func TestBuiltinImageRunsAndAnswers(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.NexusBin(t)
	img, err := Image(bin)
	if err != nil {
		t.Fatal(err)
	}
	net1 := testnet.New(t, testnet.Options{Hosts: 1})
	host := net1.Hosts[0]

	rootfs := filepath.Join(t.TempDir(), "rootfs")
	extractImage(t, img, rootfs)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	const hostname = "hello-e2e"
	spec, err := bundle.Spec(bundle.Config{Image: cf.Config, Rootfs: rootfs, Hostname: hostname})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Process.User.UID != 65534 {
		t.Fatalf("the built-in image runs as uid %d, want nobody", spec.Process.User.UID)
	}
	for i, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			spec.Linux.Namespaces[i].Path = host.NetNS
		}
	}
	bundleDir := t.TempDir()
	data, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(bundleDir, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}

	stateRoot := t.TempDir()
	const id = "builtin-hello-e2e"
	logFile, err := os.Create(filepath.Join(t.TempDir(), "container.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run := exec.CommandContext(ctx, bin, "runtime", "--root", stateRoot, "run", "--bundle", bundleDir, id)
	// The container inherits the runtime's stdio: files, not pipes, so
	// nothing waits on a pipe the container holds open.
	run.Stdout, run.Stderr = logFile, logFile
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	t.Cleanup(func() {
		_ = exec.Command(bin, "runtime", "--root", stateRoot, "delete", "--force", id).Run()
		run.Process.Kill()
	})
	logs := func() string { b, _ := os.ReadFile(logFile.Name()); return string(b) }

	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := host.Do(func() (err error) {
				c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}},
	}
	url := fmt.Sprintf("http://%s/", net.JoinHostPort(host.IPv6.String(), fmt.Sprint(Port)))
	var body string
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("container exited before answering: %v\n%s", err, logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer from %s: %v\n%s", url, err, logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("answer:\n%s", body)
	for _, want := range []string{"hello from " + hostname, "request 1: GET /", host.IPv6.String(), host.IPv4.String(), "127.0.0.1"} {
		if !strings.Contains(body, want) {
			t.Errorf("answer lacks %q:\n%s", want, body)
		}
	}

	if out, err := exec.Command(bin, "runtime", "--root", stateRoot, "kill", id, "TERM").CombinedOutput(); err != nil {
		t.Fatalf("kill: %v: %s", err, out)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("after SIGTERM the container exited with %v, want 0\n%s", err, logs())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("container did not stop within 15 s of SIGTERM\n%s", logs())
	}
	// run removes the container once it has exited.
	if out, err := exec.Command(bin, "runtime", "--root", stateRoot, "state", id).CombinedOutput(); err == nil {
		t.Fatalf("container still exists after run returned: %s", out)
	}
}

// extractImage unpacks the layers of img into dir. The built-in image has
// regular files and directories only, which is all this handles.
func extractImage(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, filepath.Clean("/"+h.Name))
			mode := h.FileInfo().Mode()
			switch h.Typeflag {
			case tar.TypeDir:
				err = os.MkdirAll(path, 0o755)
			case tar.TypeReg:
				var f *os.File
				if f, err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600); err == nil {
					_, err = io.Copy(f, tr)
					if cerr := f.Close(); err == nil {
						err = cerr
					}
				}
			case tar.TypeSymlink:
				err = os.Symlink(h.Linkname, path)
			default:
				t.Fatalf("unexpected entry %s of type %c", h.Name, h.Typeflag)
			}
			if err == nil && h.Typeflag != tar.TypeSymlink {
				err = os.Chmod(path, mode.Perm()|mode&(os.ModeSticky|os.ModeSetuid|os.ModeSetgid))
			}
			if err == nil {
				err = os.Lchown(path, h.Uid, h.Gid)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		rc.Close()
	}
}
