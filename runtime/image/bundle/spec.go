// Package bundle turns an image's configuration into the OCI runtime spec
// that `nexus runtime` runs: the process (entrypoint and cmd by Docker's
// override rules, environment, working directory, user resolved against the
// image's own /etc/passwd and /etc/group), the root filesystem and the
// image's exposed ports and stop signal as annotations. Everything else
// (namespaces, capabilities, seccomp, masked paths, mounts) is
// spec.Default, so a container from an image is as hardened as one
// from `nexus runtime spec`.
package bundle

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/runtime/spec"
)

// Annotations that carry image metadata the runtime spec has no field for.
const (
	AnnotationExposedPorts = "org.opencontainers.image.exposedPorts"
	AnnotationStopSignal   = "org.opencontainers.image.stopSignal"
)

// DefaultPath is the PATH a container gets when its image sets none
// (Docker's default).
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Config is what a container is made from: an image configuration, the
// prepared root filesystem and the user's overrides.
type Config struct {
	// Image is the image's run configuration.
	Image v1.Config
	// Rootfs is the prepared root filesystem (it becomes root.path). Its
	// /etc/passwd and /etc/group resolve Image.User.
	Rootfs string
	// Args, when not empty, replaces Image.Cmd (`docker run IMAGE args…`).
	Args []string
	// Entrypoint, when not nil, replaces Image.Entrypoint and drops
	// Image.Cmd (`docker run --entrypoint`); an empty, non-nil slice clears
	// the entrypoint so that Args alone is the command.
	Entrypoint []string
	// Env is added to the image's environment; a NAME given here replaces
	// the image's value for NAME.
	Env []string
	// Hostname is the container's hostname; empty keeps the default, "nexus".
	Hostname string
	// Terminal gives the process a pseudo-terminal (and TERM=xterm).
	Terminal bool
	// HostNetwork leaves out the network namespace: the container uses the
	// host's interfaces and ports (docker run --network host).
	HostNetwork bool
}

// Spec returns the runtime spec for cfg. The spec is validated with
// spec.Validate without a bundle directory, so it is checked except
// for the existence of root.path, which the runtime checks at create.
func Spec(cfg Config) (*specs.Spec, error) {
	if cfg.Rootfs == "" {
		return nil, fmt.Errorf("bundle: no root filesystem given: prepare the image's rootfs (e.g. with snapshot.Mount) and pass its path as Rootfs")
	}
	args, err := processArgs(cfg)
	if err != nil {
		return nil, err
	}
	user, err := ResolveUser(cfg.Rootfs, cfg.Image.User)
	if err != nil {
		return nil, err
	}
	cwd := cfg.Image.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	if !strings.HasPrefix(cwd, "/") {
		return nil, fmt.Errorf("image working directory %q is not an absolute path; fix the image (WORKDIR must start with /)", cwd)
	}

	s := spec.Default()
	s.Root.Path = cfg.Rootfs
	if cfg.HostNetwork {
		s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(ns specs.LinuxNamespace) bool {
			return ns.Type == specs.NetworkNamespace
		})
	}
	if cfg.Hostname != "" {
		s.Hostname = cfg.Hostname
	}
	env, err := Environment(cfg.Image.Env, cfg.Env)
	if err != nil {
		return nil, err
	}
	env = setDefault(env, "PATH", DefaultPath)
	env = setDefault(env, "HOSTNAME", s.Hostname)
	env = setDefault(env, "HOME", user.Home)
	if cfg.Terminal {
		env = setDefault(env, "TERM", "xterm")
	}
	s.Process.Args = args
	s.Process.Env = env
	s.Process.Cwd = cwd
	s.Process.Terminal = cfg.Terminal
	s.Process.User = specs.User{UID: user.UID, GID: user.GID, AdditionalGids: user.AdditionalGids}

	ports, err := exposedPorts(cfg.Image.ExposedPorts)
	if err != nil {
		return nil, err
	}
	if err := checkSignal(cfg.Image.StopSignal); err != nil {
		return nil, err
	}
	if ports != "" || cfg.Image.StopSignal != "" {
		s.Annotations = map[string]string{}
	}
	if ports != "" {
		s.Annotations[AnnotationExposedPorts] = ports
	}
	if cfg.Image.StopSignal != "" {
		s.Annotations[AnnotationStopSignal] = cfg.Image.StopSignal
	}
	if err := spec.Validate(s, ""); err != nil {
		return nil, fmt.Errorf("spec made from the image is not valid: %w", err)
	}
	return s, nil
}

// processArgs applies Docker's rules: an overriding entrypoint resets the
// image's cmd, overriding args replace it, and the process is entrypoint
// followed by cmd.
func processArgs(cfg Config) ([]string, error) {
	entrypoint, cmd := cfg.Image.Entrypoint, cfg.Image.Cmd
	if cfg.Entrypoint != nil {
		entrypoint, cmd = cfg.Entrypoint, nil
	}
	if len(cfg.Args) > 0 {
		cmd = cfg.Args
	}
	args := append(slices.Clone(entrypoint), cmd...)
	if len(args) == 0 {
		return nil, fmt.Errorf("image has no entrypoint or cmd; pass a command")
	}
	if args[0] == "" {
		return nil, fmt.Errorf("the command's program name is empty (entrypoint %q, cmd %q); pass a command", entrypoint, cmd)
	}
	return args, nil
}

// Environment merges the image's environment with extra: an extra NAME
// replaces the image's NAME in place, new names are appended in order, and
// a name given twice keeps its last value. Entries must be NAME=VALUE.
func Environment(image, extra []string) ([]string, error) {
	var out []string
	index := map[string]int{}
	add := func(from string, i int, kv string) error {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || name == "" || strings.ContainsRune(kv, 0) {
			return fmt.Errorf("%s environment entry %d, %q, is not NAME=VALUE", from, i, kv)
		}
		if j, ok := index[name]; ok {
			out[j] = kv
			return nil
		}
		index[name] = len(out)
		out = append(out, kv)
		return nil
	}
	for i, kv := range image {
		if err := add("image", i, kv); err != nil {
			return nil, fmt.Errorf("%w: fix the image", err)
		}
	}
	for i, kv := range extra {
		if err := add("given", i, kv); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func setDefault(env []string, name, value string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			return env
		}
	}
	return append(env, name+"="+value)
}

// exposedPorts renders the image's exposed ports as "80/tcp,53/udp", sorted
// by port then protocol. A port without a protocol is TCP, as in Docker.
func exposedPorts(ports map[string]struct{}) (string, error) {
	type port struct {
		n     uint64
		proto string
	}
	var list []port
	for key := range ports {
		num, proto, ok := strings.Cut(key, "/")
		if !ok {
			proto = "tcp"
		}
		proto = strings.ToLower(proto)
		n, err := strconv.ParseUint(num, 10, 16)
		if err != nil || n == 0 || !isNumeric(num) {
			return "", fmt.Errorf("image exposes port %q: not PORT/PROTOCOL with PORT 1-65535; fix the image", key)
		}
		if proto != "tcp" && proto != "udp" && proto != "sctp" {
			return "", fmt.Errorf("image exposes port %q: protocol %q is not tcp, udp or sctp; fix the image", key, proto)
		}
		list = append(list, port{n, proto})
	}
	slices.SortFunc(list, func(a, b port) int {
		if a.n != b.n {
			return int(a.n) - int(b.n)
		}
		return strings.Compare(a.proto, b.proto)
	})
	list = slices.Compact(list)
	parts := make([]string, len(list))
	for i, p := range list {
		parts[i] = fmt.Sprintf("%d/%s", p.n, p.proto)
	}
	return strings.Join(parts, ","), nil
}

// checkSignal accepts a stop signal as Docker does: a name with or without
// SIG ("SIGTERM", "term") or a number. Empty means the default, SIGTERM.
func checkSignal(sig string) error {
	if sig == "" {
		return nil
	}
	if n, err := strconv.Atoi(sig); err == nil {
		if n < 1 || n > 64 {
			return fmt.Errorf("image stop signal %q is not a signal number (1-64); fix the image", sig)
		}
		return nil
	}
	name := strings.ToUpper(sig)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if unix.SignalNum(name) == 0 {
		return fmt.Errorf("image stop signal %q is not a signal name like SIGTERM; fix the image", sig)
	}
	return nil
}
