//go:build !embedinit

package initbin

// Binary and Hash are empty: this build re-executes itself as the init
// stage.
var (
	Binary []byte
	Hash   string
)
