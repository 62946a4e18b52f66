package cgroups

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"nexus.dev/nexus/internal/mountinfo"
)

// Mode says which cgroup hierarchies a host has.
type Mode int

const (
	// ModeV1 hosts mount only cgroup v1 hierarchies.
	ModeV1 Mode = iota + 1
	// ModeHybrid hosts mount v1 controllers and a cgroup2 hierarchy.
	ModeHybrid
	// ModeV2 hosts mount only the cgroup2 hierarchy.
	ModeV2
)

func (m Mode) String() string {
	switch m {
	case ModeV1:
		return "v1"
	case ModeHybrid:
		return "hybrid"
	case ModeV2:
		return "v2"
	}
	return "unknown"
}

// hierarchy is one mounted v1 hierarchy: its mount point and the controllers
// bound to it ("cpu", "cpuacct", "name=systemd", ...).
type hierarchy struct {
	mountpoint  string
	controllers []string
}

// layout is what the host mounts. It is immutable once built.
type layout struct {
	v1 []hierarchy
	// v2 is the cgroup2 mount point, "" if none.
	v2 string
	// v2Controllers are the controllers available at the cgroup2 root.
	v2Controllers map[string]bool
}

func (l *layout) mode() Mode {
	switch {
	case l.v2 != "" && len(l.v1) == 0:
		return ModeV2
	case l.v2 != "":
		return ModeHybrid
	}
	return ModeV1
}

var hostLayout = sync.OnceValues(func() (*layout, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cgroups: read mountinfo: %w", err)
	}
	l := parseMountinfo(data)
	if l.v2 == "" && len(l.v1) == 0 {
		return nil, fmt.Errorf("cgroups: no cgroup or cgroup2 filesystem is mounted; mount one at /sys/fs/cgroup")
	}
	if l.v2 != "" {
		ctrls, err := os.ReadFile(filepath.Join(l.v2, "cgroup.controllers"))
		if err != nil {
			return nil, fmt.Errorf("cgroups: read cgroup2 controllers: %w", err)
		}
		for _, c := range strings.Fields(string(ctrls)) {
			l.v2Controllers[c] = true
		}
	}
	return l, nil
})

// HostMode reports the detected mode of this host.
func HostMode() (Mode, error) {
	l, err := hostLayout()
	if err != nil {
		return 0, err
	}
	return l.mode(), nil
}

// V2Root is the mount point of the cgroup2 hierarchy's root: /sys/fs/cgroup
// on v2 hosts, usually /sys/fs/cgroup/unified on hybrid ones. cgroup eBPF
// programs attached there apply to every process on the host.
func V2Root() (string, error) {
	l, err := hostLayout()
	if err != nil {
		return "", err
	}
	if l.v2 == "" {
		return "", fmt.Errorf("cgroups: no cgroup2 filesystem is mounted (this host has cgroup v1 only); mount one, e.g. at /sys/fs/cgroup/unified")
	}
	return l.v2, nil
}

// parseMountinfo keeps the first mount of each cgroup hierarchy whose mount
// root is the hierarchy root (bind mounts of sub-cgroups are skipped).
func parseMountinfo(data []byte) *layout {
	l := &layout{v2Controllers: map[string]bool{}}
	seen := map[string]bool{} // v1 option sets already recorded
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 6 || len(fields) < sep+4 {
			continue
		}
		root, mnt, fstype, super := fields[3], mountinfo.Unescape(fields[4]), fields[sep+1], fields[sep+3]
		if root != "/" {
			continue
		}
		switch fstype {
		case "cgroup2":
			if l.v2 == "" {
				l.v2 = mnt
			}
		case "cgroup":
			var ctrls []string
			for _, o := range strings.Split(super, ",") {
				switch {
				case strings.HasPrefix(o, "name="), knownV1[o]:
					ctrls = append(ctrls, o)
				}
			}
			key := strings.Join(ctrls, ",")
			if len(ctrls) == 0 || seen[key] {
				continue
			}
			seen[key] = true
			l.v1 = append(l.v1, hierarchy{mountpoint: mnt, controllers: ctrls})
		}
	}
	return l
}

var knownV1 = map[string]bool{
	"cpu": true, "cpuacct": true, "cpuset": true, "memory": true, "devices": true,
	"freezer": true, "blkio": true, "pids": true, "hugetlb": true, "net_cls": true,
	"net_prio": true, "perf_event": true, "rdma": true, "misc": true,
}
