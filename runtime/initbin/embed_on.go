//go:build embedinit

package initbin

import _ "embed"

// Binary is the nexus-runtime executable.
//
//go:embed nexus-runtime.bin
var Binary []byte

// Hash is the hex SHA-256 of Binary, computed at build time (hashing 11 MB
// on every container start would cost milliseconds).
//
//go:embed nexus-runtime.sha256
var Hash string
