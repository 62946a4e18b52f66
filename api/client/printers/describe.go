package printers

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"nexus.dev/nexus/api/types"
)

// Related names the objects `describe` shows below an object: a
// workload's instances, the instances on a node, a service's Endpoints
// (as its backends). ok is false for kinds with none.
func Related(o types.Object) (r *types.Resource, namespace, fieldSelector string, ok bool) {
	inst, _ := types.LookupResource("instances")
	m := o.GetObjectMeta()
	switch o.(type) {
	case *types.Workload:
		return inst, m.Namespace, "spec.workload=" + m.Name, true
	case *types.Node:
		return inst, "", "spec.nodeName=" + m.Name, true
	case *types.Service:
		ep, _ := types.LookupResource("endpoints")
		return ep, m.Namespace, "metadata.name=" + m.Name, true
	}
	return nil, "", "", false
}

// Describe writes a readable multi-line view of o: its metadata, spec and
// status as indented YAML, its conditions as a table, and related objects
// (from Related) as a short table. A Secret's values are never shown,
// only their sizes.
func Describe(w io.Writer, o types.Object, related []types.Object, now time.Time) error {
	m := o.GetObjectMeta()
	var b strings.Builder
	field := func(name, value string) { fmt.Fprintf(&b, "%-18s%s\n", name+":", value) }
	field("Name", m.Name)
	if m.Namespace != "" {
		field("Namespace", m.Namespace)
	}
	field("Kind", o.GetTypeMeta().Kind)
	field("Labels", keyValues(m.Labels))
	field("Annotations", keyValues(m.Annotations))
	if !m.CreationTimestamp.IsZero() {
		field("Created", fmt.Sprintf("%s (%s ago)", m.CreationTimestamp.UTC().Format(time.RFC3339), Age(m.CreationTimestamp, now)))
	}
	for _, ref := range m.OwnerReferences {
		field("Owned By", ref.Kind+"/"+ref.Name)
	}
	field("UID", m.UID)
	field("Resource Version", m.ResourceVersion)
	if m.Generation != 0 {
		field("Generation", fmt.Sprint(m.Generation))
	}

	body, err := sections(o)
	if err != nil {
		return err
	}
	var conditions []types.Condition
	var events []types.InstanceEvent
	for _, s := range body {
		if s.name == "status" {
			conditions, events = s.conditions, s.events
		}
		if len(s.yaml) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s:\n", title(s.name))
		for _, line := range strings.Split(strings.TrimRight(string(s.yaml), "\n"), "\n") {
			b.WriteString("  " + line + "\n")
		}
	}
	if len(conditions) > 0 {
		b.WriteString("Conditions:\n")
		t := &table{header: []string{"  TYPE", "STATUS", "REASON", "AGE", "MESSAGE"}}
		for _, c := range conditions {
			age := "<unknown>"
			if !c.LastTransitionTime.IsZero() {
				age = Age(c.LastTransitionTime, now)
			}
			t.add([]string{"  " + c.Type, string(c.Status), orNone(c.Reason), age, c.Message})
		}
		if err := t.flush(&b, false); err != nil {
			return err
		}
	}
	if len(events) > 0 {
		b.WriteString("Events:\n")
		t := &table{header: []string{"  TYPE", "REASON", "AGE", "MESSAGE"}}
		for _, e := range events {
			age := Age(e.LastTime, now)
			if e.Count > 1 {
				age += fmt.Sprintf(" (x%d over %s)", e.Count, Age(e.FirstTime, now))
			}
			t.add([]string{"  " + e.Type, e.Reason, age, e.Message})
		}
		if err := t.flush(&b, false); err != nil {
			return err
		}
	}
	if _, ok := o.(*types.Service); ok {
		if err := describeBackends(&b, related); err != nil {
			return err
		}
	} else if rr, _, _, ok := Related(o); ok {
		fmt.Fprintf(&b, "%s:\n", title(rr.Plural))
		if len(related) == 0 {
			b.WriteString("  " + none + "\n")
		} else {
			var inner strings.Builder
			p := New(&inner, Options{Now: func() time.Time { return now }})
			if err := p.Print(related, false); err != nil {
				return err
			}
			for _, line := range strings.Split(strings.TrimRight(inner.String(), "\n"), "\n") {
				b.WriteString("  " + line + "\n")
			}
		}
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// describeBackends writes a service's backends, from its Endpoints (the
// first of related): each instance with its node, addresses and
// readiness.
func describeBackends(b *strings.Builder, related []types.Object) error {
	var ep *types.Endpoints
	if len(related) > 0 {
		ep, _ = related[0].(*types.Endpoints)
	}
	if ep == nil {
		b.WriteString("Backends:         <none> (no Endpoints yet: the endpoints controller writes them moments after the service is created)\n")
		return nil
	}
	fmt.Fprintf(b, "Backends:         %s ready\n", ReadyOfTotal(ep))
	if len(ep.Backends) == 0 {
		return nil
	}
	t := &table{header: []string{"  INSTANCE", "NODE", "ADDRESSES", "READY"}}
	for _, be := range ep.Backends {
		t.add([]string{"  " + be.Instance, orNone(be.Node), orNone(strings.Join(be.Addresses, ",")), fmt.Sprint(be.Ready)})
	}
	return t.flush(b, false)
}

type section struct {
	name       string
	yaml       []byte
	conditions []types.Condition
	events     []types.InstanceEvent
}

// sections are the object's top-level fields other than its type and
// metadata, in a stable order (spec first, status last), as YAML.
func sections(o types.Object) ([]section, error) {
	js, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(js, &fields); err != nil {
		return nil, err
	}
	delete(fields, "apiVersion")
	delete(fields, "kind")
	delete(fields, "metadata")
	if s, ok := o.(*types.Secret); ok {
		fields["data"], _ = json.Marshal(secretSizes(s.Data))
		delete(fields, "stringData")
	}
	var names []string
	for k := range fields {
		names = append(names, k)
	}
	rank := func(n string) int {
		switch n {
		case "spec":
			return 0
		case "status":
			return 2
		}
		return 1
	}
	slices.SortFunc(names, func(a, b string) int {
		if d := rank(a) - rank(b); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	var out []section
	for _, k := range names {
		raw := fields[k]
		s := section{name: k}
		if k == "status" {
			var st map[string]json.RawMessage
			if json.Unmarshal(raw, &st) == nil {
				if c, ok := st["conditions"]; ok {
					_ = json.Unmarshal(c, &s.conditions)
					delete(st, "conditions")
				}
				if e, ok := st["events"]; ok {
					_ = json.Unmarshal(e, &s.events)
					delete(st, "events")
				}
				if len(st) == 0 {
					out = append(out, s)
					continue
				}
				raw, _ = json.Marshal(st)
			}
		}
		if string(raw) == "{}" || string(raw) == "null" || string(raw) == `""` {
			out = append(out, s)
			continue
		}
		y, err := yaml.JSONToYAML(raw)
		if err != nil {
			return nil, err
		}
		s.yaml = y
		out = append(out, s)
	}
	return out, nil
}

func secretSizes(data map[string][]byte) map[string]string {
	out := make(map[string]string, len(data))
	for k, v := range data {
		out[k] = fmt.Sprintf("%d bytes", len(v))
	}
	return out
}

func keyValues(m map[string]string) string {
	if len(m) == 0 {
		return none
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, "\n"+strings.Repeat(" ", 18))
}

// title capitalises a field name for a heading: "roleRef" -> "RoleRef".
func title(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
