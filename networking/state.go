package networking

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/internal/proc"
)

// StateFile is the name of the file, in Config.DataDir, that keeps the
// node's container addresses and published ports across agent restarts.
const StateFile = "networking.json"

// BootFile, in Config.DataDir, holds the boot ID of the machine's boot the
// state file belongs to.
const BootFile = "networking.boot"

// maxStateFile bounds the state file read at start: a full /16 of
// containers with a few ports each is well under it.
const maxStateFile = 64 << 20

const stateVersion = 1

// maxIDLength matches the runtime's longest container ID.
const maxIDLength = 255

// Protocol is the transport protocol of a published port. Its values are
// those of the API's Port.Protocol, so the agent converts by a cast; the
// package does not import the API's types, which it has no other use for.
type Protocol string

const (
	TCP Protocol = "TCP"
	UDP Protocol = "UDP"
)

// Port is a container port published on the node: connections to HostPort
// on any of the node's addresses go to Port on the container.
type Port struct {
	Port     int      `json:"port"`
	HostPort int      `json:"hostPort"`
	Protocol Protocol `json:"protocol"` // TCP when empty
}

func (p Port) String() string {
	return fmt.Sprintf("%d/%s -> %d", p.HostPort, p.Protocol, p.Port)
}

// ErrBadContainer marks a ContainerRef that cannot be attached as given.
var ErrBadContainer = errors.New("invalid container")

// state is the content of the state file.
type state struct {
	Version    int                        `json:"version"`
	Prefixes   NodePrefixes               `json:"prefixes"`
	Containers map[string]*containerState `json:"containers"`
}

// containerState is what the node keeps per attached container.
type containerState struct {
	IPv6  netip.Addr `json:"ipv6"`
	IPv4  netip.Addr `json:"ipv4"`
	NetNS string     `json:"netns"`
	Ports []Port     `json:"ports,omitempty"`
}

func newState(p NodePrefixes) *state {
	return &state{Version: stateVersion, Prefixes: p, Containers: map[string]*containerState{}}
}

// loadState reads the state file in dir. A missing file, or one from an
// earlier boot of the machine, is an empty state: every namespace and link
// it described went with that boot.
func loadState(dir string, p NodePrefixes) (*state, error) {
	path := filepath.Join(dir, StateFile)
	boot := proc.BootID()
	marker, err := os.ReadFile(filepath.Join(dir, BootFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read networking state: %w", err)
	}
	if strings.TrimSpace(string(marker)) != boot {
		// The state file is saved without fsync, so after a machine crash
		// it may be torn; it is not read at all. The marker is synced: it
		// is written once per boot.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove networking state of an earlier boot: %w", err)
		}
		if err := fsutil.WriteFileAtomic(filepath.Join(dir, BootFile), []byte(boot+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("record the boot of the networking state: %w", err)
		}
		return newState(p), nil
	}
	data, err := fsutil.ReadFileLimit(path, maxStateFile)
	if errors.Is(err, os.ErrNotExist) {
		return newState(p), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read networking state: %w", err)
	}
	st, err := decodeState(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v (it lists the containers' addresses; move it aside only if no container of this node runs)", ErrCorrupt, path, err)
	}
	if st.Prefixes != p {
		return nil, fmt.Errorf("%w: %s holds addresses from %s and %s but the node's prefixes are now %s and %s: detach the old containers first, or move the file aside if none runs",
			ErrCorrupt, path, st.Prefixes.IPv6, st.Prefixes.IPv4, p.IPv6, p.IPv4)
	}
	return st, nil
}

// decodeState parses and checks a state file: every address inside the
// node's prefixes and used once, every ID and port valid, no host port
// published twice.
func decodeState(data []byte) (*state, error) {
	var st state
	if err := decodeStrict(data, &st, maxStateFile); err != nil {
		return nil, err
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("version %d, want %d", st.Version, stateVersion)
	}
	if err := st.Prefixes.validate(); err != nil {
		return nil, err
	}
	if st.Containers == nil {
		st.Containers = map[string]*containerState{}
	}
	seen := map[int]string{}
	hostPorts := map[portKey]string{}
	for id, c := range st.Containers {
		if err := validateID(id); err != nil {
			return nil, err
		}
		if c == nil {
			return nil, fmt.Errorf("container %s: no record", id)
		}
		i, ok := st.Prefixes.hostIndex4(c.IPv4)
		if !ok {
			return nil, fmt.Errorf("container %s: IPv4 address %s is not a container address of %s", id, c.IPv4, st.Prefixes.IPv4)
		}
		if v6, _ := st.Prefixes.addrs(i); c.IPv6 != v6 {
			return nil, fmt.Errorf("container %s: IPv6 address %s does not match its IPv4 address %s (want %s)", id, c.IPv6, c.IPv4, v6)
		}
		if other, dup := seen[i]; dup {
			return nil, fmt.Errorf("containers %s and %s both have %s", other, id, c.IPv4)
		}
		seen[i] = id
		if err := validateNetNSPath(c.NetNS); err != nil {
			return nil, fmt.Errorf("container %s: %w", id, err)
		}
		if err := validatePorts(c.Ports); err != nil {
			return nil, fmt.Errorf("container %s: %w", id, err)
		}
		for _, p := range c.Ports {
			k := portKey{p.HostPort, p.Protocol}
			if other, dup := hostPorts[k]; dup {
				return nil, fmt.Errorf("containers %s and %s both publish host port %d/%s", other, id, p.HostPort, p.Protocol)
			}
			hostPorts[k] = id
		}
	}
	return &st, nil
}

// save replaces the state file by a rename, so a process that dies leaves
// the old or the new assignments, never a mix. It does not fsync: what the
// file describes does not outlive the machine's boot (loadState drops a
// file of an earlier boot), and the page cache outlives the process. The
// two fsyncs cost a median 4.5 ms of each Attach and Detach on the
// development machine (7.2 ms with them, 2.7 ms without, 20 attaches).
func (st *state) save(dir string) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode networking state: %w", err)
	}
	if err := fsutil.ReplaceFile(filepath.Join(dir, StateFile), data, 0o600); err != nil {
		return fmt.Errorf("save networking state: %w", err)
	}
	return nil
}

// allocate returns the lowest free container address pair.
func (st *state) allocate() (v6, v4 netip.Addr, err error) {
	used := make(map[netip.Addr]bool, len(st.Containers))
	for _, c := range st.Containers {
		used[c.IPv4] = true
	}
	for i := 2; i <= st.Prefixes.hosts()-2; i++ {
		v6, v4 := st.Prefixes.addrs(i)
		if !used[v4] {
			return v6, v4, nil
		}
	}
	return netip.Addr{}, netip.Addr{}, fmt.Errorf("%w: all %d container addresses of %s are in use", ErrExhausted, st.Prefixes.hosts()-3, st.Prefixes.IPv4)
}

type portKey struct {
	hostPort int
	proto    Protocol
}

// hostPortHolder returns the container other than id that publishes k.
func (st *state) hostPortHolder(k portKey, id string) (string, bool) {
	for other, c := range st.Containers {
		if other == id {
			continue
		}
		for _, p := range c.Ports {
			if (portKey{p.HostPort, p.Protocol}) == k {
				return other, true
			}
		}
	}
	return "", false
}

// validateID checks a container ID. The ID is a key of the state file and
// is hashed into the veth's name, so any printable ASCII would do; the
// runtime's rule is narrower and applies first.
func validateID(id string) error {
	if id == "" || len(id) > maxIDLength {
		return fmt.Errorf("%w: container id %q: want 1-%d characters", ErrBadContainer, id, maxIDLength)
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' || id[i] == '"' || id[i] == '\\' {
			return fmt.Errorf("%w: container id %q: only printable ASCII without spaces, quotes or backslashes", ErrBadContainer, id)
		}
	}
	return nil
}

func validateNetNSPath(p string) error {
	if p == "" || !filepath.IsAbs(p) || strings.ContainsRune(p, 0) {
		return fmt.Errorf("%w: network namespace path %q: want an absolute path such as /proc/1234/ns/net or /run/netns/NAME", ErrBadContainer, p)
	}
	return nil
}

// validatePorts checks ports and sets empty protocols to TCP.
func validatePorts(ports []Port) error {
	seen := map[portKey]int{}
	for i := range ports {
		p := &ports[i]
		switch p.Protocol {
		case "":
			p.Protocol = TCP
		case TCP, UDP:
		default:
			return fmt.Errorf("%w: ports[%d]: protocol %q: want TCP or UDP", ErrBadContainer, i, p.Protocol)
		}
		if p.Port < 1 || p.Port > 65535 {
			return fmt.Errorf("%w: ports[%d]: port %d: want 1-65535", ErrBadContainer, i, p.Port)
		}
		if p.HostPort < 1 || p.HostPort > 65535 {
			return fmt.Errorf("%w: ports[%d]: host port %d: want 1-65535", ErrBadContainer, i, p.HostPort)
		}
		k := portKey{p.HostPort, p.Protocol}
		if j, dup := seen[k]; dup {
			return fmt.Errorf("%w: ports[%d] and ports[%d] both publish host port %d/%s", ErrBadContainer, j, i, p.HostPort, p.Protocol)
		}
		seen[k] = i
	}
	return nil
}

func (c *containerState) clone() *containerState {
	d := *c
	d.Ports = slices.Clone(c.Ports)
	return &d
}
