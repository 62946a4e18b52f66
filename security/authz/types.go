package authz

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Rule grants its verbs on its resources. With ResourceNames it grants
// them only on the objects of those names (and so never list, watch or a
// create that names no object, which carry no name).
type Rule struct {
	Verbs         []string `json:"verbs"`
	Resources     []string `json:"resources"`
	ResourceNames []string `json:"resourceNames,omitempty"`
}

// Subject kinds.
const (
	SubjectUser           = "User"
	SubjectGroup          = "Group"
	SubjectServiceAccount = "ServiceAccount"
)

// Subject is who a binding grants to: a user or group by name, or a
// service account by namespace and name.
type Subject struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// RoleRef kinds.
const (
	KindRole        = "Role"
	KindClusterRole = "ClusterRole"
)

// RoleRef names the role a binding grants: a Role in the binding's own
// namespace or a ClusterRole.
type RoleRef struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// Role is a Role (Namespace set) or a ClusterRole (Namespace empty), as
// the Authorizer reads it from a Policy.
type Role struct {
	Namespace string
	Name      string
	Rules     []Rule
}

// Binding is a RoleBinding (Namespace set) or a ClusterRoleBinding
// (Namespace empty), as the Authorizer reads it from a Policy.
type Binding struct {
	Namespace string
	Name      string
	Subjects  []Subject
	RoleRef   RoleRef
}

// ValidateRole checks the rules of a Role in a namespace. A Role grants
// only in its namespace, so a cluster-scoped resource in it is an error.
func ValidateRole(rules []Rule) error { return validateRules(rules, true) }

// ValidateClusterRole checks a ClusterRole. The names of the built-in
// cluster roles are reserved.
func ValidateClusterRole(name string, rules []Rule) error {
	if _, ok := builtinRole(name); ok {
		return fieldErr("metadata.name", "%q is a built-in cluster role and cannot be replaced: choose another name", name)
	}
	return validateRules(rules, false)
}

// ValidateRoleBinding checks a RoleBinding.
func ValidateRoleBinding(subjects []Subject, ref RoleRef) error {
	errs := validateSubjects(subjects)
	switch ref.Kind {
	case KindRole, KindClusterRole:
	default:
		errs = append(errs, fieldErr("roleRef.kind", "unknown kind %q (use Role or ClusterRole)", ref.Kind))
	}
	if ref.Name == "" {
		errs = append(errs, fieldErr("roleRef.name", "empty: name the %s to bind", cmpOr(ref.Kind, "role")))
	}
	return errors.Join(errs...)
}

// ValidateClusterRoleBinding checks a ClusterRoleBinding. The names of the
// built-in bindings are reserved.
func ValidateClusterRoleBinding(name string, subjects []Subject, ref RoleRef) error {
	var errs []error
	if builtinBindingName(name) {
		errs = append(errs, fieldErr("metadata.name", "%q is a built-in cluster role binding and cannot be replaced: choose another name", name))
	}
	errs = append(errs, validateSubjects(subjects)...)
	switch ref.Kind {
	case KindClusterRole:
	case KindRole:
		errs = append(errs, fieldErr("roleRef.kind", "a ClusterRoleBinding can bind only a ClusterRole (a Role exists in one namespace: bind it with a RoleBinding there)"))
	default:
		errs = append(errs, fieldErr("roleRef.kind", "unknown kind %q (use ClusterRole)", ref.Kind))
	}
	if ref.Name == "" {
		errs = append(errs, fieldErr("roleRef.name", "empty: name the ClusterRole to bind"))
	}
	return errors.Join(errs...)
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func validateRules(rules []Rule, namespaced bool) error {
	var errs []error
	if len(rules) == 0 {
		errs = append(errs, fieldErr("rules", "empty: a role needs at least one rule"))
	}
	for i, r := range rules {
		p := fmt.Sprintf("rules[%d]", i)
		if len(r.Verbs) == 0 {
			errs = append(errs, fieldErr(p+".verbs", "empty: a rule needs at least one verb (%s or *)", strings.Join(verbs, ", ")))
		}
		for j, v := range r.Verbs {
			if v != VerbAll && verbBit(v) == 0 {
				errs = append(errs, fieldErr(fmt.Sprintf("%s.verbs[%d]", p, j), "unknown verb %q (use %s or *)", v, strings.Join(verbs, ", ")))
			}
		}
		if len(r.Resources) == 0 {
			errs = append(errs, fieldErr(p+".resources", "empty: a rule needs at least one resource"))
		}
		for j, res := range r.Resources {
			f := fmt.Sprintf("%s.resources[%d]", p, j)
			bits, ok := parseRuleResource(res)
			switch {
			case !ok:
				errs = append(errs, fieldErr(f, "unknown resource %q (use %s, *, or resource/subresource such as instances/status, or resource/*)", res, knownResourceList(namespaced)))
			case namespaced && res != ResourceAll && bits&namespacedBit == 0:
				errs = append(errs, fieldErr(f, "%q is cluster-scoped and a Role grants only in its namespace: use a ClusterRole and a ClusterRoleBinding", res))
			}
		}
		for j, n := range r.ResourceNames {
			if n == "" {
				errs = append(errs, fieldErr(fmt.Sprintf("%s.resourceNames[%d]", p, j), "empty name: leave resourceNames out to grant on every object"))
			}
		}
	}
	return errors.Join(errs...)
}

func validateSubjects(subjects []Subject) []error {
	var errs []error
	if len(subjects) == 0 {
		errs = append(errs, fieldErr("subjects", "empty: a binding needs at least one subject"))
	}
	for i, s := range subjects {
		p := fmt.Sprintf("subjects[%d]", i)
		if s.Name == "" {
			errs = append(errs, fieldErr(p+".name", "empty: name the %s", cmpOr(strings.ToLower(s.Kind), "subject")))
		}
		switch s.Kind {
		case SubjectUser, SubjectGroup:
			if s.Namespace != "" {
				errs = append(errs, fieldErr(p+".namespace", "a %s has no namespace: leave it out", s.Kind))
			}
		case SubjectServiceAccount:
			if s.Namespace == "" {
				errs = append(errs, fieldErr(p+".namespace", "empty: a ServiceAccount subject names its namespace"))
			}
		default:
			errs = append(errs, fieldErr(p+".kind", "unknown kind %q (use User, Group or ServiceAccount)", s.Kind))
		}
	}
	return errs
}

func builtinBindingName(name string) bool {
	return slices.ContainsFunc(BuiltinClusterRoleBindings(), func(b Binding) bool { return b.Name == name })
}
