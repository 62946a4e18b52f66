package scheduler

import (
	"slices"
	"testing"
)

func TestParseConstraint(t *testing.T) {
	tests := []struct {
		in   string
		want Constraint
		err  bool
	}{
		{in: "zone=eu", want: Constraint{Key: "zone", Op: OpEqual, Values: []string{"eu"}}},
		{in: "zone != eu", want: Constraint{Key: "zone", Op: OpNotEqual, Values: []string{"eu"}}},
		{in: "gpu in (a100, h100)", want: Constraint{Key: "gpu", Op: OpIn, Values: []string{"a100", "h100"}}},
		{in: "gpu not in (t4)", want: Constraint{Key: "gpu", Op: OpNotIn, Values: []string{"t4"}}},
		{in: "os =~ ^lin.*", want: Constraint{Key: "os", Op: OpRegexp, Values: []string{"^lin.*"}}},
		{in: "path=a=b", want: Constraint{Key: "path", Op: OpEqual, Values: []string{"a=b"}}},
		{in: "kernel version >=1.2, <2.0", want: Constraint{Key: "kernel", Op: OpVersion, Values: []string{">=1.2, <2.0"}}},
		{in: "ssd exists", want: Constraint{Key: "ssd", Op: OpExists}},
		{in: "ssd not exists", want: Constraint{Key: "ssd", Op: OpNotExists}},
		{in: "", err: true},
		{in: "zone", err: true},
		{in: "=eu", err: true},
		{in: "gpu in a100", err: true},
		{in: "gpu in ()", err: true},
		{in: "os =~ (", err: true},
		{in: "kernel version >=x", err: true},
	}
	for _, tt := range tests {
		got, err := ParseConstraint(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("ParseConstraint(%q) error = %v, want error %v", tt.in, err, tt.err)
			continue
		}
		if err == nil && (got.Key != tt.want.Key || got.Op != tt.want.Op || !slices.Equal(got.Values, tt.want.Values)) {
			t.Errorf("ParseConstraint(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if err == nil {
			again, err := ParseConstraint(got.String())
			if err != nil || again.String() != got.String() {
				t.Errorf("round trip of %q via %q: %+v, %v", tt.in, got.String(), again, err)
			}
		}
	}
}

func TestConstraintMatches(t *testing.T) {
	tests := []struct {
		c       string
		v       string
		present bool
		want    bool
	}{
		{"zone=eu", "eu", true, true},
		{"zone=eu", "us", true, false},
		{"zone=eu", "", false, false},
		{"zone!=eu", "us", true, true},
		{"zone!=eu", "eu", true, false},
		{"zone!=eu", "", false, true},
		{"zone in (eu,us)", "us", true, true},
		{"zone in (eu,us)", "ap", true, false},
		{"zone in (eu,us)", "", false, false},
		{"zone not in (eu,us)", "ap", true, true},
		{"zone not in (eu,us)", "eu", true, false},
		{"zone not in (eu,us)", "", false, true},
		{"os =~ ^lin", "linux", true, true},
		{"os =~ ^lin", "darwin", true, false},
		{"os =~ .*", "", false, false},
		{"k version >=1.2, <2.0", "1.2.0", true, true},
		{"k version >=1.2, <2.0", "v1.9.9", true, true},
		{"k version >=1.2, <2.0", "2.0.0", true, false},
		{"k version >=1.2, <2.0", "1.1.9", true, false},
		{"k version >=1.2, <2.0", "2.0.0-rc.1", true, true}, // a pre-release of 2.0 sorts before 2.0
		{"k version >=1.2, <2.0", "banana", true, false},
		{"k version !=1.5", "1.5.0", true, false},
		{"k version 1.5", "1.5", true, true},
		{"gpu exists", "", true, true},
		{"gpu exists", "", false, false},
		{"gpu not exists", "", false, true},
		{"gpu not exists", "x", true, false},
	}
	for _, tt := range tests {
		c, err := ParseConstraint(tt.c)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Matches(tt.v, tt.present); got != tt.want {
			t.Errorf("%q.Matches(%q, %v) = %v, want %v", tt.c, tt.v, tt.present, got, tt.want)
		}
	}
}

func TestVersionCompare(t *testing.T) {
	order := []string{"0.9", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "v1.0.1+build.5", "1.10"}
	for i := range order {
		for j := range order {
			a, err := ParseVersion(order[i])
			if err != nil {
				t.Fatal(err)
			}
			b, _ := ParseVersion(order[j])
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := a.Compare(b); got != want {
				t.Errorf("Compare(%s, %s) = %d, want %d", order[i], order[j], got, want)
			}
		}
	}
	for _, bad := range []string{"", "1.2.3.4", "x", "1.-", "1.2-", "1..2"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) succeeded", bad)
		}
	}
}

// FuzzParseVersionRange checks that parsing never panics and that a range
// that parses decides every version consistently with its own bounds.
func FuzzParseVersionRange(f *testing.F) {
	for _, s := range []string{">=1.2, <2.0", "1.0", "!=1.5.0-rc.1", ">v1", "<=0.0.1+x", ",", ">= 1.2 ,<2", "==3"} {
		f.Add(s, "1.5.0")
	}
	f.Fuzz(func(t *testing.T, rng, ver string) {
		r, err := ParseVersionRange(rng)
		if err != nil {
			return
		}
		v, err := ParseVersion(ver)
		if err != nil {
			return
		}
		in := r.Contains(v)
		for _, b := range r {
			c := v.Compare(b.v)
			if c != -b.v.Compare(v) {
				t.Fatalf("Compare not antisymmetric: %v %v", v, b.v)
			}
		}
		c := Constraint{Key: "k", Op: OpVersion, Values: []string{rng}}
		if c.Matches(ver, true) != in {
			t.Fatalf("Matches and Contains disagree on %q in %q", ver, rng)
		}
	})
}

// FuzzParseConstraint checks that a parsed constraint prints back to an
// equivalent one.
func FuzzParseConstraint(f *testing.F) {
	for _, s := range []string{"zone=eu", "a in (b,c)", "a not in (b)", "os =~ ^l", "k version >=1", "g exists", "g not exists", "a!=b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConstraint(s)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseConstraint(%q) gave invalid %+v: %v", s, c, err)
		}
		again, err := ParseConstraint(c.String())
		if err != nil {
			t.Fatalf("reparse %q (from %q): %v", c.String(), s, err)
		}
		if again.Key != c.Key || again.Op != c.Op || !slices.Equal(again.Values, c.Values) {
			t.Fatalf("round trip %q -> %+v -> %q -> %+v", s, c, c.String(), again)
		}
	})
}
