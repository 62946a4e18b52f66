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
	"syscall"
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
	tmp, err := writeTemp(path, program, perm)
	if tmp != "" {
		defer os.Remove(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeTemp writes program to a new temporary file beside path and closes
// it, and returns its name ("" if none was made).
//
// It holds syscall.ForkLock (shared) while the file is open for writing,
// so no process is forked in that window: a child forked then would hold
// the write descriptor until its own exec, and executing the program
// meanwhile (this process, at once, for a container's init) fails with
// ETXTBSY, "text file busy". That happened when an agent created its
// first containers at once (golang.org/issue/22315 has the general case).
func writeTemp(path string, program []byte, perm os.FileMode) (string, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return "", err
	}
	_, err = tmp.Write(program)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	return tmp.Name(), err
}
