// Package spec is what Nexus knows of an OCI runtime spec (config.json)
// before any container exists: the hardened default (Default, which
// `nexus runtime spec` writes and image bundles start from), reading and
// decoding a bundle's config.json (Load, Parse, with a one-pass decoder,
// DecodeFast, that also reads state.json), and validation of every field
// the runtime acts on (Validate), whose errors are *Error naming the JSON
// field.
//
// It is a package of its own, apart from runtime, so that what only makes
// or checks specs (runtime/image/bundle) does not link the runtime's
// lifecycle code, its embedded programs and the packages they pull in
// (log/slog, net, cgo). The checks that need the
// runtime's tables (capabilities, rlimits, namespaces from initstage, the
// seccomp compiler's syscall names, the cgroup manager's resource rules)
// call those packages, so a spec is judged exactly as runtime.Create
// judges it.
package spec
