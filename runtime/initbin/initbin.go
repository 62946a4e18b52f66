// Package initbin carries the nexus-init program (cmd/nexus-init) inside
// the nexus binary when it is built with the embedinit tag (make build
// does). The runtime then executes it, instead of re-executing the whole
// nexus binary, as a container's init stage. Without the tag Binary is
// empty and the runtime re-executes itself.
package initbin
