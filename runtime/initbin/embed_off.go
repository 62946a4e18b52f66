//go:build !embedinit

package initbin

// Init and InitHash are empty: this build executes itself as the init
// stage.
var (
	Init     []byte
	InitHash string
)
