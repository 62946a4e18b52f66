//go:build !embedruntime

package initbin

// Runtime is empty: this build carries no nexus-runtime program.
var Runtime []byte
