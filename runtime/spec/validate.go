package spec

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/runtime/cgroups"
	"nexus.dev/nexus/runtime/initstage"
	"nexus.dev/nexus/runtime/seccomp"
)

// Validate checks every field the runtime acts on and returns the first
// problem as an *Error. bundle is used to resolve a relative root.path;
// when it is empty the file system is not consulted.
func Validate(s *specs.Spec, bundle string) error {
	return validate(s, bundle, true)
}

// validate is Validate; LoadExceptSeccomp passes checkSeccomp=false.
func validate(s *specs.Spec, bundle string, checkSeccomp bool) error {
	if s == nil {
		return specErr("", "empty spec")
	}
	if s.Version == "" {
		return specErr("ociVersion", "missing (set it to %q)", specs.Version)
	}
	if !strings.HasPrefix(s.Version, "1.") {
		return specErr("ociVersion", "%q is not supported: this runtime implements runtime-spec 1.x", s.Version)
	}
	if s.Root == nil || s.Root.Path == "" {
		return specErr("root.path", "missing: name the container's root filesystem directory")
	}
	if bundle != "" {
		root := s.Root.Path
		if !filepath.IsAbs(root) {
			root = filepath.Join(bundle, root)
		}
		fi, err := os.Stat(root)
		if err != nil {
			return specErr("root.path", "%s does not exist: unpack the image there or fix the path", root)
		}
		if !fi.IsDir() {
			return specErr("root.path", "%s is not a directory", root)
		}
	}
	if s.Process != nil {
		if err := ValidateProcess(s.Process); err != nil {
			return err
		}
	}
	for i, m := range s.Mounts {
		if err := validateMount(m, fmt.Sprintf("mounts[%d]", i)); err != nil {
			return err
		}
	}
	if err := validateHooks(s.Hooks); err != nil {
		return err
	}
	if s.Linux == nil {
		return specErr("linux", "missing: this runtime runs Linux containers")
	}
	return validateLinux(s, s.Linux, checkSeccomp)
}

// ValidateProcess checks a spec's process, or the process that exec
// starts in a running container; errors name fields under "process".
func ValidateProcess(p *specs.Process) error {
	const field = "process"
	if len(p.Args) == 0 || p.Args[0] == "" {
		return specErr(field+".args", "empty: name the program to run")
	}
	if p.Cwd == "" || !filepath.IsAbs(p.Cwd) {
		return specErr(field+".cwd", "%q must be an absolute path", p.Cwd)
	}
	for i, e := range p.Env {
		if !strings.Contains(e, "=") || strings.HasPrefix(e, "=") {
			return specErr(fmt.Sprintf("%s.env[%d]", field, i), "%q is not NAME=VALUE", e)
		}
		if strings.ContainsRune(e, 0) {
			return specErr(fmt.Sprintf("%s.env[%d]", field, i), "contains a NUL byte")
		}
	}
	for i, a := range p.Args {
		if strings.ContainsRune(a, 0) {
			return specErr(fmt.Sprintf("%s.args[%d]", field, i), "contains a NUL byte")
		}
	}
	if p.ConsoleSize != nil && !p.Terminal {
		return specErr(field+".consoleSize", "set without process.terminal")
	}
	if p.OOMScoreAdj != nil && (*p.OOMScoreAdj < -1000 || *p.OOMScoreAdj > 1000) {
		return specErr(field+".oomScoreAdj", "%d is outside -1000..1000", *p.OOMScoreAdj)
	}
	seen := map[string]bool{}
	for i, r := range p.Rlimits {
		f := fmt.Sprintf("%s.rlimits[%d]", field, i)
		if _, ok := initstage.RlimitByName[r.Type]; !ok {
			return specErr(f+".type", "unknown rlimit %q (use e.g. RLIMIT_NOFILE, RLIMIT_NPROC)", r.Type)
		}
		if seen[r.Type] {
			return specErr(f+".type", "%s is given twice", r.Type)
		}
		seen[r.Type] = true
		if r.Soft > r.Hard {
			return specErr(f, "soft limit %d is above hard limit %d", r.Soft, r.Hard)
		}
	}
	if c := p.Capabilities; c != nil {
		sets := []struct {
			name string
			caps []string
		}{{"bounding", c.Bounding}, {"effective", c.Effective}, {"inheritable", c.Inheritable}, {"permitted", c.Permitted}, {"ambient", c.Ambient}}
		for _, set := range sets {
			for i, name := range set.caps {
				if _, ok := initstage.CapabilityByName(name); !ok {
					return specErr(fmt.Sprintf("%s.capabilities.%s[%d]", field, set.name, i), "unknown capability %q (names look like CAP_NET_BIND_SERVICE)", name)
				}
			}
		}
	}
	if p.User.Umask != nil && *p.User.Umask > 0o777 {
		return specErr(field+".user.umask", "%#o is not a valid umask", *p.User.Umask)
	}
	if p.Scheduler != nil {
		return specErr(field+".scheduler", "not supported by this runtime yet: remove it")
	}
	if p.IOPriority != nil {
		return specErr(field+".ioPriority", "not supported by this runtime yet: remove it")
	}
	return nil
}

func validateMount(m specs.Mount, field string) error {
	if m.Destination == "" {
		return specErr(field+".destination", "missing")
	}
	if !filepath.IsAbs(m.Destination) {
		return specErr(field+".destination", "%q must be an absolute path inside the container", m.Destination)
	}
	if escapesRoot(m.Destination) {
		return specErr(field+".destination", "%q climbs out of the root filesystem with ..", m.Destination)
	}
	if strings.ContainsRune(m.Destination, 0) || strings.ContainsRune(m.Source, 0) {
		return specErr(field, "contains a NUL byte")
	}
	bind := m.Type == "bind" || hasOption(m.Options, "bind") || hasOption(m.Options, "rbind")
	if bind && m.Source == "" {
		return specErr(field+".source", "missing for a bind mount")
	}
	if !bind && m.Type == "" {
		return specErr(field+".type", "missing: give a file system type (proc, tmpfs, …) or the bind option")
	}
	for i, o := range m.Options {
		if strings.ContainsAny(o, "\x00") {
			return specErr(fmt.Sprintf("%s.options[%d]", field, i), "contains a NUL byte")
		}
	}
	return nil
}

// escapesRoot reports whether a lexical path climbs above its root.
func escapesRoot(p string) bool { return initstage.ClimbsAbove(0, p) }

func hasOption(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

func validateHooks(h *specs.Hooks) error {
	if h == nil {
		return nil
	}
	for _, kind := range initstage.HookKinds {
		for i, hk := range initstage.HookList(h, kind) {
			f := fmt.Sprintf("hooks.%s[%d]", kind, i)
			if !filepath.IsAbs(hk.Path) {
				return specErr(f+".path", "%q must be an absolute path", hk.Path)
			}
			if hk.Timeout != nil && *hk.Timeout <= 0 {
				return specErr(f+".timeout", "%d must be a positive number of seconds", *hk.Timeout)
			}
		}
	}
	return nil
}

func validateLinux(s *specs.Spec, l *specs.Linux, checkSeccomp bool) error {
	has := map[specs.LinuxNamespaceType]bool{}
	for i, ns := range l.Namespaces {
		f := fmt.Sprintf("linux.namespaces[%d]", i)
		if _, ok := initstage.NamespaceFlags[ns.Type]; !ok {
			return specErr(f+".type", "unknown namespace type %q (use pid, network, mount, ipc, uts, user, cgroup or time)", ns.Type)
		}
		if has[ns.Type] {
			return specErr(f+".type", "namespace %q is listed twice", ns.Type)
		}
		has[ns.Type] = true
		if ns.Path != "" {
			if !filepath.IsAbs(ns.Path) {
				return specErr(f+".path", "%q must be an absolute path", ns.Path)
			}
			switch ns.Type {
			case specs.UserNamespace, specs.TimeNamespace:
				return specErr(f+".path", "joining an existing %s namespace is not supported: let the runtime create it (drop path)", ns.Type)
			}
			var st unix.Statfs_t
			if err := unix.Statfs(ns.Path, &st); err != nil {
				return specErr(f+".path", "%s: %v", ns.Path, err)
			}
			if st.Type != unix.NSFS_MAGIC && st.Type != unix.PROC_SUPER_MAGIC {
				return specErr(f+".path", "%s is not a namespace file (expect /proc/<pid>/ns/… or a bind mount of one)", ns.Path)
			}
		}
	}
	if (len(l.UIDMappings) > 0 || len(l.GIDMappings) > 0) && !has[specs.UserNamespace] {
		return specErr("linux.uidMappings", "set without a user namespace: add {\"type\": \"user\"} or drop the mappings")
	}
	if has[specs.UserNamespace] && (len(l.UIDMappings) == 0 || len(l.GIDMappings) == 0) {
		return specErr("linux.uidMappings", "a new user namespace needs uidMappings and gidMappings")
	}
	for i, m := range append(append([]specs.LinuxIDMapping{}, l.UIDMappings...), l.GIDMappings...) {
		if m.Size == 0 {
			return specErr(fmt.Sprintf("linux.idMappings[%d].size", i), "must be at least 1")
		}
	}
	// In a uts namespace joined by path the names are set there, as the
	// spec asks; without one they would be the host's.
	if s.Hostname != "" && !HasNamespace(l, specs.UTSNamespace) {
		return specErr("hostname", "set without a uts namespace, so it would rename the host: add {\"type\": \"uts\"}")
	}
	if s.Domainname != "" && !HasNamespace(l, specs.UTSNamespace) {
		return specErr("domainname", "set without a uts namespace, so it would rename the host: add {\"type\": \"uts\"}")
	}
	for key := range l.Sysctl {
		if err := validateSysctl(l, key); err != nil {
			return err
		}
	}
	for i, p := range l.MaskedPaths {
		if !filepath.IsAbs(p) || escapesRoot(p) {
			return specErr(fmt.Sprintf("linux.maskedPaths[%d]", i), "%q must be an absolute path inside the container", p)
		}
	}
	for i, p := range l.ReadonlyPaths {
		if !filepath.IsAbs(p) || escapesRoot(p) {
			return specErr(fmt.Sprintf("linux.readonlyPaths[%d]", i), "%q must be an absolute path inside the container", p)
		}
	}
	for i, d := range l.Devices {
		f := fmt.Sprintf("linux.devices[%d]", i)
		if !strings.HasPrefix(filepath.Clean(d.Path), "/dev/") || escapesRoot(d.Path) {
			return specErr(f+".path", "%q must be under /dev", d.Path)
		}
		switch d.Type {
		case "c", "b", "u", "p":
		default:
			return specErr(f+".type", "%q is not a device type (use c, b, u or p)", d.Type)
		}
	}
	switch l.RootfsPropagation {
	case "", "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable", "runbindable":
	default:
		return specErr("linux.rootfsPropagation", "%q is not a propagation mode (use private, slave, shared or unbindable, optionally r-prefixed)", l.RootfsPropagation)
	}
	for k := range l.TimeOffsets {
		if k != "monotonic" && k != "boottime" {
			return specErr("linux.timeOffsets", "unknown clock %q (use monotonic or boottime)", k)
		}
	}
	if len(l.TimeOffsets) > 0 && !newNamespace(l, specs.TimeNamespace) {
		return specErr("linux.timeOffsets", "set without a new time namespace: add {\"type\": \"time\"}")
	}
	if l.Seccomp != nil && checkSeccomp {
		if err := validateSeccomp(l.Seccomp); err != nil {
			return err
		}
	}
	if p := l.Personality; p != nil {
		if _, ok := initstage.PersonalityDomains[p.Domain]; !ok {
			return specErr("linux.personality.domain", "%q is not supported (use LINUX or LINUX32)", p.Domain)
		}
		if len(p.Flags) > 0 {
			return specErr("linux.personality.flags", "no personality flags are supported yet: remove them")
		}
	}
	if s.Process != nil && s.Process.ApparmorProfile != "" && !lsmEnabled("/sys/module/apparmor/parameters/enabled") {
		return specErr("process.apparmorProfile", "AppArmor is not enabled on this host: remove the profile or enable AppArmor")
	}
	if s.Process != nil && s.Process.SelinuxLabel != "" && !lsmEnabled("/sys/fs/selinux/enforce") {
		return specErr("process.selinuxLabel", "SELinux is not enabled on this host: remove the label")
	}
	if l.IntelRdt != nil {
		return specErr("linux.intelRdt", "not supported on this runtime: remove it")
	}
	if len(l.NetDevices) > 0 {
		return specErr("linux.netDevices", "not supported by this runtime yet: move devices with the network layer instead")
	}
	return validateResources(l)
}

// lsmEnabled reports whether a security module's status file exists and
// does not say "N" (AppArmor's off; SELinux's enforce file holds 0 or 1).
func lsmEnabled(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	v := strings.TrimSpace(string(data))
	return v != "" && v != "N"
}

func newNamespace(l *specs.Linux, t specs.LinuxNamespaceType) bool {
	for _, ns := range l.Namespaces {
		if ns.Type == t && ns.Path == "" {
			return true
		}
	}
	return false
}

// HasNamespace reports whether l lists a namespace of type t, new or
// joined by path.
func HasNamespace(l *specs.Linux, t specs.LinuxNamespaceType) bool {
	for _, ns := range l.Namespaces {
		if ns.Type == t {
			return true
		}
	}
	return false
}

// validateSysctl allows only namespaced sysctls, and only when the container
// has its own namespace of that kind: anything else would change the host.
func validateSysctl(l *specs.Linux, key string) error {
	f := "linux.sysctl[" + key + "]"
	if key == "" || strings.Contains(key, "..") || strings.ContainsAny(key, "\x00") {
		return specErr(f, "not a sysctl name")
	}
	name := strings.ReplaceAll(key, "/", ".")
	ipc := map[string]bool{"kernel.msgmax": true, "kernel.msgmnb": true, "kernel.msgmni": true, "kernel.sem": true,
		"kernel.shmall": true, "kernel.shmmax": true, "kernel.shmmni": true, "kernel.shm_rmid_forced": true}
	switch {
	case ipc[name] || strings.HasPrefix(name, "fs.mqueue."):
		if !HasNamespace(l, specs.IPCNamespace) {
			return specErr(f, "needs an ipc namespace: add {\"type\": \"ipc\"}")
		}
	case strings.HasPrefix(name, "net."):
		if !HasNamespace(l, specs.NetworkNamespace) {
			return specErr(f, "needs a network namespace: add {\"type\": \"network\"}")
		}
	case name == "kernel.hostname" || name == "kernel.domainname":
		return specErr(f, "set it with the hostname/domainname fields instead")
	default:
		return specErr(f, "not a namespaced sysctl: setting it would change the host")
	}
	return nil
}

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
