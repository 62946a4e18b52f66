package scheduler

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Operator is how a constraint compares a node attribute.
type Operator string

const (
	OpEqual     Operator = "="
	OpNotEqual  Operator = "!="
	OpIn        Operator = "in"
	OpNotIn     Operator = "not in"
	OpRegexp    Operator = "=~"
	OpVersion   Operator = "version"
	OpExists    Operator = "exists"
	OpNotExists Operator = "not exists"
)

// Constraint is a hard requirement on a node attribute. Key is a node label
// key, or one of the node fields "node.id", "node.zone", "node.rack".
// Values holds one value for =, != and =~ (the pattern), the set for in and
// not in, and the range (">=1.2, <2.0") for version.
//
// A node without the attribute satisfies only !=, not in and not exists.
type Constraint struct {
	Key    string
	Op     Operator
	Values []string
}

// String is the constraint in the form ParseConstraint reads, and the name
// explanations use ("zone=eu", "gpu in (a100,h100)").
func (c Constraint) String() string {
	switch c.Op {
	case OpEqual, OpNotEqual, OpRegexp:
		v := ""
		if len(c.Values) > 0 {
			v = c.Values[0]
		}
		if c.Op == OpRegexp {
			return c.Key + " =~ " + v
		}
		if strings.HasPrefix(v, "~") {
			return c.Key + " " + string(c.Op) + " " + v // not "k=~v", which is a regexp
		}
		return c.Key + string(c.Op) + v
	case OpIn, OpNotIn:
		return c.Key + " " + string(c.Op) + " (" + strings.Join(c.Values, ",") + ")"
	case OpVersion:
		v := ""
		if len(c.Values) > 0 {
			v = c.Values[0]
		}
		return c.Key + " version " + v
	case OpExists, OpNotExists:
		return c.Key + " " + string(c.Op)
	}
	return c.Key + " " + string(c.Op) + " " + strings.Join(c.Values, ",")
}

// ParseConstraint reads "key=value", "key!=value", "key =~ regexp",
// "key in (a,b)", "key not in (a,b)", "key version >=1.2, <2.0",
// "key exists" and "key not exists".
func ParseConstraint(s string) (Constraint, error) {
	s = strings.TrimSpace(s)
	bad := func(why string) (Constraint, error) {
		return Constraint{}, fmt.Errorf("parse constraint %q: %s (forms: k=v, k!=v, k =~ re, k in (a,b), k not in (a,b), k version >=1.2, k exists, k not exists)", s, why)
	}
	if s == "" {
		return bad("empty")
	}
	// The operator is the one that starts first (the longest on a tie), so
	// that a value may contain another operator's spelling.
	type opForm struct {
		sep string
		op  Operator
	}
	best, i := opForm{}, -1
	for _, f := range []opForm{{" not in ", OpNotIn}, {" in ", OpIn}, {" version ", OpVersion}, {"=~", OpRegexp}, {"!=", OpNotEqual}, {"=", OpEqual}} {
		j := strings.Index(s, f.sep)
		if j >= 0 && (i < 0 || j < i || (j == i && len(f.sep) > len(best.sep))) {
			best, i = f, j
		}
	}
	if form := best; i >= 0 {
		key := strings.TrimSpace(s[:i])
		rest := strings.TrimSpace(s[i+len(form.sep):])
		if !validKey(key) {
			return bad("bad key")
		}
		c := Constraint{Key: key, Op: form.op}
		switch form.op {
		case OpIn, OpNotIn:
			if len(rest) < 2 || rest[0] != '(' || rest[len(rest)-1] != ')' {
				return bad("set must be in parentheses")
			}
			for _, v := range strings.Split(rest[1:len(rest)-1], ",") {
				if v = strings.TrimSpace(v); v != "" {
					c.Values = append(c.Values, v)
				}
			}
			if len(c.Values) == 0 {
				return bad("empty set")
			}
		case OpVersion:
			if _, err := ParseVersionRange(rest); err != nil {
				return Constraint{}, fmt.Errorf("parse constraint %q: %w", s, err)
			}
			c.Values = []string{rest}
		case OpRegexp:
			if _, err := regexp.Compile(rest); err != nil {
				return Constraint{}, fmt.Errorf("parse constraint %q: %w", s, err)
			}
			c.Values = []string{rest}
		default:
			c.Values = []string{rest}
		}
		return c, nil
	}
	if key, ok := strings.CutSuffix(s, " not exists"); ok && validKey(strings.TrimSpace(key)) {
		return Constraint{Key: strings.TrimSpace(key), Op: OpNotExists}, nil
	}
	if key, ok := strings.CutSuffix(s, " exists"); ok && validKey(strings.TrimSpace(key)) {
		return Constraint{Key: strings.TrimSpace(key), Op: OpExists}, nil
	}
	return bad("no operator")
}

func validKey(k string) bool {
	return k != "" && !strings.ContainsAny(k, " \t=!()~,")
}

// matcher decides a constraint for one attribute value. It is built once
// per distinct constraint and then run once per distinct label value, never
// per node (see labelColumn).
type matcher struct {
	op     Operator
	values []string
	re     *regexp.Regexp
	rng    VersionRange
	err    error
}

func newMatcher(c Constraint) matcher {
	m := matcher{op: c.Op, values: c.Values}
	switch c.Op {
	case OpExists, OpNotExists:
	case OpEqual, OpNotEqual:
		if len(c.Values) != 1 {
			m.err = fmt.Errorf("constraint %s: %s takes one value", c, c.Op)
		}
	case OpIn, OpNotIn:
		if len(c.Values) == 0 {
			m.err = fmt.Errorf("constraint %s: %s takes a non-empty set", c, c.Op)
		}
	case OpRegexp:
		if len(c.Values) != 1 {
			m.err = fmt.Errorf("constraint %s: =~ takes one pattern", c)
			break
		}
		m.re, m.err = regexp.Compile(c.Values[0])
	case OpVersion:
		if len(c.Values) != 1 {
			m.err = fmt.Errorf("constraint %s: version takes one range", c)
			break
		}
		m.rng, m.err = ParseVersionRange(c.Values[0])
	default:
		m.err = fmt.Errorf("constraint %s: unknown operator %q", c, c.Op)
	}
	return m
}

// match reports whether an attribute with value v (present says whether the
// node has the attribute at all) satisfies the constraint. A constraint that
// does not compile matches nothing.
func (m *matcher) match(v string, present bool) bool {
	if m.err != nil {
		return false
	}
	switch m.op {
	case OpExists:
		return present
	case OpNotExists:
		return !present
	case OpNotEqual:
		return !present || v != m.values[0]
	case OpNotIn:
		return !present || !contains(m.values, v)
	}
	if !present {
		return false
	}
	switch m.op {
	case OpEqual:
		return v == m.values[0]
	case OpIn:
		return contains(m.values, v)
	case OpRegexp:
		return m.re.MatchString(v)
	case OpVersion:
		ver, err := ParseVersion(v)
		return err == nil && m.rng.Contains(ver)
	}
	return false
}

// Matches reports whether an attribute value satisfies c (present says
// whether the node has the attribute). It compiles c on every call; the
// scheduler compiles once per constraint and label value instead.
func (c Constraint) Matches(v string, present bool) bool {
	m := newMatcher(c)
	return m.match(v, present)
}

// Validate reports whether c compiles (operator known, as many values as
// it takes, regexp and version range valid).
func (c Constraint) Validate() error { return newMatcher(c).err }

func contains(set []string, v string) bool {
	for _, s := range set {
		if s == v {
			return true
		}
	}
	return false
}

// Version is a semantic version: numeric release parts and an optional
// pre-release. "v1.2", "1.2.3", "1.2.3-rc.1+build" all parse; missing parts
// are zero.
type Version struct {
	Parts [3]uint64
	Pre   string
}

// ParseVersion reads a semantic version.
func ParseVersion(s string) (Version, error) {
	orig := s
	s = strings.TrimPrefix(strings.TrimSpace(s), "v")
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	var v Version
	if i := strings.IndexByte(s, '-'); i >= 0 {
		v.Pre = s[i+1:]
		s = s[:i]
		if v.Pre == "" {
			return Version{}, fmt.Errorf("parse version %q: empty pre-release", orig)
		}
	}
	parts := strings.Split(s, ".")
	if len(parts) == 0 || len(parts) > 3 {
		return Version{}, fmt.Errorf("parse version %q: want 1 to 3 numeric parts", orig)
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return Version{}, fmt.Errorf("parse version %q: part %q is not a number", orig, p)
		}
		v.Parts[i] = n
	}
	return v, nil
}

// Compare returns -1, 0 or 1. A pre-release sorts before its release;
// pre-releases compare by dot-separated identifiers, numeric ones
// numerically, as semver says.
func (v Version) Compare(o Version) int {
	for i := range v.Parts {
		if v.Parts[i] != o.Parts[i] {
			if v.Parts[i] < o.Parts[i] {
				return -1
			}
			return 1
		}
	}
	switch {
	case v.Pre == o.Pre:
		return 0
	case v.Pre == "":
		return 1
	case o.Pre == "":
		return -1
	}
	a, b := strings.Split(v.Pre, "."), strings.Split(o.Pre, ".")
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] == b[i] {
			continue
		}
		na, ea := strconv.ParseUint(a[i], 10, 64)
		nb, eb := strconv.ParseUint(b[i], 10, 64)
		switch {
		case ea == nil && eb == nil:
			if na < nb {
				return -1
			}
			return 1
		case ea == nil:
			return -1
		case eb == nil:
			return 1
		case a[i] < b[i]:
			return -1
		default:
			return 1
		}
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}

// VersionRange is a conjunction of comparisons, e.g. ">=1.2, <2.0".
type VersionRange []versionBound

type versionBound struct {
	op string // one of = != < <= > >=
	v  Version
}

// ParseVersionRange reads comma-separated comparisons (=, ==, !=, <, <=,
// >, >=) against semantic versions; a bare version means =.
func ParseVersionRange(s string) (VersionRange, error) {
	var r VersionRange
	for _, term := range strings.Split(s, ",") {
		term = strings.TrimSpace(term)
		if term == "" {
			return nil, fmt.Errorf("parse version range %q: empty term", s)
		}
		op := "="
		for _, cand := range []string{">=", "<=", "==", "!=", ">", "<", "="} {
			if strings.HasPrefix(term, cand) {
				op = cand
				term = strings.TrimSpace(term[len(cand):])
				break
			}
		}
		if op == "==" {
			op = "="
		}
		v, err := ParseVersion(term)
		if err != nil {
			return nil, fmt.Errorf("parse version range %q: %w", s, err)
		}
		r = append(r, versionBound{op, v})
	}
	return r, nil
}

// Contains reports whether v satisfies every comparison.
func (r VersionRange) Contains(v Version) bool {
	for _, b := range r {
		c := v.Compare(b.v)
		var ok bool
		switch b.op {
		case "=":
			ok = c == 0
		case "!=":
			ok = c != 0
		case "<":
			ok = c < 0
		case "<=":
			ok = c <= 0
		case ">":
			ok = c > 0
		case ">=":
			ok = c >= 0
		}
		if !ok {
			return false
		}
	}
	return true
}
