package identity

import (
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
		"spiffe://prod/ns/default/workload/":             "1-253",
		"spiffe://prod/node/n1/extra":                    "not a Nexus ID",
		"spiffe://prod/user/a b":                         "not allowed",
		"spiffe://pr@d/user/a":                           "not allowed",
		"spiffe://prod/ns/../workload/x":                 "is not a name",
		"spiffe://prod/node/" + strings.Repeat("a", 254): "1-253",
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
