package authz

import (
	"fmt"
	"strings"
)

// Names of the built-in cluster roles.
const (
	RoleClusterAdmin = "cluster-admin"
	RoleAdmin        = "admin"
	RoleEdit         = "edit"
	RoleView         = "view"
	RoleNode         = "node"
)

// Groups and user names the Authorizer gives principals by kind. The
// "system:" prefix is reserved for them: a user's own name or groups that
// start with it match no binding.
const (
	ReservedPrefix       = "system:"
	GroupNodes           = "system:nodes"
	GroupServers         = "system:servers"
	GroupServiceAccounts = "system:serviceaccounts"
	NodeUserPrefix       = "system:node:"
	ServerUserPrefix     = "system:server:"
)

// BootstrapBindingName is the name of the ClusterRoleBinding that makes
// the first user a cluster admin.
const BootstrapBindingName = "cluster-admin"

// BuiltinClusterRoles returns the built-in cluster roles. They are always
// part of an Authorizer's policy; a stored ClusterRole of the same name is
// ignored (ValidateClusterRole refuses to create one).
func BuiltinClusterRoles() []Role {
	read := []string{VerbGet, VerbList, VerbWatch}
	all := []string{VerbAll}
	viewable := []string{
		"workloads", "workloads/status", "workloads/scale",
		"instances", "instances/status", "instances/log",
		"services", "services/status", "networkpolicies", "serviceaccounts", "roles", "rolebindings", "endpoints", "events",
		// Cluster-scoped: readable through a ClusterRoleBinding, so that a
		// cluster-wide viewer can list the control-plane servers.
		"servers",
	}
	editable := []string{
		"workloads", "workloads/scale", "instances", "instances/exec",
		"services", "networkpolicies", "secrets", "serviceaccounts", "serviceaccounts/token", "events",
	}
	namespaced := []string{
		"workloads", "workloads/*", "instances", "instances/*",
		"services", "services/*", "networkpolicies", "secrets", "serviceaccounts", "serviceaccounts/*", "roles", "rolebindings", "events",
	}
	// Endpoints are written by the endpoints controller (a server, so
	// cluster-admin) only: agents program every node's load balancing from
	// them, so a namespace's admin who could write them could send a
	// service's traffic anywhere. Everyone who may read services reads them.
	readEndpoints := Rule{Verbs: read, Resources: []string{"endpoints"}}
	// Namespaces are cluster-scoped, so the namespaces rule of admin, edit
	// and view takes effect only through a ClusterRoleBinding: it lets a
	// cluster-wide viewer list the namespaces it can see into.
	listNamespaces := Rule{Verbs: read, Resources: []string{"namespaces"}}
	return []Role{
		{Name: RoleClusterAdmin, Rules: []Rule{
			{Verbs: all, Resources: []string{ResourceAll}},
		}},
		{Name: RoleAdmin, Rules: []Rule{
			{Verbs: all, Resources: namespaced},
			readEndpoints,
			listNamespaces,
		}},
		{Name: RoleEdit, Rules: []Rule{
			{Verbs: read, Resources: viewable},
			{Verbs: all, Resources: editable},
			listNamespaces,
		}},
		{Name: RoleView, Rules: []Rule{
			{Verbs: read, Resources: viewable},
			listNamespaces,
		}},
		{Name: RoleNode, Rules: []Rule{
			// servers: an agent finds every server to fail over to.
			{Verbs: read, Resources: []string{"nodes", "servers", "instances", "services", "endpoints", "secrets", "networkpolicies"}},
			{Verbs: []string{VerbCreate}, Resources: []string{"nodes", "nodes/certificate", "nodes/heartbeat"}},
			{Verbs: []string{VerbUpdate, VerbPatch}, Resources: []string{"nodes/status", "instances/status"}},
			{Verbs: []string{VerbCreate}, Resources: []string{"events"}},
		}},
	}
}

// BuiltinClusterRoleBindings returns the built-in cluster role bindings:
// every node gets the node role and every server cluster-admin (servers
// run the controllers and the scheduler, which act on every resource).
// Like the built-in roles they are always in force.
func BuiltinClusterRoleBindings() []Binding {
	return []Binding{
		{Name: GroupNodes, Subjects: []Subject{{Kind: SubjectGroup, Name: GroupNodes}}, RoleRef: RoleRef{Kind: KindClusterRole, Name: RoleNode}},
		{Name: GroupServers, Subjects: []Subject{{Kind: SubjectGroup, Name: GroupServers}}, RoleRef: RoleRef{Kind: KindClusterRole, Name: RoleClusterAdmin}},
	}
}

// BootstrapBinding returns the ClusterRoleBinding that makes user a
// cluster admin: the API stores it for the first user when it creates a
// cluster. It is an ordinary binding, so it can later be changed or
// deleted.
func BootstrapBinding(user string) (Binding, error) {
	if user == "" || strings.HasPrefix(user, ReservedPrefix) {
		return Binding{}, fmt.Errorf("bootstrap cluster admin %q: name a user whose name does not start with %q", user, ReservedPrefix)
	}
	return Binding{
		Name:     BootstrapBindingName,
		Subjects: []Subject{{Kind: SubjectUser, Name: user}},
		RoleRef:  RoleRef{Kind: KindClusterRole, Name: RoleClusterAdmin},
	}, nil
}

func builtinRole(name string) (Role, bool) {
	for _, r := range BuiltinClusterRoles() {
		if r.Name == name {
			return r, true
		}
	}
	return Role{}, false
}
