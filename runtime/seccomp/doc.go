// Package seccomp turns the seccomp section of an OCI runtime spec
// (specs.LinuxSeccomp) into a classic-BPF seccomp filter; the container's
// init stage installs it (initstage.Load, initstage.LoadAndExec), so that
// the init program links none of the compiler.
//
// Nexus is built with CGO_ENABLED=0, so libseccomp is not available; this
// package is a pure-Go replacement for the part of it a container runtime
// needs. The work is split so that almost all of it is a pure function:
//
//   - Validate checks a profile and names the offending field, so the runtime
//     can reject a bad spec before it creates anything.
//   - Compile produces a Filter: the BPF program plus the seccomp(2) flags.
//     It has no side effects and is tested by running the program in a BPF
//     emulator against crafted seccomp_data.
//   - Filter.Program is what initstage.Load installs on the calling thread.
//   - DefaultProfile is an allow-list in the spirit of Docker's default.
//
// Semantics, chosen to match libseccomp and runc where they define them:
//
//   - The filter always covers the native architecture plus every supported
//     architecture in Architectures (SCMP_ARCH_X86_64, SCMP_ARCH_X86,
//     SCMP_ARCH_X32, SCMP_ARCH_AARCH64, SCMP_ARCH_ARM). Other architectures
//     the spec defines (MIPS, PPC, S390, ...) are accepted and ignored: their
//     AUDIT_ARCH value can never reach a filter on the amd64 and arm64 hosts
//     Nexus supports. A syscall made with an architecture the filter does not
//     cover is killed with SECCOMP_RET_KILL_PROCESS. libseccomp's default for
//     that case is KILL_THREAD; killing the whole process is the safer
//     choice, since a thread-killed process can be left half alive.
//   - x32 syscalls arrive with AUDIT_ARCH_X86_64 and __X32_SYSCALL_BIT set in
//     the number. They are matched against the x32 table if SCMP_ARCH_X32 is
//     listed and are otherwise treated as a foreign architecture.
//   - Syscall names are looked up per architecture in a table generated from
//     golang.org/x/sys (see gen_sysnum.go). A name that one architecture lacks
//     is skipped for it; a name no supported architecture knows is an error.
//   - Rules for one syscall: if any rule has no args it wins (the first such
//     rule, as libseccomp lets a catch-all rule supersede conditional ones);
//     otherwise the rules are tried in spec order and the first whose args all
//     match (AND) decides, so several rules are an OR. A syscall no rule
//     matches gets the default action. As in runc, a rule that names the same
//     arg index twice is split into one rule per condition (OR).
//   - Args are compared as unsigned 64-bit values (hi and lo 32-bit halves).
//     On the 32-bit ABIs (x86, arm) only the low half is loaded and the high
//     half is taken to be zero, as the kernel provides 32-bit arguments.
//     SCMP_CMP_MASKED_EQ matches (arg & value) == valueTwo.
//   - SCMP_ACT_KILL is SCMP_ACT_KILL_THREAD. SCMP_ACT_ERRNO returns errnoRet
//     (default EPERM). SCMP_ACT_TRACE passes errnoRet to the tracer (default
//     EPERM, as runc does).
//   - SCMP_ACT_NOTIFY, listenerPath and listenerMetadata are not supported:
//     they need a seccomp user-notification listener, which Nexus does not
//     have. Validate rejects them rather than silently degrading.
//   - Flags SECCOMP_FILTER_FLAG_LOG and SECCOMP_FILTER_FLAG_SPEC_ALLOW are
//     passed to seccomp(2). SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is accepted
//     but only meaningful with a notify listener; the kernel rejects it
//     without one, so initstage.Load leaves it out.
package seccomp
