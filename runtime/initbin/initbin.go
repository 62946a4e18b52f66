// Package initbin carries programs inside the binaries make build makes.
// With the embedinit tag (nexus-runtime and nexus) it carries Init, the
// nexus-init program (cmd/nexus-init: the container init stage alone),
// which the runtime executes as every container's init stage; without it
// the runtime executes its own binary as the init stage. With the
// embedruntime tag (nexus) it carries Runtime, the lean nexus-runtime
// program (cmd/nexus-runtime: the OCI command line), which
// `nexus runtime extract` writes out for OCI tools.
package initbin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrNotEmbedded is returned by WriteFile for a program this build does
// not carry.
var ErrNotEmbedded = errors.New("initbin: program not embedded in this build (build with make build)")

// WriteFile writes program (Init or Runtime) to path with mode perm, atomically: into a
// temporary file in the same directory, renamed into place, so that no
// process ever executes a half-written program. An existing file or
// symlink at path is replaced.
func WriteFile(path string, program []byte, perm os.FileMode) error {
	if len(program) == 0 {
		return ErrNotEmbedded
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(program)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
