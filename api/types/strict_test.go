package types

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeStrictNamesTheField(t *testing.T) {
	type entry struct {
		Name string `json:"name"`
		Port int    `json:"port"`
	}
	type doc struct {
		Kind    string  `json:"kind"`
		Entries []entry `json:"entries"`
	}
	for _, tc := range []struct{ in, want string }{
		{"kind: a\nentries: [{name: x, prot: 1}]", "entries[0].prot: unknown field"},
		{"kind: a\nentries: [{name: x, port: one}]", "entries.port: must be a whole number"},
		{"kind: [", "not valid YAML or JSON"},
		{"- a\n- b", "not an object"},
	} {
		var d doc
		err := DecodeStrict([]byte(tc.in), &d)
		var de *DecodeError
		if !errors.As(err, &de) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want a DecodeError with %q", tc.in, err, tc.want)
		}
	}
	var d doc
	if err := DecodeStrict([]byte("kind: a\nentries: [{name: x, port: 1}]"), &d); err != nil || d.Entries[0].Port != 1 {
		t.Fatalf("valid document: %v %+v", err, d)
	}
}
