package authz

import (
	"slices"
	"strings"
)

// PrincipalKind is the kind of an authenticated caller.
type PrincipalKind string

const (
	PrincipalUser           PrincipalKind = "user"
	PrincipalNode           PrincipalKind = "node"
	PrincipalServer         PrincipalKind = "server"
	PrincipalServiceAccount PrincipalKind = "serviceaccount"
)

// User is an authenticated caller, as the API's authentication made it
// from a certificate or a service account token.
type User struct {
	Kind      PrincipalKind
	Name      string
	Namespace string // service accounts only
	Groups    []string
}

// Attributes describe one request.
type Attributes struct {
	User        User
	Verb        string // get, list, watch, create, update, patch, delete
	Resource    string // plural, lower case: "instances"
	Subresource string // "status", or empty
	Namespace   string // empty for cluster-scoped resources, and for namespaced ones across all namespaces
	// Name is the object's name for requests on one object (get, update,
	// patch, delete, and create from the object's metadata); empty for
	// list and watch.
	Name string
	// FieldSelector holds the equality requirements of a list or watch
	// (field -> value), which the API applies to what it returns. Only
	// NodeRestriction reads it.
	FieldSelector map[string]string
}

// Decision is the outcome of a check and the reason for it, worded for
// the decision log.
type Decision struct {
	Allowed bool
	Reason  string
}

// Policy is a snapshot of the stored RBAC objects. The built-in cluster
// roles and bindings are added by New.
type Policy struct {
	ClusterRoles        []Role
	ClusterRoleBindings []Binding
	Roles               []Role
	RoleBindings        []Binding
}

// Authorizer answers RBAC questions against one Policy snapshot. It is
// immutable, so safe for concurrent use; a new snapshot means a new
// Authorizer.
type Authorizer struct {
	// grants is keyed by subject and the namespace a binding grants in
	// ("" for a ClusterRoleBinding), so a request costs a few map lookups
	// however many bindings there are.
	grants map[scopeKey][]grant
}

const (
	subjUser byte = iota + 1
	subjGroup
	subjServiceAccount
)

type subjectKey struct {
	kind      byte
	namespace string
	name      string
}

type scopeKey struct {
	subject   subjectKey
	namespace string
}

type grant struct {
	rules []compiledRule
	via   string // "RoleBinding prod/devs grants ClusterRole edit"
}

type compiledRule struct {
	verbs     uint8
	resources uint32
	names     map[string]struct{} // nil: any name
}

func compile(rules []Rule) []compiledRule {
	out := make([]compiledRule, 0, len(rules))
	for _, r := range rules {
		var c compiledRule
		for _, v := range r.Verbs {
			if v == VerbAll {
				c.verbs = allVerbs
			} else {
				c.verbs |= verbBit(v)
			}
		}
		for _, res := range r.Resources {
			bits, _ := parseRuleResource(res)
			c.resources |= bits
		}
		if len(r.ResourceNames) > 0 {
			c.names = make(map[string]struct{}, len(r.ResourceNames))
			for _, n := range r.ResourceNames {
				c.names[n] = struct{}{}
			}
		}
		out = append(out, c)
	}
	return out
}

func (r *compiledRule) allows(verb uint8, resource uint32, name string) bool {
	if r.verbs&verb == 0 || r.resources&resource == 0 {
		return false
	}
	if r.names == nil {
		return true
	}
	_, ok := r.names[name]
	return ok && name != ""
}

// New builds an Authorizer from p and the built-in roles and bindings.
// Stored cluster roles and bindings with a built-in name are ignored, a
// ClusterRoleBinding that refers to a Role grants nothing, and a binding
// whose role does not exist grants nothing until the role is created (and
// a new snapshot built).
func New(p Policy) *Authorizer {
	clusterRoles := make(map[string][]compiledRule, len(p.ClusterRoles)+5)
	for _, r := range p.ClusterRoles {
		clusterRoles[r.Name] = compile(r.Rules)
	}
	for _, r := range BuiltinClusterRoles() {
		clusterRoles[r.Name] = compile(r.Rules)
	}
	roles := make(map[[2]string][]compiledRule, len(p.Roles))
	for _, r := range p.Roles {
		roles[[2]string{r.Namespace, r.Name}] = compile(r.Rules)
	}
	a := &Authorizer{grants: make(map[scopeKey][]grant, len(p.ClusterRoleBindings)+len(p.RoleBindings))}
	add := func(b Binding, scope string, rules []compiledRule, via string) {
		for _, s := range b.Subjects {
			k, ok := subjectOf(s)
			if !ok {
				continue
			}
			sk := scopeKey{k, scope}
			a.grants[sk] = append(a.grants[sk], grant{rules: rules, via: via})
		}
	}
	crbs := slices.DeleteFunc(slices.Clone(p.ClusterRoleBindings), func(b Binding) bool { return builtinBindingName(b.Name) })
	for _, b := range append(crbs, BuiltinClusterRoleBindings()...) {
		rules, ok := clusterRoles[b.RoleRef.Name]
		if b.RoleRef.Kind != KindClusterRole || !ok {
			continue
		}
		add(b, "", rules, "ClusterRoleBinding "+b.Name+" grants ClusterRole "+b.RoleRef.Name)
	}
	for _, b := range p.RoleBindings {
		if b.Namespace == "" {
			continue
		}
		var rules []compiledRule
		var ok bool
		switch b.RoleRef.Kind {
		case KindClusterRole:
			rules, ok = clusterRoles[b.RoleRef.Name]
		case KindRole:
			rules, ok = roles[[2]string{b.Namespace, b.RoleRef.Name}]
		}
		if !ok {
			continue
		}
		via := "RoleBinding " + b.Namespace + "/" + b.Name + " grants " + b.RoleRef.Kind + " " + b.RoleRef.Name
		if b.RoleRef.Kind == KindRole {
			via = "RoleBinding " + b.Namespace + "/" + b.Name + " grants Role " + b.Namespace + "/" + b.RoleRef.Name
		}
		add(b, b.Namespace, rules, via)
	}
	return a
}

func subjectOf(s Subject) (subjectKey, bool) {
	if s.Name == "" {
		return subjectKey{}, false
	}
	switch s.Kind {
	case SubjectUser:
		return subjectKey{kind: subjUser, name: s.Name}, true
	case SubjectGroup:
		return subjectKey{kind: subjGroup, name: s.Name}, true
	case SubjectServiceAccount:
		if s.Namespace == "" {
			return subjectKey{}, false
		}
		return subjectKey{kind: subjServiceAccount, namespace: s.Namespace, name: s.Name}, true
	}
	return subjectKey{}, false
}

// subjects returns the subjects u matches in bindings: its own name and
// groups, plus the names and groups its kind implies. A user's own name or
// group in the reserved "system:" namespace is dropped, so a certificate
// for user "system:node:n1" cannot pass for node n1.
func subjects(u User, buf []subjectKey) []subjectKey {
	keys := buf[:0]
	switch u.Kind {
	case PrincipalUser:
		if u.Name == "" {
			return nil
		}
		if !strings.HasPrefix(u.Name, ReservedPrefix) {
			keys = append(keys, subjectKey{kind: subjUser, name: u.Name})
		}
	case PrincipalNode:
		if u.Name == "" {
			return nil
		}
		keys = append(keys, subjectKey{kind: subjUser, name: NodeUserPrefix + u.Name}, subjectKey{kind: subjGroup, name: GroupNodes})
	case PrincipalServer:
		if u.Name == "" {
			return nil
		}
		keys = append(keys, subjectKey{kind: subjUser, name: ServerUserPrefix + u.Name}, subjectKey{kind: subjGroup, name: GroupServers})
	case PrincipalServiceAccount:
		if u.Name == "" || u.Namespace == "" {
			return nil
		}
		keys = append(keys,
			subjectKey{kind: subjServiceAccount, namespace: u.Namespace, name: u.Name},
			subjectKey{kind: subjGroup, name: GroupServiceAccounts},
			subjectKey{kind: subjGroup, name: GroupServiceAccounts + ":" + u.Namespace})
	default:
		return nil
	}
	for _, g := range u.Groups {
		if g != "" && !strings.HasPrefix(g, ReservedPrefix) {
			keys = append(keys, subjectKey{kind: subjGroup, name: g})
		}
	}
	return keys
}

// Authorize decides whether at.User may make the request: allowed when a
// binding of one of the user's subjects grants a role with a rule that
// covers the verb, the resource (or subresource) and the name, in the
// request's namespace; denied otherwise. A RoleBinding grants only in its
// own namespace and never on cluster-scoped resources.
func (a *Authorizer) Authorize(at Attributes) Decision {
	verb := verbBit(at.Verb)
	if verb == 0 {
		return deny(at, "unknown verb")
	}
	i, ok := resourceIndex[resKey{at.Resource, at.Subresource}]
	if !ok {
		return deny(at, "unknown resource")
	}
	res := uint32(1) << i
	if res&namespacedBit == 0 && at.Namespace != "" {
		return deny(at, at.Resource+" are cluster-scoped: the request names no namespace")
	}
	var buf [8]subjectKey
	keys := subjects(at.User, buf[:])
	if len(keys) == 0 {
		return deny(at, "no valid principal (kind, name and, for a service account, namespace)")
	}
	if g := a.match(keys, verb, res, at.Namespace, at.Name); g != nil {
		return Decision{Allowed: true, Reason: reason(at, " may ", g.via)}
	}
	return deny(at, "no role grants it")
}

// match returns the first grant that allows the request, cluster-wide
// bindings first.
func (a *Authorizer) match(keys []subjectKey, verb uint8, res uint32, namespace, name string) *grant {
	scopes := []string{""}
	if res&namespacedBit != 0 && namespace != "" {
		scopes = append(scopes, namespace)
	}
	for _, scope := range scopes {
		for _, k := range keys {
			gs := a.grants[scopeKey{k, scope}]
			for gi := range gs {
				for ri := range gs[gi].rules {
					if gs[gi].rules[ri].allows(verb, res, name) {
						return &gs[gi]
					}
				}
			}
		}
	}
	return nil
}

// MayGrant reports whether u holds every permission rules give, in
// namespace (or cluster-wide when namespace is empty). The API asks it
// before it stores a Role, ClusterRole, RoleBinding or ClusterRoleBinding
// (with the rules of the role the binding refers to), so that nobody can
// grant more than they hold: without it, anyone who may create a
// RoleBinding could bind themselves to admin. In a namespace only the
// namespaced resources of the rules count, because a binding there grants
// nothing else.
func (a *Authorizer) MayGrant(u User, namespace string, rules []Rule) Decision {
	var buf [8]subjectKey
	keys := subjects(u, buf[:])
	if len(keys) == 0 {
		return Decision{Reason: principal(u) + " may not grant anything: no valid principal"}
	}
	for _, r := range compile(rules) {
		for vi, v := range verbs {
			vb := uint8(1) << vi
			if r.verbs&vb == 0 {
				continue
			}
			for ri, k := range resources {
				rb := uint32(1) << ri
				if r.resources&rb == 0 || (namespace != "" && rb&namespacedBit == 0) {
					continue
				}
				// Holding the permission on every object covers any names;
				// only otherwise is each name checked.
				if a.match(keys, vb, rb, namespace, "") != nil {
					continue
				}
				missing := Attributes{User: u, Verb: v, Resource: k.res, Subresource: k.sub, Namespace: namespace}
				if r.names != nil {
					missing.Name = firstMissing(r.names, func(name string) bool { return a.match(keys, vb, rb, namespace, name) != nil })
					if missing.Name == "" {
						continue
					}
				}
				return Decision{Reason: reason(missing, " may not grant ", "they do not hold it themselves (a role or binding may grant at most what its author holds)")}
			}
		}
	}
	return Decision{Allowed: true, Reason: principal(u) + " holds every permission the rules grant" + inNamespace(namespace)}
}

// firstMissing returns the first name (in sorted order, so the reason is
// stable) that is not held; "" when all are. An empty name grants nothing,
// so granting it needs nothing.
func firstMissing(names map[string]struct{}, held func(string) bool) string {
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	for _, n := range sorted {
		if n != "" && !held(n) {
			return n
		}
	}
	return ""
}

func inNamespace(ns string) string {
	if ns == "" {
		return " cluster-wide"
	}
	return " in namespace " + ns
}

func deny(at Attributes, why string) Decision {
	return Decision{Reason: reason(at, " may not ", why)}
}

// reason words a decision for the log in one allocation, since the API
// logs every request's: "user alice (groups dev) may not delete secrets in
// namespace prod: no role grants it".
func reason(at Attributes, may, why string) string {
	var b strings.Builder
	b.Grow(192)
	writePrincipal(&b, at.User)
	b.WriteString(may)
	writeRequest(&b, at)
	b.WriteString(": ")
	b.WriteString(why)
	return b.String()
}

func writeRequest(b *strings.Builder, at Attributes) {
	b.WriteString(at.Verb)
	b.WriteByte(' ')
	b.WriteString(at.Resource)
	if at.Subresource != "" {
		b.WriteByte('/')
		b.WriteString(at.Subresource)
	}
	if at.Name != "" {
		b.WriteString(` "`)
		b.WriteString(at.Name)
		b.WriteByte('"')
	}
	namespaced, known := Namespaced(at.Resource)
	switch {
	case at.Namespace != "":
		b.WriteString(" in namespace ")
		b.WriteString(at.Namespace)
	case namespaced && known:
		b.WriteString(" in all namespaces")
	}
}

func principal(u User) string {
	var b strings.Builder
	writePrincipal(&b, u)
	return b.String()
}

func writePrincipal(b *strings.Builder, u User) {
	switch u.Kind {
	case PrincipalServiceAccount:
		b.WriteString("service account ")
		b.WriteString(u.Namespace)
		b.WriteByte('/')
	case "":
		b.WriteString("unknown principal ")
	default:
		b.WriteString(string(u.Kind))
		b.WriteByte(' ')
	}
	b.WriteString(u.Name)
	for i, g := range u.Groups {
		if i == 0 {
			b.WriteString(" (groups ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString(g)
	}
	if len(u.Groups) > 0 {
		b.WriteByte(')')
	}
}
