package runtime_test

// End-to-end tests through the real binary ($NEXUS_BIN, which make test
// builds with the embedded nexus-init program): bundles made by other tools,
// and what only the embedded init program or the command line shows.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testrootfs"
	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/runtime/spec"
)

// nexusBin is the binary make test built, for tests that also need root.
func nexusBin(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t)
	return testutil.NexusBin(t)
}

// runCLI runs `nexus runtime --root root args...` and returns its combined
// output and exit code.
func runCLI(t *testing.T, bin, root string, args ...string) (string, int) {
	t.Helper()
	out, code, err := cli(bin, root, t.TempDir(), args...)
	if err != nil {
		t.Fatalf("nexus runtime %v: %v: %s", args, err, out)
	}
	return out, code
}

// cli is runCLI for any goroutine; output goes through a file in tmp, not a
// pipe, because a container inherits it.
func cli(bin, root, tmp string, args ...string) (string, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := os.CreateTemp(tmp, "out")
	if err != nil {
		return "", 0, err
	}
	defer out.Close()
	cmd := exec.CommandContext(ctx, bin, append([]string{"runtime", "--root", root}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	data, _ := os.ReadFile(out.Name())
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(data), ee.ExitCode(), nil
	}
	return string(data), 0, err
}

// consoleSocket listens where `--console-socket` points and returns the pty
// master the runtime sends.
func consoleSocket(t *testing.T) (path string, master <-chan *os.File) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "console.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	must(t, err)
	t.Cleanup(func() { ln.Close() })
	ch := make(chan *os.File, 1)
	go func() {
		defer close(ch)
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		buf, oob := make([]byte, 256), make([]byte, unix.CmsgSpace(4))
		_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			return
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			return
		}
		ch <- os.NewFile(uintptr(fds[0]), "pty master")
	}()
	return path, ch
}

// A bundle made by `runc spec` or `crun spec` runs as it is: a terminal,
// ambient capabilities that are not inheritable, a relative root.
func TestRuncAndCrunSpecBundlesRunUnchanged(t *testing.T) {
	bin := nexusBin(t)
	for _, tool := range []string{"runc", "crun"} {
		t.Run(tool, func(t *testing.T) {
			path := testutil.RequireProgram(t, tool, tool)
			bundle := t.TempDir()
			must(t, os.Chmod(bundle, 0o755))
			gen := exec.Command(path, "spec")
			gen.Dir = bundle
			if out, err := gen.CombinedOutput(); err != nil {
				t.Fatalf("%s spec: %v: %s", tool, err, out)
			}
			must(t, os.Mkdir(filepath.Join(bundle, "rootfs"), 0o755))
			must(t, testrootfs.Build(filepath.Join(bundle, "rootfs")))
			var spec specs.Spec
			data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
			must(t, err)
			must(t, json.Unmarshal(data, &spec))
			if !spec.Process.Terminal || len(spec.Process.Capabilities.Ambient) == 0 || len(spec.Process.Capabilities.Inheritable) != 0 {
				t.Fatalf("%s spec no longer writes what this test is about: %+v", tool, spec.Process)
			}

			sock, masters := consoleSocket(t)
			id := fmt.Sprintf("%s-spec-%d", tool, os.Getpid())
			root := t.TempDir()
			t.Cleanup(func() { _ = exec.Command(bin, "runtime", "--root", root, "delete", "--force", id).Run() })
			type result struct {
				out  string
				code int
				err  error
			}
			done := make(chan result, 1)
			tmp := t.TempDir()
			go func() {
				out, code, err := cli(bin, root, tmp, "run", "--bundle", bundle, "--console-socket", sock, id)
				done <- result{out, code, err}
			}()
			var master *os.File
			select {
			case master = <-masters:
			case r := <-done:
				t.Fatalf("run ended before it sent the terminal (exit %d): %s", r.code, r.out)
			case <-time.After(30 * time.Second):
				t.Fatal("no terminal on the console socket")
			}
			if master == nil {
				t.Fatal("the console socket got no terminal")
			}
			defer master.Close()
			_, err = master.Write([]byte("echo hello-$((6*7)) $(hostname); grep CapAmb /proc/self/status; exit 3\n"))
			must(t, err)
			screen := make(chan string, 1)
			go func() {
				// The master reads EIO once the container's side is gone.
				b, _ := io.ReadAll(master)
				screen <- string(b)
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("run did not finish")
			}
			if r.err != nil || r.code != 3 {
				t.Fatalf("exit code %d (%v), want 3: %s", r.code, r.err, r.out)
			}
			var shown string
			select {
			case shown = <-screen:
			case <-time.After(10 * time.Second):
				t.Fatal("the terminal did not close")
			}
			if !strings.Contains(shown, "hello-42 "+tool) || !strings.Contains(shown, "CapAmb:\t0000000000000000") {
				t.Fatalf("terminal showed %q", shown)
			}
			if !strings.Contains(r.out, "ambient capabilities not raised") {
				t.Errorf("run did not warn about the ambient capabilities it left out: %s", r.out)
			}
		})
	}
}

// An init forked into a new user namespace runs as the mapped uid, to which
// the cached init program's root owner is a stranger.
func TestUserNamespaceWithTheEmbeddedInitProgram(t *testing.T) {
	bin := nexusBin(t)
	s := spec.Default()
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	s.Process.Args = []string{"sh", "-c", "id -u; cat /proc/self/uid_map"}
	bundle := testrootfs.Bundle(t, s, func(rootfs string) {
		must(t, filepath.Walk(rootfs, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, 100000, 100000)
		}))
	})
	root := t.TempDir()
	out, code := runCLI(t, bin, root, "run", "--bundle", bundle, fmt.Sprintf("userns-%d", os.Getpid()))
	if f := strings.Fields(out); code != 0 || len(f) < 4 || f[0] != "0" || f[2] != "100000" {
		t.Fatalf("want uid 0 mapped to host 100000, got exit %d:\n%s", code, out)
	}
	// The cached program stays unwritable for everyone.
	progs, _ := filepath.Glob(filepath.Join(root, ".init", "nexus-init-*"))
	if len(progs) != 1 {
		t.Fatalf("cached init programs: %v", progs)
	}
	fi, err := os.Stat(progs[0])
	must(t, err)
	if fi.Mode().Perm()&0o222 != 0 {
		t.Fatalf("init program mode %v is writable", fi.Mode())
	}
}

// linux.resources.network needs the cgroup v1 net_cls and net_prio
// controllers: refused clearly where they are not mounted, applied where
// they are (mounted here in a private mount namespace).
func TestNetworkResourcesGoToNetClsAndNetPrio(t *testing.T) {
	bin := nexusBin(t)
	unshare := testutil.RequireProgram(t, "unshare", "util-linux")
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	must(t, err)
	if strings.Contains(string(mountinfo), "net_cls") {
		t.Fatal("this test expects a host without a net_cls mount, as this project's machines are")
	}
	classID := uint32(0x100001)
	s := spec.Default()
	s.Linux.Resources.Network = &specs.LinuxNetwork{ClassID: &classID, Priorities: []specs.LinuxInterfacePriority{{Name: "lo", Priority: 5}}}
	s.Process.Args = []string{"sleep", "100"}
	bundle := testrootfs.Bundle(t, s, nil)
	root := t.TempDir()
	id := fmt.Sprintf("netcls-%d", os.Getpid())

	out, code := runCLI(t, bin, root, "run", "--bundle", bundle, id)
	if code == 0 || !strings.Contains(out, "linux.resources.network.classID: the net_cls controller is not mounted") {
		t.Fatalf("without net_cls: exit %d: %s", code, out)
	}

	mnt := t.TempDir()
	script := `set -e
mount -t cgroup -o net_cls,net_prio cgroup "$1"
trap 'rmdir "$1/nexus" 2>/dev/null; umount "$1"' EXIT
"$2" runtime --root "$3" run --detach --bundle "$4" "$5" </dev/null >/dev/null
echo "classid=$(cat "$1/nexus/$5/net_cls.classid")"
grep '^lo ' "$1/nexus/$5/net_prio.ifpriomap"
"$2" runtime --root "$3" delete --force "$5"
test ! -e "$1/nexus/$5" && echo removed`
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, unshare, "--mount", "--propagation", "private", "sh", "-c", script, "sh", mnt, bin, root, bundle, id).CombinedOutput()
	if err != nil {
		t.Fatalf("with net_cls and net_prio mounted: %v: %s", err, b)
	}
	for _, want := range []string{"classid=1048577", "lo 5", "removed"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("output lacks %q:\n%s", want, b)
		}
	}
}
