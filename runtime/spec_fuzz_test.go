package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"
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
