// Package types holds the resources of the Nexus API, version v1: their Go
// types, JSON form, defaults and validation, in one place.
//
// The shapes follow Kubernetes conventions so that a Kubernetes user feels at
// home: every object has apiVersion and kind, metadata (name, namespace,
// labels, annotations, uid, resourceVersion, generation, creationTimestamp),
// a spec the user writes and a status the system writes, whose
// observedGeneration says which spec it reflects.
//
// Decoding is strict: an unknown field, a wrong type or a second document
// where one was expected is an error that names the field. Validation errors
// name the field path and the rule ("spec.template.ports[1].port: must be
// 1-65535"), and Validate reports every error, not just the first, so a user
// fixes a file in one round.
//
// Placement reuses the scheduler's vocabulary: constraints are written in the
// scheduler's constraint syntax and parsed by it, and taints, tolerations and
// spread are the scheduler's own types; SchedulerInstance converts a
// workload's template to a scheduler.Instance in one place.
package types
