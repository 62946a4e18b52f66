// Package mvcc is the replicated state machine of the Nexus store: a
// multi-version key-value store with etcd v3 semantics, persisted in bbolt.
//
// Every write reaches the store as an etcd InternalRaftRequest applied in raft
// log order on every member, so Apply is deterministic: it reads no clock, no
// randomness, and never lets map iteration order reach its results or the
// database. The applied raft index is written in the same bbolt transaction
// as the effects of the entry, which makes Apply idempotent across restarts:
// entries at or below AppliedIndex are skipped.
//
// Layout. The "key" bucket maps a revision {main, sub} (17 bytes, plus a 't'
// suffix for tombstones, as etcd lays it out) to a marshalled mvccpb.KeyValue.
// An in-memory index, rebuilt at Open, maps each user key to the revisions
// that touched it; reads resolve a key at a revision through the index and
// then fetch the value by revision. The "lease" bucket holds granted leases
// and the "meta" bucket the applied index, the compacted revision, alarms and
// the storage format version.
//
// Concurrency. Apply mutates the index in place under the store lock, but
// publishes the new revision only after the bbolt commit, so readers (Range,
// Watch replay) never see an uncommitted revision and are not blocked for
// the duration of the commit: they read at the published revision and ignore
// index entries above it. (The store server opens the store with NoSync:
// raft's WAL, fsynced before entries are applied, is what makes a write
// durable, so commits are not fsynced there.)
//
// Leases. The store keeps the replicated part of a lease (ID, TTL, and the
// remaining TTL of the last checkpoint). Expiry is not replicated state: the
// leader tracks deadlines in memory from the clock it passes in
// (ExpiredLeases, Renew, Promote) and proposes LeaseRevoke for leases that
// expired, exactly like etcd's lessor. Keep-alives therefore refresh only the
// leader's memory; a new leader restarts every deadline from the last
// checkpointed remaining TTL (or the full TTL) when it is promoted.
package mvcc
