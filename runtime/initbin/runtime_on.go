//go:build embedruntime

package initbin

import _ "embed"

// Runtime is the nexus-runtime program (cmd/nexus-runtime), which
// `nexus runtime extract` writes out.
//
//go:embed nexus-runtime.bin
var Runtime []byte
