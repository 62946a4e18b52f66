package runtime

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/runtime/cgroups"
	"nexus.dev/nexus/runtime/initstage"
	"nexus.dev/nexus/runtime/seccomp"
	"nexus.dev/nexus/runtime/spec"
)

// specForInit returns what the init stage receives of s: the part it acts
// on and the compiled seccomp filter. compile is seccomp.Compile or a cache
// in front of it.
func specForInit(s *specs.Spec, compile func(*specs.LinuxSeccomp) (*seccomp.Filter, error)) (*initstage.Spec, *initstage.Filter, error) {
	var f *initstage.Filter
	if s.Linux.Seccomp != nil {
		c, err := compile(s.Linux.Seccomp)
		if err != nil {
			return nil, nil, &spec.Error{Field: "linux.seccomp", Problem: strings.TrimPrefix(err.Error(), "seccomp: ")}
		}
		f = c.Program()
	}
	l := s.Linux
	return &initstage.Spec{Process: s.Process, Root: s.Root, Hostname: s.Hostname, Domainname: s.Domainname, Mounts: s.Mounts, Hooks: s.Hooks,
		Linux: &initstage.Linux{Namespaces: l.Namespaces, Devices: l.Devices, Sysctl: l.Sysctl, TimeOffsets: l.TimeOffsets, Personality: l.Personality,
			MaskedPaths: l.MaskedPaths, ReadonlyPaths: l.ReadonlyPaths, RootfsPropagation: l.RootfsPropagation}}, f, nil
}

// cgroupMounts describes, for the container's /sys/fs/cgroup, each hierarchy
// the container's cgroup lives in: v1 controllers are grouped by directory
// (a hierarchy such as cpu,cpuacct mounts once), and the v2 part is
// "unified" on hybrid hosts or the whole mount on v2 hosts.
func cgroupMounts(m cgroups.Manager) []initstage.CgroupMount {
	paths := m.Paths()
	byDir := map[string][]string{}
	for ctrl, dir := range paths {
		if ctrl == "unified" {
			continue
		}
		byDir[dir] = append(byDir[dir], ctrl)
	}
	var out []initstage.CgroupMount
	for dir, ctrls := range byDir {
		sort.Strings(ctrls)
		opts := strings.Join(ctrls, ",")
		out = append(out, initstage.CgroupMount{Name: strings.TrimPrefix(opts, "name="), FSType: "cgroup", Options: opts, HostPath: dir})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if v2 := m.V2Path(); v2 != "" {
		name := "unified"
		if len(out) == 0 {
			name = ""
		}
		out = append(out, initstage.CgroupMount{Name: name, FSType: "cgroup2", HostPath: v2})
	}
	return out
}

// filterCache keeps compiled seccomp profiles: most containers on a node
// share a handful of profiles. It keeps them in memory for a long-lived
// Runtime (the agent), and as files under dir for the OCI command line,
// where every call is a new process: the first compile of the default
// profile in a process took 1.9 ms there (it allocates 330 KB, and fresh
// memory costs page faults), reading it back from the file 0.6 ms (medians
// of 40 interleaved runs on the bench machine).
//
// The key is the profile's JSON itself, which no two different profiles
// share (a hash would need crypto/sha256 and its packages in every
// nexus-runtime process). A file is named by the FNV-1a hash of that JSON
// and holds the compiled program, a newline and the JSON, which must match
// exactly: a collision or a torn file means a compile, never the wrong
// program. The files live in the state root, which only root can write.
type filterCache struct {
	dir string // "" keeps them in memory only
	mu  sync.Mutex
	m   map[string]*seccomp.Filter
}

// seccompCacheDir holds the filterCache's files under the state root.
const seccompCacheDir = ".seccomp"

// maxCachedFilters bounds the cache in memory (it is emptied when full) and
// on disk (no file is added past it).
const maxCachedFilters = 32

// maxFilterFile bounds what is read back: a profile as JSON and its program.
const maxFilterFile = 4 << 20

func (c *filterCache) compile(p *specs.LinuxSeccomp) (*seccomp.Filter, error) {
	data, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	key := string(data)
	c.mu.Lock()
	f := c.m[key]
	c.mu.Unlock()
	if f != nil {
		return f, nil
	}
	if f = c.load(data); f == nil {
		if f, err = seccomp.Compile(p); err != nil {
			return nil, err
		}
		c.save(data, f)
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedFilters {
		c.m = map[string]*seccomp.Filter{}
	}
	c.m[key] = f
	c.mu.Unlock()
	return f, nil
}

func (c *filterCache) file(profile []byte) string {
	h := fnv.New64a()
	h.Write(profile)
	return filepath.Join(c.dir, fmt.Sprintf("%016x", h.Sum64()))
}

// load returns the program saved for profile, or nil.
func (c *filterCache) load(profile []byte) *seccomp.Filter {
	if c.dir == "" {
		return nil
	}
	data, err := fsutil.ReadFileLimit(c.file(profile), maxFilterFile)
	if err != nil {
		return nil
	}
	prog, saved, ok := bytes.Cut(data, []byte{'\n'})
	if !ok || !bytes.Equal(saved, profile) {
		return nil
	}
	var f seccomp.Filter
	if err := json.Unmarshal(prog, &f); err != nil {
		return nil
	}
	return &f
}

// save keeps f for profile, as best it can: the cache only saves time.
func (c *filterCache) save(profile []byte, f *seccomp.Filter) {
	if c.dir == "" {
		return
	}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return
	}
	if entries, err := os.ReadDir(c.dir); err != nil || len(entries) >= maxCachedFilters {
		return
	}
	prog, err := json.Marshal(f)
	if err != nil {
		return
	}
	tmp, err := os.CreateTemp(c.dir, ".new-*")
	if err != nil {
		return
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(append(prog, '\n'), profile...))
	if cerr := tmp.Close(); err == nil && cerr == nil {
		_ = os.Rename(tmp.Name(), c.file(profile))
	}
}

// IsInit reports whether this process was started as a container init
// stage. A binary's main calls it before anything else (and InitMain if
// so): a build without the embedded init program executes itself as the
// init stage.
func IsInit() bool { return initstage.IsInit() }

// InitMain is the init stage (initstage.Main). It never returns.
func InitMain() { initstage.Main() }

// EscapeError reports a path inside a container that reaches outside the
// root filesystem through a symlink.
type EscapeError = initstage.EscapeError

// runHooks runs hooks with the container's state on stdin (see
// initstage.RunHooks).
func runHooks(kind string, hooks []specs.Hook, state specs.State) error {
	if len(hooks) == 0 {
		return nil
	}
	data, err := json.Marshal(state)
	if err != nil {
		return err
	}
	return initstage.RunHooks(kind, hooks, data)
}

// hasInitHooks reports whether the init stage runs hooks (and so needs
// the container's state).
func hasInitHooks(h *specs.Hooks) bool {
	return len(initstage.HookList(h, "createContainer")) > 0 || len(initstage.HookList(h, "startContainer")) > 0
}
