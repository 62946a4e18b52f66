// Package storage keeps API objects in an etcd v3 keyspace, through the
// etcd client API only, so the embedded `nexus store` and a real etcd are
// interchangeable.
//
// Layout: /nexus/v1/<resource>/<namespace>/<name> for namespaced resources
// and /nexus/v1/<resource>/<name> for cluster-scoped ones; the value is the
// object's JSON (sealed first for resources with a Transformer, such as
// secrets).
//
// Concurrency follows Kubernetes: an object's resourceVersion is its key's
// mod revision. Create succeeds only if the key does not exist; update and
// delete that carry a resourceVersion succeed only if it is still the
// key's, otherwise ErrConflict (409). Lists read every page at the revision
// of the first (continue tokens carry it), so a paginated list is one
// consistent snapshot even while writes happen. Watches start after a
// given resourceVersion and deliver every later change once, in order; a
// revision the store has compacted away gives ErrGone (410) with the
// current revision, and the client lists again.
package storage
