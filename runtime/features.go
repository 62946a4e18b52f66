package runtime

import (
	"sort"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"

	"nexus.dev/nexus/runtime/initstage"
)

// Features reports what this runtime implements, in the OCI features
// format, so callers can check before they ask.
func Features() *features.Features {
	t := true
	var nsTypes []string
	for ns := range initstage.NamespaceFlags {
		nsTypes = append(nsTypes, string(ns))
	}
	caps, mountOpts := initstage.CapabilityNames(), initstage.MountOptionNames()
	for _, l := range [][]string{nsTypes, caps, mountOpts} {
		sort.Strings(l)
	}
	hooks := append([]string(nil), initstage.HookKinds...)
	return &features.Features{
		OCIVersionMin: "1.0.0",
		OCIVersionMax: specs.Version,
		Hooks:         hooks,
		MountOptions:  mountOpts,
		Linux: &features.Linux{
			Namespaces:   nsTypes,
			Capabilities: caps,
			Cgroup:       &features.Cgroup{V1: &t, V2: &t, Systemd: new(bool), SystemdUser: new(bool)},
			Seccomp: &features.Seccomp{
				Enabled:        &t,
				Actions:        []string{"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"},
				Operators:      []string{"SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"},
				Archs:          []string{"SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", "SCMP_ARCH_X32", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"},
				KnownFlags:     []string{"SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"},
				SupportedFlags: []string{"SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"},
			},
			Apparmor: &features.Apparmor{Enabled: new(bool)},
			Selinux:  &features.Selinux{Enabled: new(bool)},
		},
	}
}
