package runtime

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
	f.Fuzz(func(t *testing.T, data []byte) {
		// A slow input crashes the worker, so the fuzzer saves it.
		watchdog := time.AfterFunc(2*time.Second, func() { panic(fmt.Sprintf("validation of %q took over 2s", data)) })
		defer watchdog.Stop()
		spec, err := ParseSpec(data)
		// ParseSpec reads every section but other platforms' exactly as a
		// decode into the whole specs.Spec does.
		var full specs.Spec
		if json.Unmarshal(data, &full) == nil {
			full.Windows, full.Solaris, full.VM, full.ZOS, full.FreeBSD = nil, nil, nil, nil, nil
			if err != nil || !reflect.DeepEqual(*spec, full) {
				t.Fatalf("ParseSpec (%v) differs from decoding into specs.Spec:\n%+v\n%+v", err, spec, full)
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
