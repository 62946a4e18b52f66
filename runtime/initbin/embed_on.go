//go:build embedinit

package initbin

import _ "embed"

// Init is the nexus-init program (cmd/nexus-init).
//
//go:embed nexus-init.bin
var Init []byte

// InitHash is the hex SHA-256 of Init, computed at build time (hashing the
// program on every container start would cost milliseconds).
//
//go:embed nexus-init.sha256
var InitHash string
