// Package authz decides who may do what through the API: role-based access
// control, deny by default, and the identity check that keeps a node to
// its own objects. It is pure (no I/O, no clock): the API builds an
// Authorizer from a snapshot of the stored roles and bindings, asks it
// about every request and logs the Decision's reason.
//
// # Vocabulary
//
// Verbs are get, list, watch, create, update, patch and delete; "*" in a
// rule is all of them. Resources are plural and lower case; namespaced:
// workloads, instances, services, networkpolicies, secrets,
// serviceaccounts, roles, rolebindings, endpoints, events; cluster-scoped:
// namespaces, nodes, servers, clusterroles, clusterrolebindings. Subresources are
// written resource/sub: workloads/status, workloads/scale,
// instances/status, instances/log, instances/exec, services/status,
// serviceaccounts/token, namespaces/status, nodes/status,
// nodes/certificate, nodes/heartbeat, servers/status. In a rule
// "*" is every resource and subresource, "resource/*" every subresource of
// one resource (not the resource), and a resource never covers its
// subresources. Rules and requests outside this vocabulary match nothing.
//
// # Principals and subjects
//
// A binding names its subjects as User, Group or ServiceAccount. A caller
// matches:
//
//	user            User <name>, Group <each of its groups>
//	node            User system:node:<name>, Group system:nodes
//	server          User system:server:<name>, Group system:servers
//	service account ServiceAccount <namespace>/<name>, Group system:serviceaccounts,
//	                Group system:serviceaccounts:<namespace>
//
// The "system:" prefix is reserved for these: a user name or group from a
// certificate that starts with it matches nothing, so nobody passes for a
// node or a server by choosing their name.
//
// # Roles and bindings
//
// A ClusterRoleBinding grants its ClusterRole everywhere. A RoleBinding
// grants its Role, or a ClusterRole, only in its own namespace and never on
// cluster-scoped resources; a request across all namespaces (namespace
// empty) is granted only by ClusterRoleBindings. Rights add up over all
// the caller's bindings. A rule with resourceNames grants only on objects
// of those names, so never list or watch.
//
// The built-in cluster roles, below, are always present and cannot be
// replaced. Two built-in ClusterRoleBindings are always in force too:
// system:nodes (Group system:nodes -> node) and system:servers (Group
// system:servers -> cluster-admin: servers run the controllers and the
// scheduler, which act on every resource). BootstrapBinding makes the
// first user's ClusterRoleBinding to cluster-admin, an ordinary stored
// binding. admin, edit and view are meant to be bound per namespace with a
// RoleBinding; their namespaces row takes effect only through a
// ClusterRoleBinding.
//
// What each built-in role may do ("all" is every verb, "read" get, list
// and watch, "-" nothing):
//
//	| resource              | cluster-admin | admin | edit | view | node         |
//	|-----------------------|---------------|-------|------|------|--------------|
//	| workloads             | all           | all   | all  | read | -            |
//	| workloads/status      | all           | all   | read | read | -            |
//	| workloads/scale       | all           | all   | all  | read | -            |
//	| instances             | all           | all   | all  | read | read         |
//	| instances/status      | all           | all   | read | read | update patch |
//	| instances/log         | all           | all   | read | read | -            |
//	| instances/exec        | all           | all   | all  | -    | -            |
//	| services              | all           | all   | all  | read | read         |
//	| services/status       | all           | all   | read | read | -            |
//	| networkpolicies       | all           | all   | all  | read | read         |
//	| secrets               | all           | all   | all  | -    | read         |
//	| serviceaccounts       | all           | all   | all  | read | -            |
//	| serviceaccounts/token | all           | all   | all  | -    | -            |
//	| roles                 | all           | all   | read | read | -            |
//	| rolebindings          | all           | all   | read | read | -            |
//	| endpoints             | all           | read  | read | read | read         |
//	| events                | all           | all   | all  | read | create       |
//	| namespaces            | all           | read  | read | read | -            |
//	| namespaces/status     | all           | -     | -    | -    | -            |
//	| nodes                 | all           | -     | -    | -    | read create  |
//	| nodes/status          | all           | -     | -    | -    | update patch |
//	| nodes/certificate     | all           | -     | -    | -    | create       |
//	| nodes/heartbeat       | all           | -     | -    | -    | create       |
//	| servers               | all           | -     | read | read | read         |
//	| servers/status        | all           | -     | -    | -    | -            |
//	| clusterroles          | all           | -     | -    | -    | -            |
//	| clusterrolebindings   | all           | -     | -    | -    | -            |
//
// TestBuiltinRoleMatrix checks every cell of this table, bound both ways,
// against an expectation written independently of the role data, and
// TestDocumentedMatrix checks that this table and the one in
// docs/architecture.md say the same.
//
// # Escalation
//
// Whoever may write roles or bindings could otherwise grant themselves
// anything. Before it stores a Role, ClusterRole, RoleBinding or
// ClusterRoleBinding the API asks MayGrant whether the author holds every
// permission it grants (for a binding: the rules of the role it refers to)
// in its namespace, or cluster-wide.
//
// # Nodes
//
// The node role says what an agent may do to any object; NodeRestriction
// narrows it to the objects of that node (its Node, the instances bound to
// it and the secrets they use), which is the API's identity check for
// nodes. A request from a node needs both checks to allow it. A service
// account acting only as itself is authentication's part: its token names
// the account, and RBAC then grants only what that account is bound to.
package authz
