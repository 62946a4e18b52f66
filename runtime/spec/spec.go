package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"nexus.dev/nexus/internal/fsutil"
)

// Error is a problem with one field of a runtime spec. Field is the JSON
// path of the field, such as "linux.namespaces[2].type".
type Error struct {
	Field   string
	Problem string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return "config.json: " + e.Problem
	}
	return "config.json: " + e.Field + ": " + e.Problem
}

func specErr(field, format string, args ...any) error {
	return &Error{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// Load reads and validates bundle/config.json.
func Load(bundle string) (*specs.Spec, error) {
	spec, _, err := load(bundle, true)
	return spec, err
}

// LoadExceptSeccomp is Load for the runtime's create, which compiles the
// seccomp profile anyway (compiling is how a profile is validated), so
// linux.seccomp is not checked here. It also returns the document as read,
// which state.json keeps.
func LoadExceptSeccomp(bundle string) (*specs.Spec, []byte, error) {
	return load(bundle, false)
}

// MaxSize is the most the runtime reads of a config.json or of a process
// file for exec: a hardened config with a full seccomp profile is about
// 30 KiB, and a file without end (/dev/zero, a FIFO) must not take the
// machine's memory.
const MaxSize = 4 << 20

func load(bundle string, checkSeccomp bool) (*specs.Spec, []byte, error) {
	data, err := fsutil.ReadFileLimit(filepath.Join(bundle, "config.json"), MaxSize)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("bundle %s has no config.json: create one (e.g. with `nexus runtime spec`) or pass the right --bundle", bundle)
		}
		return nil, nil, fmt.Errorf("read bundle config: %w", err)
	}
	spec, err := Parse(data)
	if err != nil {
		return nil, nil, err
	}
	if err := validate(spec, bundle, checkSeccomp); err != nil {
		return nil, nil, err
	}
	return spec, data, nil
}

// Document is specs.Spec without the sections for other platforms
// (windows, solaris, vm, zos, freebsd), which a Linux runtime does not act
// on. Specs are decoded, and saved in state.json, through it: encoding/json's
// first use of a type in a process builds the codecs of every type it can
// reach, and those sections are 24 of specs.Spec's 63 struct types. Every OCI
// call is a new process; its first decode of a hardened config.json took
// 2.7 instead of 3.4 ms (medians of 41 fresh processes on the bench machine).
type Document struct {
	Version     string            `json:"ociVersion"`
	Process     *specs.Process    `json:"process,omitempty"`
	Root        *specs.Root       `json:"root,omitempty"`
	Hostname    string            `json:"hostname,omitempty"`
	Domainname  string            `json:"domainname,omitempty"`
	Mounts      []specs.Mount     `json:"mounts,omitempty"`
	Hooks       *specs.Hooks      `json:"hooks,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Linux       *specs.Linux      `json:"linux,omitempty"`
}

// Spec returns the spec d holds; a nil d gives nil.
func (d *Document) Spec() *specs.Spec {
	if d == nil {
		return nil
	}
	return &specs.Spec{Version: d.Version, Process: d.Process, Root: d.Root, Hostname: d.Hostname, Domainname: d.Domainname,
		Mounts: d.Mounts, Hooks: d.Hooks, Annotations: d.Annotations, Linux: d.Linux}
}

// DocumentOf returns s as a Document to encode; a nil s gives nil.
func DocumentOf(s *specs.Spec) *Document {
	if s == nil {
		return nil
	}
	return &Document{Version: s.Version, Process: s.Process, Root: s.Root, Hostname: s.Hostname, Domainname: s.Domainname,
		Mounts: s.Mounts, Hooks: s.Hooks, Annotations: s.Annotations, Linux: s.Linux}
}

// Parse decodes a config.json document. Sections for other platforms than
// Linux are not read.
func Parse(data []byte) (*specs.Spec, error) {
	var spec Document
	if DecodeFast(data, &spec) {
		return spec.Spec(), nil
	}
	spec = Document{}
	if err := json.Unmarshal(data, &spec); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return nil, specErr("", "not valid JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			return nil, specErr(te.Field, "wrong type: got JSON %s, want %s", te.Value, te.Type)
		}
		return nil, specErr("", "cannot decode: %v", err)
	}
	return spec.Spec(), nil
}
