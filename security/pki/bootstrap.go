package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
)

// ErrIncomplete means a Dir holds part of a PKI but not what a server runs
// with.
var ErrIncomplete = errors.New("incomplete PKI directory")

// initFiles are the files Init writes.
var initFiles = []string{RootCertFile, RootKeyFile, IntermediateCertFile, IntermediateKeyFile, BundleFile, RevocationsFile, NodeCertFile, NodeKeyFile}

// serverFiles are the files a server runs with: the trust bundle and its
// own certificate and key. (The root key may be kept offline.)
var serverFiles = []string{BundleFile, NodeCertFile, NodeKeyFile}

// Bootstrap gives a machine without a PKI one of its own, so that a first
// server can start with no setup. If the directory holds none of the files
// Init writes (or does not exist), it runs Init with cfg and reports
// created. If it holds the files a server runs with, it changes nothing.
// Anything in between fails with ErrIncomplete, naming the files present
// and the ones missing, and nothing is written.
func (d Dir) Bootstrap(cfg InitConfig) (created bool, err error) {
	var present []string
	for _, name := range initFiles {
		_, err := os.Lstat(d.file(name))
		switch {
		case err == nil:
			present = append(present, name)
		case !errors.Is(err, fs.ErrNotExist):
			return false, fmt.Errorf("look for %s: %w", d.file(name), err)
		}
	}
	if len(present) == 0 {
		if err := d.Init(cfg); err != nil {
			return false, err
		}
		return true, nil
	}
	var missing []string
	for _, name := range serverFiles {
		if !slices.Contains(present, name) {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return false, nil
	}
	return false, fmt.Errorf("%w: %s has %s but not %s", ErrIncomplete, d.Path, strings.Join(present, ", "), strings.Join(missing, ", "))
}
