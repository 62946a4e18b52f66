//go:build embedinit

package initbin

import _ "embed"

// Binary is the nexus-init executable.
//
//go:embed nexus-init.bin
var Binary []byte

// Hash is the hex SHA-256 of Binary, computed at build time (hashing 8 MB
// on every container start would cost milliseconds).
//
//go:embed nexus-init.sha256
var Hash string
