package types

import (
	"reflect"
	"slices"
)

// ValidateUpdate checks the fields that may not change once set, given the
// stored object and its replacement (both defaulted). Metadata identity
// (name, namespace, uid, creation time) is the storage layer's to keep.
func ValidateUpdate(old, upd Object) FieldErrors {
	var errs FieldErrors
	spec := NewPath("spec")
	switch o := old.(type) {
	case *Workload:
		n := upd.(*Workload)
		if o.Spec.Kind != n.Spec.Kind {
			errs.add(spec.Child("kind"), "cannot change from %s to %s: delete the workload and create it again", o.Spec.Kind, n.Spec.Kind)
		}
	case *Instance:
		n := upd.(*Instance)
		if o.Spec.NodeName != "" && o.Spec.NodeName != n.Spec.NodeName {
			errs.add(spec.Child("nodeName"), "cannot change once bound (%s): delete the instance and its workload makes another", o.Spec.NodeName)
		}
		if o.Spec.Workload != n.Spec.Workload {
			errs.add(spec.Child("workload"), "cannot change")
		}
		if !reflect.DeepEqual(o.Spec.Template, n.Spec.Template) || o.Spec.Revision != n.Spec.Revision {
			errs.add(spec.Child("template"), "an instance's template cannot change: change its workload's template, which rolls out new instances")
		}
	case *Service:
		n := upd.(*Service)
		if len(o.Spec.VirtualIPs) > 0 && len(n.Spec.VirtualIPs) > 0 && !slices.Equal(o.Spec.VirtualIPs, n.Spec.VirtualIPs) {
			errs.add(spec.Child("virtualIPs"), "cannot change once allocated (%v)", o.Spec.VirtualIPs)
		}
		if o.Spec.Headless != n.Spec.Headless {
			errs.add(spec.Child("headless"), "cannot change: delete the service and create it again")
		}
	case *Secret:
		n := upd.(*Secret)
		if o.Type != n.Type {
			errs.add(NewPath("type"), "cannot change from %q", o.Type)
		}
	case *RoleBinding:
		if o.RoleRef != upd.(*RoleBinding).RoleRef {
			errs.add(NewPath("roleRef"), "cannot change: delete the binding and create another")
		}
	case *ClusterRoleBinding:
		if o.RoleRef != upd.(*ClusterRoleBinding).RoleRef {
			errs.add(NewPath("roleRef"), "cannot change: delete the binding and create another")
		}
	}
	return errs
}
