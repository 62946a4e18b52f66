package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Validate(Default(), ""); err != nil {
		t.Fatalf("the default spec is refused: %v", err)
	}
	// Each call gets its own slices: a caller that edits one spec must not
	// change the next.
	a, b := Default(), Default()
	a.Process.Capabilities.Bounding[0] = "CAP_SYS_ADMIN"
	a.Linux.MaskedPaths[0] = "/x"
	if b.Process.Capabilities.Bounding[0] == "CAP_SYS_ADMIN" || defaultCapabilities[0] == "CAP_SYS_ADMIN" || defaultMaskedPaths[0] == "/x" {
		t.Fatal("editing one default spec changed another, or the defaults")
	}
}

// Validate names the field and says what to do, in the words users have
// seen from `nexus runtime create`.
func TestValidateNamesTheField(t *testing.T) {
	seven := uint(7)
	bad := int64(-5)
	tests := []struct {
		name string
		edit func(s *specs.Spec)
		want string
	}{
		{"no version", func(s *specs.Spec) { s.Version = "" }, `config.json: ociVersion: missing (set it to "` + specs.Version + `")`},
		{"version 2", func(s *specs.Spec) { s.Version = "2.0.0" }, `config.json: ociVersion: "2.0.0" is not supported: this runtime implements runtime-spec 1.x`},
		{"no root", func(s *specs.Spec) { s.Root = nil }, "config.json: root.path: missing: name the container's root filesystem directory"},
		{"no linux", func(s *specs.Spec) { s.Linux = nil }, "config.json: linux: missing: this runtime runs Linux containers"},
		{"relative cwd", func(s *specs.Spec) { s.Process.Cwd = "tmp" }, `config.json: process.cwd: "tmp" must be an absolute path`},
		{"env without =", func(s *specs.Spec) { s.Process.Env = append(s.Process.Env, "JUNK") }, `config.json: process.env[2]: "JUNK" is not NAME=VALUE`},
		{"unknown namespace", func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: "bogus"})
		}, `config.json: linux.namespaces[6].type: unknown namespace type "bogus" (use pid, network, mount, ipc, uts, user, cgroup or time)`},
		{"namespace twice", func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.PIDNamespace})
		}, `config.json: linux.namespaces[6].type: namespace "pid" is listed twice`},
		{"escaping mount", func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/../../etc", Type: "tmpfs", Source: "tmpfs"})
		}, `config.json: mounts[7].destination: "/../../etc" climbs out of the root filesystem with ..`},
		{"unknown rlimit", func(s *specs.Spec) {
			s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_BOGUS", Soft: 1, Hard: 1}}
		}, `config.json: process.rlimits[0].type: unknown rlimit "RLIMIT_BOGUS" (use e.g. RLIMIT_NOFILE, RLIMIT_NPROC)`},
		{"unknown capability", func(s *specs.Spec) {
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_TIME_TRAVEL")
		}, `config.json: process.capabilities.bounding[13]: unknown capability "CAP_TIME_TRAVEL" (names look like CAP_NET_BIND_SERVICE)`},
		{"hostname without uts", func(s *specs.Spec) {
			s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.MountNamespace}}
		}, `config.json: hostname: set without a uts namespace, so it would rename the host: add {"type": "uts"}`},
		{"host sysctl", func(s *specs.Spec) { s.Linux.Sysctl = map[string]string{"vm.swappiness": "1"} },
			"config.json: linux.sysctl[vm.swappiness]: not a namespaced sysctl: setting it would change the host"},
		{"unknown syscall", func(s *specs.Spec) {
			s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls, specs.LinuxSyscall{Names: []string{"no_such_call"}, Action: specs.ActErrno, ErrnoRet: &seven})
		}, fmt.Sprintf(`config.json: linux.seccomp: syscalls[%d]: unknown syscall "no_such_call"`, len(Default().Linux.Seccomp.Syscalls))},
		{"bad memory limit", func(s *specs.Spec) { s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &bad} }, "config.json: linux.resources: linux.resources.memory.limit: -5 is not a valid limit (use -1 for unlimited)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Default()
			tt.edit(s)
			err := Validate(s, "")
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want an *Error", err)
			}
			if err.Error() != tt.want {
				t.Fatalf("err = %q, want %q", err, tt.want)
			}
		})
	}
}

// LoadExceptSeccomp leaves the seccomp profile to the compiler and returns
// the document as read; Load checks the profile too.
func TestLoadExceptSeccomp(t *testing.T) {
	s := Default()
	s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls, specs.LinuxSyscall{Names: []string{"no_such_call"}, Action: specs.ActAllow})
	dir := writeBundle(t, s)
	got, raw, err := LoadExceptSeccomp(dir)
	if err != nil {
		t.Fatalf("LoadExceptSeccomp: %v", err)
	}
	if want, _ := os.ReadFile(filepath.Join(dir, "config.json")); string(raw) != string(want) || got.Hostname != "nexus" {
		t.Fatal("LoadExceptSeccomp did not return the document as read")
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "config.json: linux.seccomp: ") {
		t.Fatalf("Load: err = %v, want the unknown syscall named", err)
	}
}

func TestLoadErrors(t *testing.T) {
	empty := t.TempDir()
	if _, err := Load(empty); err == nil || err.Error() != "bundle "+empty+" has no config.json: create one (e.g. with `nexus runtime spec`) or pass the right --bundle" {
		t.Errorf("no config.json: err = %v", err)
	}

	noRootfs := t.TempDir()
	data, _ := json.Marshal(Default())
	if err := os.WriteFile(filepath.Join(noRootfs, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	want := "config.json: root.path: " + filepath.Join(noRootfs, "rootfs") + " does not exist: unpack the image there or fix the path"
	if _, err := Load(noRootfs); err == nil || err.Error() != want {
		t.Errorf("no rootfs: err = %v, want %q", err, want)
	}

	huge := writeBundle(t, Default())
	if err := os.WriteFile(filepath.Join(huge, "config.json"), make([]byte, MaxSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(huge); err == nil || !strings.Contains(err.Error(), "read bundle config: ") {
		t.Errorf("config.json over MaxSize: err = %v, want it refused", err)
	}

	badJSON := writeBundle(t, Default())
	if err := os.WriteFile(filepath.Join(badJSON, "config.json"), []byte(`{"ociVersion": "1.0.2", "process": {"args": "sh"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(badJSON); err == nil || err.Error() != "config.json: process.args: wrong type: got JSON string, want []string" {
		t.Errorf("wrong type: err = %v", err)
	}
}

// writeBundle writes s as config.json beside an empty rootfs directory.
func writeBundle(t *testing.T, s *specs.Spec) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestSpecIsLean: the reason this package is not part of runtime is that
// what only makes or checks specs (runtime/image/bundle) links neither the
// runtime nor what the runtime pulls in.
func TestSpecIsLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	deps := strings.Fields(string(out))
	for _, no := range []string{"nexus.dev/nexus/runtime", "log/slog", "net", "runtime/cgo"} {
		if slices.Contains(deps, no) {
			t.Errorf("runtime/spec links %s (find who imports it: go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./runtime/spec)", no)
		}
	}
}
