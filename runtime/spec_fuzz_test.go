package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// FuzzValidateSpec feeds arbitrary config.json documents through parsing
// and validation: they must never panic, and every rejection must be a
// *SpecError naming what is wrong.
func FuzzValidateSpec(f *testing.F) {
	good, _ := json.Marshal(DefaultSpec())
	f.Add(good)
	f.Add([]byte(`{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["sh"],"cwd":"/"},"linux":{"namespaces":[{"type":"mount"}]}}`))
	f.Add([]byte(`{"ociVersion":"1.0.2","mounts":[{"destination":"/../x","type":"bind","source":"/"}]}`))
	f.Add([]byte(`{"ociVersion":"1.0.2","linux":{"sysctl":{"kernel.shmmax":"1"},"namespaces":[{"type":"ipc","path":"/proc/1/ns/ipc"}]}}`))
	f.Add([]byte(`{"process":{"rlimits":[{"type":"RLIMIT_NOFILE","soft":2,"hard":1}]}}`))
	f.Add([]byte(`{"ociVersion":"1.0.2","root":{"path":"rootfs"},"hostname":"h","linux":{"namespaces":[{"type":"uts","path":"/proc/1/ns/uts"}]}}`))
	f.Add([]byte(`{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{"resources":{"network":{"classID":1048577,"priorities":[{"name":"lo","priority":5}]},"memory":{"kernelTCP":1024}}}}`))
	f.Add([]byte(`[`))
	f.Add([]byte(`{"ociVersion":"1.0.2","process":{"args":["sh","-c","a \u0026\u0026 b \ud83d\ude00 \ud800 \"q\" \\ \/ \b\f\n\r\t"],"env":null,"user":{"uid":0,"gid":null}},"x-unknown":{"a":[1,2.5e3,{"b":null}],"c":"\u00e9"},"annotations":{"k":"v","k":"w"}}`))
	f.Add([]byte(`{"ociVersion":"1.0.2","Process":{"cwd":"/"},"process":{"args":["x"]}}`))
	f.Add([]byte(`{"ociVersion":"1.0.2","hostname":"a","hostname":"b","linux":{"namespaces":[],"sysctl":{},"resources":{"memory":{"limit":-1,"swap":1.5}}}}`))
	f.Add([]byte(`{"ociVersion":"1.0.2","process":{"user":{"uid":4294967296}},"linux":{"devices":[{"path":"/dev/x","type":"c","major":1,"minor":2,"fileMode":438,"uid":0}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		// A slow input crashes the worker, so the fuzzer saves it.
		watchdog := time.AfterFunc(2*time.Second, func() { panic(fmt.Sprintf("validation of %q took over 2s", data)) })
		defer watchdog.Stop()
		spec, err := ParseSpec(data)
		// ParseSpec reads every section but other platforms' exactly as a
		// decode into the whole specs.Spec does, and refuses what it
		// refuses, whether or not its fast decoder took the document.
		var full specs.Spec
		if jerr := json.Unmarshal(data, &full); jerr == nil {
			full.Windows, full.Solaris, full.VM, full.ZOS, full.FreeBSD = nil, nil, nil, nil, nil
			if err != nil || !reflect.DeepEqual(*spec, full) {
				t.Fatalf("ParseSpec (%v) differs from decoding into specs.Spec:\n%+v\n%+v", err, spec, full)
			}
		} else if err == nil {
			t.Fatalf("ParseSpec accepted what json.Unmarshal refuses (%v): %+v", jerr, spec)
		}
		// What the fast decoder takes, json.Unmarshal decodes the same.
		var fast, slow linuxSpec
		if decodeFast(data, &fast) {
			if jerr := json.Unmarshal(data, &slow); jerr != nil || !reflect.DeepEqual(fast, slow) {
				t.Fatalf("the fast decoder took a document json.Unmarshal decodes differently (%v):\n%+v\n%+v", jerr, fast, slow)
			}
		}
		if err != nil {
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("parse error is not a *SpecError: %v", err)
			}
			return
		}
		if err := ValidateSpec(spec, ""); err != nil {
			var se *SpecError
			if !errors.As(err, &se) || se.Problem == "" {
				t.Fatalf("validation error is not a *SpecError with a problem: %#v", err)
			}
		}
	})
}

// otherPlatforms are the sections of specs.Spec that linuxSpec leaves out.
var otherPlatforms = map[string]bool{"windows": true, "solaris": true, "vm": true, "zos": true, "freebsd": true}

// linuxSpec must carry every other field of specs.Spec, under the same JSON
// name and type, or specs would lose it on the way to state.json.
func TestLinuxSpecCarriesEveryLinuxField(t *testing.T) {
	ours := map[string]reflect.Type{}
	lt := reflect.TypeOf(linuxSpec{})
	for i := 0; i < lt.NumField(); i++ {
		ours[strings.Split(lt.Field(i).Tag.Get("json"), ",")[0]] = lt.Field(i).Type
	}
	st := reflect.TypeOf(specs.Spec{})
	for i := 0; i < st.NumField(); i++ {
		f := st.Field(i)
		name := strings.Split(f.Tag.Get("json"), ",")[0]
		if otherPlatforms[name] {
			continue
		}
		if ours[name] != f.Type {
			t.Errorf("specs.Spec.%s (json %q, %v) is not in linuxSpec with that type", f.Name, name, f.Type)
		}
	}
	s := DefaultSpec()
	s.Annotations = map[string]string{"a": "b"}
	if got := linuxSpecOf(s).spec(); !reflect.DeepEqual(got, s) {
		t.Errorf("a spec through linuxSpec comes back different:\n%+v\n%+v", got, s)
	}
}

// The configs real tools write take the fast decoder (decodeFast): a
// fallback to json.Unmarshal would be correct, but costs every start the
// time the fast decoder exists to save.
func TestTypicalConfigsTakeTheFastDecoder(t *testing.T) {
	hardened, _ := json.Marshal(DefaultSpec())
	withSeccompArgs := DefaultSpec()
	withSeccompArgs.Process.Args = []string{"sh", "-c", "a && b < c > d"} // json.Marshal writes \u0026, \u003c, \u003e
	withSeccompArgs.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: new(int64)}}
	escaped, _ := json.Marshal(withSeccompArgs)
	indented, _ := json.MarshalIndent(DefaultSpec(), "", "\t")
	for _, tt := range []struct {
		name string
		data []byte
	}{
		{"nexus-runtime spec", hardened},
		{"escapes and resources", escaped},
		{"indented", indented},
		{"runc spec", []byte(runcSpecConfig)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var fast, slow linuxSpec
			if !decodeFast(tt.data, &fast) {
				t.Fatal("the fast decoder left this document to json.Unmarshal")
			}
			if err := json.Unmarshal(tt.data, &slow); err != nil || !reflect.DeepEqual(fast, slow) {
				t.Fatalf("decoded differently from json.Unmarshal (%v)", err)
			}
		})
	}
}

// runcSpecConfig is what `runc spec` (runc 1.1.5) writes.
const runcSpecConfig = `{
	"ociVersion": "1.0.2-dev",
	"process": {
		"terminal": true,
		"user": {"uid": 0, "gid": 0},
		"args": ["sh"],
		"env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
		"cwd": "/",
		"capabilities": {
			"bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
			"effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
			"permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
			"ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
		},
		"rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
		"noNewPrivileges": true
	},
	"root": {"path": "rootfs", "readonly": true},
	"hostname": "runc",
	"mounts": [
		{"destination": "/proc", "type": "proc", "source": "proc"},
		{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
		{"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
		{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
	],
	"linux": {
		"resources": {"devices": [{"allow": false, "access": "rwm"}]},
		"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
		"maskedPaths": ["/proc/acpi", "/proc/kcore", "/sys/firmware"],
		"readonlyPaths": ["/proc/bus", "/proc/sys"]
	}
}`

// FuzzReadState: what the fast decoder takes of a state.json, json.Unmarshal
// decodes the same.
func FuzzReadState(f *testing.F) {
	st := &savedState{ID: "c1", Pid: 42, PidStart: 7, Bundle: "/b", Rootfs: "/b/rootfs", Created: time.Date(2026, 12, 2, 20, 0, 0, 5, time.UTC),
		Annotations: map[string]string{"a": "b"}, Spec: DefaultSpec()}
	st.Cgroup.Paths = map[string]string{"memory": "/sys/fs/cgroup/memory/c1"}
	dir := f.TempDir()
	if err := writeState(dir, st); err != nil {
		f.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte(`{"id":"c1","created":null,"spec":null}`))
	f.Add([]byte(`{"id":"c1","created":"2026-13-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast, slow savedState
		if decodeFast(data, &fast) {
			if err := json.Unmarshal(data, &slow); err != nil || !reflect.DeepEqual(fast, slow) {
				t.Fatalf("the fast decoder took a state json.Unmarshal decodes differently (%v):\n%+v\n%+v", err, fast, slow)
			}
		}
	})
}

// A state.json written from config.json as read decodes to the spec the
// container was created with, through the fast decoder.
func TestStateKeepsTheSpecAsRead(t *testing.T) {
	spec := DefaultSpec()
	spec.Process.Args = []string{"sh", "-c", "a && b"}
	raw, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	dir := containerDir(root, "c1")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	st := &savedState{ID: "c1", Pid: 1, Created: time.Now().UTC(), Spec: spec, rawSpec: raw}
	if err := writeState(dir, st); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	var fast savedState
	if !decodeFast(data, &fast) {
		t.Fatalf("the fast decoder left state.json to json.Unmarshal: %s", data)
	}
	got, err := readState(root, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Spec, spec) || got.ID != "c1" || !got.Created.Equal(st.Created) {
		t.Fatalf("read back %+v, want the spec written", got)
	}
}
