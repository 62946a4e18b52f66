package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/runtime/cgroups"
	"nexus.dev/nexus/runtime/spec"
)

// command is the command line that runs `nexus runtime args` on the
// state under root, for the hints of errors: a runtime's root need not be
// the default (the node agent keeps its containers under its data
// directory), and a hint without --root would look elsewhere.
func command(root, args string) string {
	if root == DefaultRoot {
		return "`nexus runtime " + args + "`"
	}
	return "`nexus runtime --root " + root + " " + args + "`"
}

// DefaultRoot is where container state lives unless --root says otherwise.
// It is on tmpfs so that state does not outlive the processes it describes.
const DefaultRoot = "/run/nexus/runtime"

const (
	stateFile   = "state.json"
	startSocket = "start.sock"
	lockFile    = "lock"
)

// MaxIDLength is the longest container ID: an ID is the name of the
// container's state directory and of its cgroup directory, and a file name
// holds at most 255 bytes (NAME_MAX). runc's limit is the same in effect.
const MaxIDLength = 255

// ValidateID checks a container ID: it becomes a directory name and part of
// cgroup paths, so it may not contain slashes or start with a dot.
func ValidateID(id string) error {
	if !validIDString(id) {
		return fmt.Errorf("container id %q is invalid: use 1-%d characters from A-Z a-z 0-9 _ . + -, starting with a letter or digit", id, MaxIDLength)
	}
	return nil
}

func validIDString(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("_.+-", rune(c))) {
			return false
		}
	}
	return true
}

// maxSocketPath is the longest path a unix socket address holds: sun_path
// has 108 bytes, the last for the NUL.
const maxSocketPath = 107

// socketPath returns a path to dir/name short enough for a unix socket
// address: the path itself, or, under a long state root or container ID,
// the same file reached through /proc/self/fd and a handle on dir. Call
// done once the socket is bound or connected.
func socketPath(dir, name string) (path string, done func(), err error) {
	path = filepath.Join(dir, name)
	if len(path) <= maxSocketPath {
		return path, func() {}, nil
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, err
	}
	return "/proc/self/fd/" + strconv.Itoa(fd) + "/" + name, func() { unix.Close(fd) }, nil
}

// Status is a container's lifecycle state as the OCI runtime spec names it.
type Status = specs.ContainerState

// savedState is what the runtime keeps on disk for a container: everything a
// later process needs to report, signal and delete it.
type savedState struct {
	ID          string            `json:"id"`
	Pid         int               `json:"pid"`
	PidStart    uint64            `json:"pidStartTime"` // /proc/<pid>/stat field 22, guards against pid reuse
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	Created     time.Time         `json:"created"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Cgroup      cgroups.Saved     `json:"cgroup"`
	// HostRootfsMount is set when the container shares the host's mount
	// namespace: the id of the mount that was on top of Rootfs before the
	// container's, down to which Delete detaches (see hostmount_linux.go).
	HostRootfsMount uint64 `json:"hostRootfsMount,omitempty"`
	// Spec is nil when the state was read by readStateNoSpec.
	Spec *specs.Spec `json:"-"`
	// SavedSpec is Spec as state.json holds it (a spec.Document), decoded
	// only by the calls that use the spec: with the default seccomp
	// profile it is most of the file, and decoding it most of the time to
	// read one (State took 250 µs with it, 25 µs without).
	SavedSpec json.RawMessage `json:"spec"`
	// rawSpec, when set, is the config.json Spec was decoded from, which
	// writeState saves as it is: encoding the spec again would build
	// encoding/json's encoders for its 39 struct types, in every create.
	rawSpec []byte
}

// containerDir returns the state directory of id under root.
func containerDir(root, id string) string { return filepath.Join(root, id) }

func writeState(dir string, st *savedState) error {
	saved := *st
	saved.SavedSpec = st.rawSpec
	if saved.SavedSpec == nil {
		doc, err := json.Marshal(spec.DocumentOf(st.Spec))
		if err != nil {
			return err
		}
		saved.SavedSpec = doc
	}
	data, err := json.Marshal(&saved)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write state of %s: %w", st.ID, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("write state of %s: %w", st.ID, err)
	}
	return nil
}

// stateStamp identifies one state file: a container's state rewritten
// (Update), or deleted and created again, is a new file.
type stateStamp struct {
	dev, ino uint64
	ctime    unix.Timespec
}

func stampOf(dir string) (stateStamp, error) {
	var sb unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, stateFile), &sb); err != nil {
		return stateStamp{}, err
	}
	return stateStamp{dev: sb.Dev, ino: sb.Ino, ctime: sb.Ctim}, nil
}

// ErrNotExist is returned for a container ID that has no state directory.
var ErrNotExist = errors.New("container does not exist")

// readState reads a container's state with its spec.
func readState(root, id string) (*savedState, error) {
	st, err := readStateNoSpec(root, id)
	if err != nil {
		return nil, err
	}
	var doc *spec.Document
	if len(st.SavedSpec) > 0 && !spec.DecodeFast(st.SavedSpec, &doc) {
		doc = nil
		if err := json.Unmarshal(st.SavedSpec, &doc); err != nil {
			return nil, fmt.Errorf("state of %s is corrupt (spec: %v): remove it with %s", id, err, command(root, "delete --force "+id))
		}
	}
	st.Spec, st.SavedSpec = doc.Spec(), nil
	return st, nil
}

// readStateNoSpec reads a container's state but not its spec (Spec is
// nil), for the calls that only report, wait or count.
func readStateNoSpec(root, id string) (*savedState, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(containerDir(root, id), stateFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("container %s: %w (list containers with %s)", id, ErrNotExist, command(root, "list"))
		}
		return nil, fmt.Errorf("read state of %s: %w", id, err)
	}
	var st savedState
	if !spec.DecodeFast(data, &st) {
		st = savedState{}
		if err := json.Unmarshal(data, &st); err != nil {
			return nil, fmt.Errorf("state of %s is corrupt (%v): remove it with %s", id, err, command(root, "delete --force "+id))
		}
	}
	return &st, nil
}

// lockContainer takes an exclusive lock on the container's directory so two
// runtime processes do not change the same container at once.
func lockContainer(dir string) (release func(), err error) {
	fd, err := unix.Open(filepath.Join(dir, lockFile), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { unix.Close(fd) }, nil
}

// processStartTime reads field 22 of /proc/<pid>/stat: the process's start
// time in clock ticks since boot, which with the pid identifies a process.
func processStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces and parentheses.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	if fields[0] == "Z" || fields[0] == "X" {
		return 0, fmt.Errorf("process %d has exited", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// alive reports whether the container's init is still the process it was.
func (st *savedState) alive() bool {
	if st.Pid <= 0 {
		return false
	}
	start, err := processStartTime(st.Pid)
	return err == nil && start == st.PidStart
}

// status derives the lifecycle state from the process and the start
// socket, which Start removes.
func (st *savedState) status(dir string) Status {
	if !st.alive() {
		return specs.StateStopped
	}
	if _, err := os.Lstat(filepath.Join(dir, startSocket)); err == nil {
		return specs.StateCreated
	}
	return specs.StateRunning
}

// ociState is the state document `state` prints, as the runtime spec defines it.
func (st *savedState) ociState(dir string) specs.State {
	s := specs.State{
		Version:     specs.Version,
		ID:          st.ID,
		Status:      st.status(dir),
		Bundle:      st.Bundle,
		Annotations: st.Annotations,
	}
	if s.Status != specs.StateStopped {
		s.Pid = st.Pid
	}
	return s
}

// Spec returns the spec a container was created with.
func (r *Runtime) Spec(id string) (*specs.Spec, error) {
	st, err := readState(r.root, id)
	if err != nil {
		return nil, err
	}
	return st.Spec, nil
}
