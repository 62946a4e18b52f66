// Package initbin carries the lean nexus-runtime program
// (cmd/nexus-runtime: the OCI command line and the container init stage,
// only the runtime's packages) inside the nexus binary when it is built
// with the embedinit tag (make build does). The runtime executes it,
// instead of re-executing the whole nexus binary, as a container's init
// stage, and `nexus runtime extract` writes it out for OCI tools. Without
// the tag Binary is empty and the runtime re-executes itself.
package initbin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrNotEmbedded is returned by WriteFile in a build without the program.
var ErrNotEmbedded = errors.New("initbin: no nexus-runtime program embedded (build with make build)")

// WriteFile writes Binary to path with mode perm, atomically: into a
// temporary file in the same directory, renamed into place, so that no
// process ever executes a half-written program. An existing file or
// symlink at path is replaced.
func WriteFile(path string, perm os.FileMode) error {
	if len(Binary) == 0 {
		return ErrNotEmbedded
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(Binary)
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
