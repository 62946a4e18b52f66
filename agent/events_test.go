package agent

import (
	"strings"
	"testing"
	"unicode/utf8"

	"nexus.dev/nexus/api/types"
)

func eventSupervisor() *supervisor {
	inst := &types.Instance{}
	inst.UID = "u1"
	return newSupervisor(&Agent{}, inst, false)
}

func reasons(es []types.InstanceEvent) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString(e.Reason)
		if e.Count > 1 {
			b.WriteString("x" + strings.Repeat("I", int(e.Count)))
		}
		b.WriteString(" ")
	}
	return strings.TrimSpace(b.String())
}

// TestEventHistory: a repeat of one of the latest four events counts it up
// and moves it to the end (a crash loop stays two lines); an older one is
// added again; the history keeps the latest MaxInstanceEvents; a message
// over the API's limit is cut on a character boundary and then passes the
// API's validation.
func TestEventHistory(t *testing.T) {
	s := eventSupervisor()
	s.event(types.EventNormal, "Prepared", "ready")
	for range 3 {
		s.event(types.EventNormal, "Started", "container started")
		s.event(types.EventWarning, "BackOff", "exited with code 1")
	}
	if got := reasons(s.status.Events); got != "Prepared StartedxIII BackOffxIII" {
		t.Fatalf("crash loop history %q", got)
	}
	st := s.status.Events[1]
	if st.Count != 3 || st.LastTime.Before(st.FirstTime) {
		t.Fatalf("counted event %+v", st)
	}
	for _, r := range []string{"A", "B", "C", "D"} {
		s.event(types.EventNormal, r, "")
	}
	s.event(types.EventNormal, "Prepared", "ready") // 6 events back: added again
	if got := reasons(s.status.Events); got != "Prepared StartedxIII BackOffxIII A B C D Prepared" {
		t.Fatalf("history %q", got)
	}

	for i := range 2 * types.MaxInstanceEvents {
		s.event(types.EventNormal, "Step", strings.Repeat("x", i))
	}
	if n := len(s.status.Events); n != types.MaxInstanceEvents {
		t.Fatalf("%d events kept, want %d", n, types.MaxInstanceEvents)
	}
	if last := s.status.Events[len(s.status.Events)-1]; last.Message != strings.Repeat("x", 2*types.MaxInstanceEvents-1) {
		t.Fatalf("the latest event is not last: %q", last.Message)
	}

	long := strings.Repeat("é", types.MaxEventMessage) // 2 bytes each
	s.event(types.EventWarning, "Long", long)
	got := s.status.Events[len(s.status.Events)-1].Message
	if len(got) > types.MaxEventMessage || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
		t.Fatalf("cut message: %d bytes, valid UTF-8 %v, ends %q", len(got), utf8.ValidString(got), got[len(got)-8:])
	}
	inst := &types.Instance{Spec: types.InstanceSpec{NodeName: "n1", Template: types.InstanceTemplate{Image: "nexus.local/hello"}}}
	inst.Name, inst.Namespace = "web-1", "default"
	inst.Status = s.status
	inst.Status.Phase = types.PhaseRunning
	types.Default(inst)
	if errs := types.Validate(inst); len(errs) != 0 {
		t.Fatalf("the API refuses the agent's history: %v", errs)
	}
}
