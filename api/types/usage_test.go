package types

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestInstanceUsageValidation: what an agent reports of an instance's use
// is refused when an amount or count is negative or the time is missing,
// naming the field; a plausible report passes and survives decoding.
func TestInstanceUsageValidation(t *testing.T) {
	w := decodeValid(t, webYAML).(*Workload)
	sampled := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		usage InstanceUsage
		want  []string
	}{
		{"plausible", InstanceUsage{CPUMillicores: 250, MemoryBytes: 20 << 20, MemoryLimitBytes: 128 << 20, OOMKills: 2, Pids: 7, SampledAt: sampled}, nil},
		{"idle", InstanceUsage{SampledAt: sampled}, nil},
		{"negative cpu", InstanceUsage{CPUMillicores: -1, SampledAt: sampled}, []string{"status.resources.cpuMillicores: must not be negative, not -1"}},
		{"negative memory and kills", InstanceUsage{MemoryBytes: -5, OOMKills: -1, SampledAt: sampled},
			[]string{"status.resources.memoryBytes: must not be negative", "status.resources.oomKills: must not be negative"}},
		{"negative limit and pids", InstanceUsage{MemoryLimitBytes: -1, Pids: -2, SampledAt: sampled},
			[]string{"status.resources.memoryLimitBytes: must not be negative", "status.resources.pids: must not be negative"}},
		{"no time", InstanceUsage{CPUMillicores: 5}, []string{"status.resources.sampledAt: must say when the numbers were measured"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.usage
			checkInstanceStatus(t, w, func(st *InstanceStatus) { st.Resources = &u }, tc.want)
		})
	}
}

// checkInstanceStatus validates a running instance of w's template whose
// status set changes, and checks the errors are want (none when nil),
// each naming its field.
func checkInstanceStatus(t *testing.T, w *Workload, set func(*InstanceStatus), want []string) {
	t.Helper()
	inst := &Instance{Spec: InstanceSpec{NodeName: "n1", Template: w.Spec.Template}}
	inst.Name, inst.Namespace = "web-1", "default"
	inst.Status.Phase = PhaseRunning
	set(&inst.Status)
	Default(inst)
	errs := Validate(inst)
	if want == nil {
		if len(errs) != 0 {
			t.Fatalf("unexpected errors: %v", errs)
		}
		return
	}
	if len(errs) != len(want) {
		t.Errorf("got %d errors %q, want %d", len(errs), errs.Error(), len(want))
	}
	for _, w := range want {
		if !strings.Contains(errs.Error(), w) {
			t.Errorf("errors %q do not contain %q", errs.Error(), w)
		}
	}
}

// TestInstanceUsageJSON: the fields have the names docs/api.md gives, and
// an idle container's zero CPU and memory are written, not left out.
func TestInstanceUsageJSON(t *testing.T) {
	doc := `{"kind":"Instance","metadata":{"name":"web-1","namespace":"default"},"spec":{"nodeName":"n1","template":{"image":"nexus.local/hello"}},` +
		`"status":{"phase":"Running","resources":{"cpuMillicores":12,"memoryBytes":1048576,"memoryLimitBytes":67108864,"oomKills":1,"pids":3,"sampledAt":"2025-03-01T12:00:00Z"}}}`
	inst := decodeValid(t, doc).(*Instance)
	want := InstanceUsage{CPUMillicores: 12, MemoryBytes: 1 << 20, MemoryLimitBytes: 64 << 20, OOMKills: 1, Pids: 3,
		SampledAt: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	if got := inst.Status.Resources; got == nil || *got != want {
		t.Fatalf("decoded resources %+v, want %+v", got, want)
	}
	js, err := json.Marshal(InstanceUsage{SampledAt: want.SampledAt})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"cpuMillicores":0`, `"memoryBytes":0`, `"sampledAt":"2025-03-01T12:00:00Z"`} {
		if !strings.Contains(string(js), k) {
			t.Errorf("idle usage %s lacks %s", js, k)
		}
	}
}
