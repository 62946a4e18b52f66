package types

import (
	"errors"

	"nexus.dev/nexus/security/authz"
)

// Role grants rules within its namespace.
type Role struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Rules      []authz.Rule `json:"rules"`
}

// ClusterRole grants rules in every namespace and on cluster-scoped
// resources, when bound by a ClusterRoleBinding, or in one namespace when
// bound by a RoleBinding there.
type ClusterRole struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Rules      []authz.Rule `json:"rules"`
}

// RoleBinding grants a Role or ClusterRole to subjects in its namespace.
type RoleBinding struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Subjects   []authz.Subject `json:"subjects"`
	RoleRef    authz.RoleRef   `json:"roleRef"`
}

// ClusterRoleBinding grants a ClusterRole to subjects everywhere.
type ClusterRoleBinding struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Subjects   []authz.Subject `json:"subjects"`
	RoleRef    authz.RoleRef   `json:"roleRef"`
}

func (o *Role) validate(*Resource) FieldErrors { return fromAuthz(authz.ValidateRole(o.Rules)) }

func (o *ClusterRole) validate(*Resource) FieldErrors {
	return fromAuthz(authz.ValidateClusterRole(o.Name, o.Rules))
}

func (o *RoleBinding) validate(*Resource) FieldErrors {
	return fromAuthz(authz.ValidateRoleBinding(o.Subjects, o.RoleRef))
}

func (o *ClusterRoleBinding) validate(*Resource) FieldErrors {
	return fromAuthz(authz.ValidateClusterRoleBinding(o.Name, o.Subjects, o.RoleRef))
}

// fromAuthz turns the RBAC package's field errors (joined) into ours.
func fromAuthz(err error) FieldErrors {
	if err == nil {
		return nil
	}
	var errs FieldErrors
	list := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	}
	for _, e := range list {
		var fe *authz.FieldError
		if errors.As(e, &fe) {
			errs = append(errs, FieldError{Field: fe.Field, Detail: fe.Problem})
		} else {
			errs = append(errs, FieldError{Field: "", Detail: e.Error()})
		}
	}
	return errs
}
