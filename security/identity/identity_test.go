package identity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRoundTrip(t *testing.T) {
	for _, id := range []ID{
		Node("prod", "n1"), Server("prod", "s-1"), User("prod", "alice@example.com"), Workload("prod", "default", "web"),
	} {
		got, err := Parse(id.String())
		if err != nil || got != id {
			t.Errorf("Parse(%s) = %+v, %v", id, got, err)
		}
		if id.URL().String() != id.String() {
			t.Errorf("URL %s != %s", id.URL(), id)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for in, want := range map[string]string{
		"https://prod/node/n1":                           "not a spiffe",
		"spiffe://prod/node":                             "not a Nexus ID",
		"spiffe://prod/robot/r1":                         "not a Nexus ID",
		"spiffe://prod/node/../etc":                      "not a Nexus ID",
		"spiffe://prod/node/..":                          "is not a name",
		"spiffe://Prod/node/n1":                          "not allowed",
		"spiffe://prod/ns/default/workload/":             "name is empty",
		"spiffe://prod/node/n1/extra":                    "not a Nexus ID",
		"spiffe://prod/user/a b":                         "not allowed",
		"spiffe://pr@d/user/a":                           "not allowed",
		"spiffe://prod/ns/../workload/x":                 "is not a name",
		"spiffe://prod/node/" + strings.Repeat("a", 252): "at most 251",
	} {
		if _, err := Parse(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", in, err, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("spiffe://prod/ns/default/workload/web")
	f.Add("spiffe://prod/node/n1")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		if again, err := Parse(id.String()); err != nil || again != id {
			t.Fatalf("%q parsed to %+v which does not round-trip: %v", s, id, err)
		}
	})
}

func TestValidateLengthLimits(t *testing.T) {
	a := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		id   ID
		want string // "" means valid
	}{
		{Node("prod", a(MaxNameLen)), ""},
		{Node("prod", a(MaxNameLen+1)), "at most 251 (a name is also a file name, NAME.crt, and file names are at most 255 bytes)"},
		{User("prod", a(240)), ""},
		{User("prod", a(253)), "is 253 characters: use at most 251"},
		{Server(a(253), "s1"), ""},
		{Server(a(254), "s1"), "cluster"},
		{Workload("prod", a(253), "web"), ""},
		{Workload("prod", a(254), "web"), "namespace"},
		{Node("prod", ""), "name is empty"},
	}
	for _, tt := range tests {
		err := tt.id.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Validate(%d-byte name, %d-byte cluster) = %v, want %q", len(tt.id.Name), len(tt.id.Cluster), err, tt.want)
		}
	}
}

// FuzzValidateName checks that every name Validate accepts can be used
// where names are used: as a file name with the extensions nexus cert
// issue gives it, and in a spiffe:// ID that parses back to itself.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"alice", "alice@example.com", "n-1.prod_x", ".", "..", "a/b", strings.Repeat("a", MaxNameLen), strings.Repeat("a", MaxNameLen+1), "é"} {
		f.Add(s)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, name string) {
		id := User("prod", name)
		if err := id.Validate(); err != nil {
			return
		}
		if len(name) > MaxNameLen {
			t.Fatalf("a %d-byte name passed", len(name))
		}
		if again, err := Parse(id.String()); err != nil || again != id {
			t.Fatalf("%q: %s does not parse back: %+v, %v", name, id, again, err)
		}
		for _, ext := range []string{".crt", ".key"} {
			p := filepath.Join(dir, name+ext)
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatalf("valid name %q is not a usable file name: %v", name, err)
			}
			if filepath.Dir(p) != dir {
				t.Fatalf("valid name %q leaves the directory: %s", name, p)
			}
			os.Remove(p)
		}
	})
}
