package cgroups

import (
	"fmt"
	"strings"
)

// DefaultParent is the cgroup, under each hierarchy root, that holds
// containers whose linux.cgroupsPath is relative.
const DefaultParent = "nexus"

// cleanPath turns linux.cgroupsPath into a path relative to a hierarchy
// root. Absolute paths are taken from the root, relative ones are placed
// under DefaultParent. Nothing may climb out of the hierarchy or name the
// root itself.
func cleanPath(p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("cgroups: linux.cgroupsPath is empty; set it to the container's cgroup (e.g. \"nexus/<id>\")")
	}
	if strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("cgroups: linux.cgroupsPath %q contains a NUL byte", p)
	}
	if !strings.HasPrefix(p, "/") && strings.Count(p, ":") == 2 {
		return "", fmt.Errorf("cgroups: linux.cgroupsPath %q looks like a systemd slice:prefix:name path; only cgroupfs paths are supported", p)
	}
	rel := strings.TrimPrefix(p, "/")
	if rel == p {
		rel = DefaultParent + "/" + rel
	}
	var parts []string
	for _, c := range strings.Split(rel, "/") {
		switch {
		case c == "":
			continue
		case c == "." || c == "..":
			return "", fmt.Errorf("cgroups: linux.cgroupsPath %q: %q components are not allowed (the path must stay inside the cgroup hierarchy)", p, c)
		case len(c) > 255:
			return "", fmt.Errorf("cgroups: linux.cgroupsPath %q: component longer than 255 bytes", p)
		case strings.HasPrefix(c, "cgroup."):
			return "", fmt.Errorf("cgroups: linux.cgroupsPath %q: component %q collides with cgroup interface files", p, c)
		}
		parts = append(parts, c)
	}
	if len(parts) == 0 {
		return "", fmt.Errorf("cgroups: linux.cgroupsPath %q names the hierarchy root; give the container its own cgroup", p)
	}
	return strings.Join(parts, "/"), nil
}
