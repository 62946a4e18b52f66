// Package audit is the control plane's tamper-evident audit log: one JSON
// line per audited event, each carrying the SHA-256 of the one before, made
// durable before the request it records is answered.
//
// # What is recorded
//
// A Record is an API request (verb, resource, user, source address, status
// code and the allow/deny decision and reason of each of the three checks of
// triple validation: "authn", "identity", "authz") or an event outside a
// request ("authn-failed", "certificate-issued", "token-created", ...). A
// Policy maps each record, by resource, verb, user, group or path, to a
// Level: None (not written), Metadata, Request (plus the request body) or
// RequestResponse (plus the response body); the first matching rule wins.
// Mutations, denials and events are written at Metadata at least whatever
// the policy says, so a policy can add detail but cannot hide them.
//
// Secrets' values never reach the file: a record for the "secrets" resource
// has every value in its bodies replaced by "<redacted>" (keys and the
// object's name, namespace and labels are kept), whatever the level and
// whatever the caller passed. More redactors can be added per resource.
//
// # Line format and the hash chain
//
// Each record is one line of compact JSON; its last member is its own hash:
//
//	{"seq":7,"time":"…","level":"Metadata",…,"prev":"<hex>","hash":"<hex>"}
//
// hash is the hex SHA-256 of the line exactly as written, without the
// newline and with the trailing `,"hash":"<64 hex>"` member removed (so the
// bytes hashed end in the `}` that closes the object). prev is the hash of
// the record before; the very first record has seq 1 and a prev of 64 zeros.
// seq increases by one per record, across files. Verification recomputes
// hashes from the bytes on disk and never re-encodes a record, so it does not
// depend on how a Go version orders or escapes JSON.
//
// # Durability
//
// Log.Write returns only when the record's line is written and fdatasync'd;
// an error means the record is not in the log and the caller must fail a
// mutating request (HTTP 503). Writers that arrive while a sync runs share
// the next one (group commit), as the store's WAL does. A write that fails
// (a full disk) is cut back off the file and fails every record queued with
// it; the next Write tries again. A failed fdatasync leaves the page cache in
// an unknown state, so after one the Log refuses every write until it is
// opened again. Healthy says whether the last write failed, so a server can
// refuse a mutation before it makes one it could not audit.
//
// # Files and rotation
//
// The log is a directory (<data-dir>/audit, 0700) holding audit.log, the file
// being written, and rotated files audit-<first seq>-<last seq>.log (0600).
// When audit.log would grow past MaxBytes it is renamed to its rotated name
// and a new audit.log continues the chain: its first record's prev is the
// hash of the rotated file's last record. Beyond MaxFiles rotated files the
// oldest are deleted; verification then starts at the oldest file left and
// trusts its first prev as the anchor (Report.Anchor).
//
// Open resumes the chain from the last record on disk. A crash can leave the
// last line incomplete (no newline): nothing in it was acknowledged, so Open
// cuts it off and writes a "log-recovered" record saying how many bytes at
// which offset. Any other damage (a complete last line that is not a valid
// record) stops Open with the file and offset: that is not what a crash
// leaves, and the operator should run Verify before moving the file aside.
//
// # Verification and its limits
//
// Verify orders files by their records' sequence numbers and reports the
// first problem: an edited record (its hash does not match its bytes), a
// missing record or file (a gap in seq), records out of order, a broken
// link (prev is not the previous hash), an incomplete last line. It cannot
// see records removed from the end of the newest file, nor a chain that was
// rewritten from some point on with hashes recomputed: anyone who can write
// the files can do that. Report.Head (the last seq and hash) closes both when
// it is kept somewhere the writer of the files cannot change, e.g. shipped
// to another machine or into the replicated store, and compared later.
package audit
