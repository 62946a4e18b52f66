package types

import (
	"strings"
	"testing"
	"time"
)

// TestInstanceEventValidation: an agent's event history is refused when an
// event has an unknown type, a reason that is not one word, a message over
// MaxEventMessage or a negative count, or when it is longer than
// MaxInstanceEvents, naming the field; a plausible history passes.
func TestInstanceEventValidation(t *testing.T) {
	w := decodeValid(t, webYAML).(*Workload)
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	ok := InstanceEvent{Type: EventNormal, Reason: "Started", Message: "container started", Count: 1, FirstTime: at, LastTime: at}
	many := make([]InstanceEvent, MaxInstanceEvents+1)
	for i := range many {
		many[i] = ok
	}
	for _, tc := range []struct {
		name   string
		events []InstanceEvent
		want   []string
	}{
		{"plausible", []InstanceEvent{ok, {Type: EventWarning, Reason: "BackOff", Message: strings.Repeat("x", MaxEventMessage), Count: 4, FirstTime: at, LastTime: at}}, nil},
		{"full", many[:MaxInstanceEvents], nil},
		{"too many", many, []string{"status.events: has 31 events: keep at most 30, the latest"}},
		{"unknown type", []InstanceEvent{{Type: "Info", Reason: "Started", LastTime: at}}, []string{`status.events[0].type: must be Normal or Warning, not "Info"`}},
		{"no reason", []InstanceEvent{{Type: EventNormal, LastTime: at}}, []string{"status.events[0].reason: must be one word"}},
		{"two words", []InstanceEvent{ok, {Type: EventNormal, Reason: "Back Off", LastTime: at}}, []string{`status.events[1].reason: must be one word of at most 64 bytes, such as Started, not "Back Off"`}},
		{"long reason", []InstanceEvent{{Type: EventNormal, Reason: strings.Repeat("R", 65), LastTime: at}}, []string{"status.events[0].reason: must be one word of at most 64 bytes"}},
		{"long message", []InstanceEvent{{Type: EventNormal, Reason: "Started", Message: strings.Repeat("x", MaxEventMessage+1), LastTime: at}},
			[]string{"status.events[0].message: is 1025 bytes long: at most 1024"}},
		{"negative count", []InstanceEvent{{Type: EventNormal, Reason: "Started", Count: -1, LastTime: at}}, []string{"status.events[0].count: must not be negative"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkInstanceStatus(t, w, func(st *InstanceStatus) { st.Events = tc.events }, tc.want)
		})
	}
}
