package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// FuzzValidateSpec feeds arbitrary config.json documents through parsing
// and validation: they must never panic, and every rejection must be a
// *Error naming what is wrong.
func FuzzValidateSpec(f *testing.F) {
	good, _ := json.Marshal(Default())
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
		spec, err := Parse(data)
		// Parse reads every section but other platforms' exactly as a
		// decode into specs.Spec does, and refuses what it refuses
		// there, whether or not its fast decoder took the document.
		var v linuxSpec
		if jerr := json.Unmarshal(data, &v); jerr == nil {
			full := v.Spec
			if err != nil || !reflect.DeepEqual(*spec, full) {
				t.Fatalf("Parse (%v) differs from decoding into specs.Spec:\n%+v\n%+v", err, spec, full)
			}
		} else if err == nil {
			t.Fatalf("Parse accepted what json.Unmarshal refuses (%v): %+v", jerr, spec)
		}
		// What the fast decoder takes, json.Unmarshal decodes the same.
		var fast, slow Document
		if DecodeFast(data, &fast) {
			if jerr := json.Unmarshal(data, &slow); jerr != nil || !reflect.DeepEqual(fast, slow) {
				t.Fatalf("the fast decoder took a document json.Unmarshal decodes differently (%v):\n%+v\n%+v", jerr, fast, slow)
			}
		}
		if err != nil {
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("parse error is not a *Error: %v", err)
			}
			return
		}
		if err := Validate(spec, ""); err != nil {
			var se *Error
			if !errors.As(err, &se) || se.Problem == "" {
				t.Fatalf("validation error is not a *Error with a problem: %#v", err)
			}
		}
	})
}

// linuxSpec decodes as specs.Spec does but for other platforms' sections,
// which it takes as any JSON (its fields hide the embedded ones of the same
// name), as Parse does: {"zos":"0"} is no reason to refuse a Linux spec.
type linuxSpec struct {
	specs.Spec
	Windows json.RawMessage `json:"windows,omitempty"`
	Solaris json.RawMessage `json:"solaris,omitempty"`
	VM      json.RawMessage `json:"vm,omitempty"`
	ZOS     json.RawMessage `json:"zos,omitempty"`
	FreeBSD json.RawMessage `json:"freebsd,omitempty"`
}

// otherPlatforms are the sections of specs.Spec that Document leaves out.
var otherPlatforms = map[string]bool{"windows": true, "solaris": true, "vm": true, "zos": true, "freebsd": true}

// Document must carry every other field of specs.Spec, under the same JSON
// name and type, or specs would lose it on the way to state.json.
func TestDocumentCarriesEveryLinuxField(t *testing.T) {
	ours := map[string]reflect.Type{}
	lt := reflect.TypeOf(Document{})
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
			t.Errorf("specs.Spec.%s (json %q, %v) is not in Document with that type", f.Name, name, f.Type)
		}
	}
	s := Default()
	s.Annotations = map[string]string{"a": "b"}
	if got := DocumentOf(s).Spec(); !reflect.DeepEqual(got, s) {
		t.Errorf("a spec through Document comes back different:\n%+v\n%+v", got, s)
	}
}

// The configs real tools write take the fast decoder (DecodeFast): a
// fallback to json.Unmarshal would be correct, but costs every start the
// time the fast decoder exists to save.
func TestTypicalConfigsTakeTheFastDecoder(t *testing.T) {
	hardened, _ := json.Marshal(Default())
	withSeccompArgs := Default()
	withSeccompArgs.Process.Args = []string{"sh", "-c", "a && b < c > d"} // json.Marshal writes \u0026, \u003c, \u003e
	withSeccompArgs.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: new(int64)}}
	escaped, _ := json.Marshal(withSeccompArgs)
	indented, _ := json.MarshalIndent(Default(), "", "\t")
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
			var fast, slow Document
			if !DecodeFast(tt.data, &fast) {
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
