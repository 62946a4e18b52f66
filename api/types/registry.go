package types

import (
	"reflect"
	"strings"
)

// Object is any resource of this package.
type Object interface {
	GetObjectMeta() *ObjectMeta
	GetTypeMeta() *TypeMeta
	// setDefaults fills in what the user left out; validate checks the
	// result. Both live with the types so there is one place for each.
	setDefaults()
	validate(r *Resource) FieldErrors
}

// Resource describes one kind of object: its names in URLs and on the
// command line, and whether it lives in a namespace.
type Resource struct {
	Kind string
	// Plural is the name in URLs and store keys: /v1/namespaces/ns/workloads.
	Plural     string
	Singular   string
	ShortNames []string
	Namespaced bool
	// HasStatus resources have a status subresource: updates of the object
	// keep the stored status, updates of /status keep everything else.
	HasStatus bool
	new       func() Object
}

// New returns an empty object of the resource with its kind set.
func (r *Resource) New() Object {
	o := r.new()
	*o.GetTypeMeta() = TypeMeta{APIVersion: APIVersion, Kind: r.Kind}
	return o
}

var resources = []*Resource{
	{Kind: "Namespace", Plural: "namespaces", Singular: "namespace", ShortNames: []string{"ns"}, HasStatus: true, new: func() Object { return &Namespace{} }},
	{Kind: "Node", Plural: "nodes", Singular: "node", ShortNames: []string{"no"}, HasStatus: true, new: func() Object { return &Node{} }},
	{Kind: "Server", Plural: "servers", Singular: "server", HasStatus: true, new: func() Object { return &Server{} }},
	{Kind: "Workload", Plural: "workloads", Singular: "workload", ShortNames: []string{"wl"}, Namespaced: true, HasStatus: true, new: func() Object { return &Workload{} }},
	{Kind: "Instance", Plural: "instances", Singular: "instance", ShortNames: []string{"inst"}, Namespaced: true, HasStatus: true, new: func() Object { return &Instance{} }},
	{Kind: "Service", Plural: "services", Singular: "service", ShortNames: []string{"svc"}, Namespaced: true, HasStatus: true, new: func() Object { return &Service{} }},
	{Kind: "Endpoints", Plural: "endpoints", Singular: "endpoints", ShortNames: []string{"ep"}, Namespaced: true, new: func() Object { return &Endpoints{} }},
	{Kind: "NetworkPolicy", Plural: "networkpolicies", Singular: "networkpolicy", ShortNames: []string{"netpol"}, Namespaced: true, new: func() Object { return &NetworkPolicy{} }},
	{Kind: "Secret", Plural: "secrets", Singular: "secret", Namespaced: true, new: func() Object { return &Secret{} }},
	{Kind: "ServiceAccount", Plural: "serviceaccounts", Singular: "serviceaccount", ShortNames: []string{"sa"}, Namespaced: true, new: func() Object { return &ServiceAccount{} }},
	{Kind: "Role", Plural: "roles", Singular: "role", Namespaced: true, new: func() Object { return &Role{} }},
	{Kind: "RoleBinding", Plural: "rolebindings", Singular: "rolebinding", Namespaced: true, new: func() Object { return &RoleBinding{} }},
	{Kind: "ClusterRole", Plural: "clusterroles", Singular: "clusterrole", new: func() Object { return &ClusterRole{} }},
	{Kind: "ClusterRoleBinding", Plural: "clusterrolebindings", Singular: "clusterrolebinding", new: func() Object { return &ClusterRoleBinding{} }},
}

// AllResources lists every resource, in a stable order.
func AllResources() []*Resource { return resources }

// LookupResource finds a resource by plural, singular, short name or kind,
// ignoring case: "workloads", "workload", "wl" and "Workload" are one.
func LookupResource(name string) (*Resource, bool) {
	name = strings.ToLower(name)
	for _, r := range resources {
		if name == r.Plural || name == r.Singular || name == strings.ToLower(r.Kind) {
			return r, true
		}
		for _, s := range r.ShortNames {
			if name == s {
				return r, true
			}
		}
	}
	return nil, false
}

// ResourceNames lists the plural names, for error messages.
func ResourceNames() string {
	names := make([]string, len(resources))
	for i, r := range resources {
		names[i] = r.Plural
	}
	return strings.Join(names, ", ")
}

// ResourceOf returns the resource of an object, by its Go type.
func ResourceOf(o Object) *Resource {
	t := reflect.TypeOf(o)
	for _, r := range resources {
		if reflect.TypeOf(r.new()) == t {
			return r
		}
	}
	return nil
}
