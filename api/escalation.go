package api

import (
	"context"
	"net/http"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/authz"
)

// checkEscalation refuses a Role, ClusterRole or binding that grants more
// than its author holds: without it, anyone allowed to create a RoleBinding
// could bind themselves to admin.
func (s *Server) checkEscalation(ctx context.Context, r *request, o types.Object) error {
	var ns string
	var rules []authz.Rule
	switch o := o.(type) {
	case *types.Role:
		ns, rules = o.Namespace, o.Rules
	case *types.ClusterRole:
		rules = o.Rules
	case *types.RoleBinding:
		ns = o.Namespace
		var err error
		if rules, err = s.roleRules(ctx, o.RoleRef, o.Namespace); err != nil {
			return err
		}
	case *types.ClusterRoleBinding:
		var err error
		if rules, err = s.roleRules(ctx, o.RoleRef, ""); err != nil {
			return err
		}
	default:
		return nil
	}
	if d := s.rbac.current().MayGrant(r.principal.User, ns, rules); !d.Allowed {
		s.log.Info("request denied: privilege escalation", "principal", r.principal.ID, "request", r.describe(), "reason", d.Reason)
		return problem(http.StatusForbidden, "Forbidden", "%s", d.Reason)
	}
	return nil
}

// roleRules returns the rules of the role a binding refers to: a built-in
// or stored ClusterRole, or a Role in the binding's namespace.
func (s *Server) roleRules(ctx context.Context, ref authz.RoleRef, ns string) ([]authz.Rule, error) {
	if ref.Kind == authz.KindClusterRole {
		for _, b := range authz.BuiltinClusterRoles() {
			if b.Name == ref.Name {
				return b.Rules, nil
			}
		}
		res, _ := types.LookupResource("clusterroles")
		o, err := s.store.Get(ctx, res, "", ref.Name)
		if err != nil {
			return nil, problem(http.StatusUnprocessableEntity, "Invalid", "roleRef: ClusterRole %s does not exist: create it first", ref.Name)
		}
		return o.(*types.ClusterRole).Rules, nil
	}
	res, _ := types.LookupResource("roles")
	o, err := s.store.Get(ctx, res, ns, ref.Name)
	if err != nil {
		return nil, problem(http.StatusUnprocessableEntity, "Invalid", "roleRef: Role %s does not exist in namespace %s: create it first", ref.Name, ns)
	}
	return o.(*types.Role).Rules, nil
}
