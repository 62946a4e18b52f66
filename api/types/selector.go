package types

import (
	"fmt"
	"slices"
	"strings"
)

// Selector matches label (or field) sets. The zero Selector matches
// everything.
type Selector struct {
	reqs []requirement
}

type selectorOp int

const (
	opEquals selectorOp = iota
	opNotEquals
	opIn
	opNotIn
	opExists
	opNotExists
)

type requirement struct {
	key    string
	op     selectorOp
	values []string
}

// Empty reports whether the selector matches everything.
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

// Matches reports whether every requirement holds for labels.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		v, has := labels[r.key]
		switch r.op {
		case opEquals:
			if !has || v != r.values[0] {
				return false
			}
		case opNotEquals:
			if has && v == r.values[0] {
				return false
			}
		case opIn:
			if !has || !slices.Contains(r.values, v) {
				return false
			}
		case opNotIn:
			if has && slices.Contains(r.values, v) {
				return false
			}
		case opExists:
			if !has {
				return false
			}
		case opNotExists:
			if has {
				return false
			}
		}
	}
	return true
}

// RequiredValue returns the value key must equal for the selector to
// match, if the selector pins one (key=value).
func (s Selector) RequiredValue(key string) (string, bool) {
	for _, r := range s.reqs {
		if r.key == key && (r.op == opEquals || (r.op == opIn && len(r.values) == 1)) {
			return r.values[0], true
		}
	}
	return "", false
}

func (s Selector) String() string {
	parts := make([]string, len(s.reqs))
	for i, r := range s.reqs {
		switch r.op {
		case opEquals:
			parts[i] = r.key + "=" + r.values[0]
		case opNotEquals:
			parts[i] = r.key + "!=" + r.values[0]
		case opIn:
			parts[i] = r.key + " in (" + strings.Join(r.values, ",") + ")"
		case opNotIn:
			parts[i] = r.key + " notin (" + strings.Join(r.values, ",") + ")"
		case opExists:
			parts[i] = r.key
		case opNotExists:
			parts[i] = "!" + r.key
		}
	}
	return strings.Join(parts, ",")
}

// SelectorFromMap is the selector that requires every key=value of m.
func SelectorFromMap(m map[string]string) Selector {
	var s Selector
	for _, k := range sortedKeys(m) {
		s.reqs = append(s.reqs, requirement{key: k, op: opEquals, values: []string{m[k]}})
	}
	return s
}

// ParseLabelSelector reads Kubernetes label selector syntax: requirements
// separated by commas, each one of "k=v", "k==v", "k!=v", "k in (a,b)",
// "k notin (a,b)", "k" (exists) or "!k" (does not exist).
func ParseLabelSelector(s string) (Selector, error) {
	return parseSelector(s, true)
}

// ParseFieldSelector reads a field selector: "f=v", "f==v" and "f!=v"
// requirements separated by commas. Which fields exist depends on the
// resource (SelectableFields).
func ParseFieldSelector(s string) (Selector, error) {
	return parseSelector(s, false)
}

func parseSelector(s string, labels bool) (Selector, error) {
	var sel Selector
	what := "label selector"
	if !labels {
		what = "field selector"
	}
	bad := func(part, why string) error {
		if labels {
			return fmt.Errorf("%s %q: %s (forms: k=v, k!=v, k in (a,b), k notin (a,b), k, !k; separated by commas)", what, part, why)
		}
		return fmt.Errorf("%s %q: %s (forms: f=v, f!=v; separated by commas)", what, part, why)
	}
	for _, part := range splitRequirements(s) {
		part = strings.TrimSpace(part)
		if part == "" {
			if strings.TrimSpace(s) == "" {
				break
			}
			return Selector{}, bad(s, "empty requirement")
		}
		r, err := parseRequirement(part, labels)
		if err != nil {
			return Selector{}, bad(part, err.Error())
		}
		sel.reqs = append(sel.reqs, r)
	}
	return sel, nil
}

// splitRequirements splits at commas outside parentheses.
func splitRequirements(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

func parseRequirement(part string, labels bool) (requirement, error) {
	checkKey := func(k string) error {
		if labels {
			if msg := validateLabelKey(k); msg != "" {
				return fmt.Errorf("key %q %s", k, msg)
			}
			return nil
		}
		if k == "" || strings.ContainsAny(k, " \t!=()") {
			return fmt.Errorf("bad field name %q", k)
		}
		return nil
	}
	checkValue := func(v string) error {
		if labels {
			if msg := validateLabelValue(v); msg != "" {
				return fmt.Errorf("value %q %s", v, msg)
			}
		}
		return nil
	}
	for _, f := range []struct {
		sep string
		op  selectorOp
	}{{"!=", opNotEquals}, {"==", opEquals}, {"=", opEquals}} {
		if k, v, ok := strings.Cut(part, f.sep); ok {
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if err := checkKey(k); err != nil {
				return requirement{}, err
			}
			if err := checkValue(v); err != nil {
				return requirement{}, err
			}
			if strings.ContainsAny(v, "=!(), ") {
				return requirement{}, fmt.Errorf("bad value %q", v)
			}
			return requirement{key: k, op: f.op, values: []string{v}}, nil
		}
	}
	if !labels {
		return requirement{}, fmt.Errorf("no operator")
	}
	fields := strings.Fields(part)
	switch {
	case len(fields) == 1 && strings.HasPrefix(fields[0], "!"):
		k := strings.TrimSpace(fields[0][1:])
		if err := checkKey(k); err != nil {
			return requirement{}, err
		}
		return requirement{key: k, op: opNotExists}, nil
	case len(fields) == 1:
		if err := checkKey(fields[0]); err != nil {
			return requirement{}, err
		}
		return requirement{key: fields[0], op: opExists}, nil
	}
	k, rest, _ := strings.Cut(strings.TrimSpace(part), " ")
	rest = strings.TrimSpace(rest)
	op := opIn
	switch {
	case strings.HasPrefix(rest, "notin"):
		op, rest = opNotIn, strings.TrimSpace(rest[len("notin"):])
	case strings.HasPrefix(rest, "in"):
		rest = strings.TrimSpace(rest[len("in"):])
	default:
		return requirement{}, fmt.Errorf("unknown operator")
	}
	if err := checkKey(k); err != nil {
		return requirement{}, err
	}
	if len(rest) < 2 || rest[0] != '(' || rest[len(rest)-1] != ')' {
		return requirement{}, fmt.Errorf("the set must be in parentheses")
	}
	var values []string
	for _, v := range strings.Split(rest[1:len(rest)-1], ",") {
		v = strings.TrimSpace(v)
		if err := checkValue(v); err != nil {
			return requirement{}, err
		}
		if strings.ContainsAny(v, "() ") {
			return requirement{}, fmt.Errorf("bad value %q", v)
		}
		values = append(values, v)
	}
	if len(values) == 0 || (len(values) == 1 && values[0] == "") {
		return requirement{}, fmt.Errorf("empty set")
	}
	return requirement{key: k, op: op, values: values}, nil
}

// SelectableFields returns the fields a field selector can match on for an
// object: metadata.name and metadata.namespace always, plus a few per kind
// (an agent lists the instances of its node with spec.nodeName=NODE).
func SelectableFields(o Object) map[string]string {
	m := o.GetObjectMeta()
	f := map[string]string{"metadata.name": m.Name, "metadata.namespace": m.Namespace}
	switch o := o.(type) {
	case *Instance:
		f["spec.nodeName"] = o.Spec.NodeName
		f["spec.workload"] = o.Spec.Workload
		f["status.phase"] = string(o.Status.Phase)
	case *Workload:
		f["spec.kind"] = string(o.Spec.Kind)
	case *Node:
		f["spec.unschedulable"] = fmt.Sprint(o.Spec.Unschedulable)
	case *Secret:
		f["type"] = o.Type
	}
	return f
}

// CheckFieldSelector reports a field the resource cannot be selected by.
func CheckFieldSelector(r *Resource, s Selector) error {
	known := SelectableFields(r.New())
	for _, req := range s.reqs {
		if _, ok := known[req.key]; !ok {
			return fmt.Errorf("field selector: %s cannot be selected by %q (fields: %s)", r.Plural, req.key, strings.Join(sortedKeys(known), ", "))
		}
	}
	return nil
}
