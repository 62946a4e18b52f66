package runtime

import (
	"crypto/sha256"
	"encoding/json"
	"sort"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"nexus.dev/nexus/runtime/cgroups"
	"nexus.dev/nexus/runtime/seccomp"
)

func validateSeccomp(s *specs.LinuxSeccomp) error {
	if err := seccomp.Validate(s); err != nil {
		return specErr("linux.seccomp", "%s", strings.TrimPrefix(err.Error(), "seccomp: "))
	}
	return nil
}

func validateResources(l *specs.Linux) error {
	path := l.CgroupsPath
	if path == "" {
		path = "id" // Create derives the path from the container id
	}
	if _, err := cgroups.New(cgroups.Config{Path: path, Resources: l.Resources}); err != nil {
		return specErr("linux.resources", "%s", strings.TrimPrefix(err.Error(), "cgroups: "))
	}
	return nil
}

// initSpec returns the compiled seccomp filter of s and a shallow copy of s
// without the profile, which is what the init stage receives. compile is
// seccomp.Compile or a cache in front of it.
func initSpec(s *specs.Spec, compile func(*specs.LinuxSeccomp) (*seccomp.Filter, error)) (*specs.Spec, *seccomp.Filter, error) {
	if s.Linux.Seccomp == nil {
		return s, nil, nil
	}
	f, err := compile(s.Linux.Seccomp)
	if err != nil {
		return nil, nil, specErr("linux.seccomp", "%s", strings.TrimPrefix(err.Error(), "seccomp: "))
	}
	c := *s
	l := *s.Linux
	l.Seccomp = nil
	c.Linux = &l
	return &c, f, nil
}

// cgroupMounts describes, for the container's /sys/fs/cgroup, each hierarchy
// the container's cgroup lives in: v1 controllers are grouped by directory
// (a hierarchy such as cpu,cpuacct mounts once), and the v2 part is
// "unified" on hybrid hosts or the whole mount on v2 hosts.
func cgroupMounts(m cgroups.Manager) []cgroupMount {
	paths := m.Paths()
	byDir := map[string][]string{}
	for ctrl, dir := range paths {
		if ctrl == "unified" {
			continue
		}
		byDir[dir] = append(byDir[dir], ctrl)
	}
	var out []cgroupMount
	for dir, ctrls := range byDir {
		sort.Strings(ctrls)
		opts := strings.Join(ctrls, ",")
		out = append(out, cgroupMount{Name: strings.TrimPrefix(opts, "name="), FSType: "cgroup", Options: opts, HostPath: dir})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if v2 := m.V2Path(); v2 != "" {
		name := "unified"
		if len(out) == 0 {
			name = ""
		}
		out = append(out, cgroupMount{Name: name, FSType: "cgroup2", HostPath: v2})
	}
	return out
}

// filterCache keeps compiled seccomp profiles: most containers on a node
// share a handful of profiles, and compiling one costs a quarter of a
// millisecond.
type filterCache struct {
	mu sync.Mutex
	m  map[[32]byte]*seccomp.Filter
}

// maxCachedFilters bounds the cache; it is emptied when full.
const maxCachedFilters = 32

func (c *filterCache) compile(p *specs.LinuxSeccomp) (*seccomp.Filter, error) {
	data, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	key := sha256.Sum256(data)
	c.mu.Lock()
	f := c.m[key]
	c.mu.Unlock()
	if f != nil {
		return f, nil
	}
	if f, err = seccomp.Compile(p); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedFilters {
		c.m = map[[32]byte]*seccomp.Filter{}
	}
	c.m[key] = f
	c.mu.Unlock()
	return f, nil
}
