package networking

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DefaultBridge is the name of the node's bridge.
const DefaultBridge = "nexus0"

// ContainerIface is the container's end of its veth pair, inside its
// network namespace.
const ContainerIface = "eth0"

// vethPrefix starts the name of every veth's node end; the rest is a hash
// of the container ID, so the name is found again from the ID alone.
const vethPrefix = "nx"

// Config describes a node's container networking.
type Config struct {
	// Prefixes are the node's own prefixes (IPAM.AllocateNode).
	Prefixes NodePrefixes
	// Cluster are the cluster's prefixes (IPAM.Cluster); traffic from a
	// container to an address inside them keeps its source address.
	Cluster ClusterPrefixes
	// DataDir is the agent's data directory; the state file lives there.
	DataDir string
	// NetNSPath is the network namespace that plays the node: empty for
	// the agent's own (the host's), a path such as /run/netns/NAME in tests.
	NetNSPath string
	// Bridge names the node's bridge (DefaultBridge when empty).
	Bridge string
	// MTU of the bridge and the veths; 0 takes the MTU of the link of the
	// node's default route (1500 without one), so that containers do not
	// send packets the node's uplink must fragment or drop.
	MTU int
	// Mode is how containers reach other nodes' containers (SetPeers):
	// ModeAuto when empty. In ModeVXLAN a zero MTU is the uplink's less
	// the tunnel's 70 bytes, so that containers' packets fit the tunnel
	// without fragmentation or path MTU discovery.
	Mode Mode
	// Logger gets what Repair changed; slog.Default() when nil.
	Logger *slog.Logger
}

// ContainerRef names a container to attach.
type ContainerRef struct {
	// ID is the runtime's container ID.
	ID string
	// NetNSPath is the container's network namespace: /proc/PID/ns/net of
	// its process (or of its init stage before the process runs), or a
	// bind mount of it. It must stay valid while Attach or Repair runs.
	NetNSPath string
	// Ports are the ports to publish on the node.
	Ports []Port
}

// Attachment is a container's place on the node network.
type Attachment struct {
	ID string
	// IPv6 and IPv4 are the container's addresses on eth0.
	IPv6, IPv4 netip.Addr
	// Gateway6 and Gateway4 are the bridge's addresses, the container's
	// default routes.
	Gateway6, Gateway4 netip.Addr
	// HostVeth is the name of the veth's node end.
	HostVeth string
	// Ports are the published ports (protocols filled in).
	Ports []Port
}

// Addresses returns the container's addresses as an Instance's status
// lists them: IPv6 first.
func (a Attachment) Addresses() []string {
	return []string{a.IPv6.String(), a.IPv4.String()}
}

// Node is the container networking of one node. Its methods may be called
// concurrently.
type Node struct {
	cfg    Config
	log    *slog.Logger
	ns     netns.NsHandle
	nl     *netlink.Handle
	nsPath string

	mu  sync.Mutex
	st  *state
	mtu int

	peersMu sync.Mutex        // serialises SetPeers
	paths   map[string]string // by peer name: how SetPeers last reached it
}

// New checks cfg, opens the node's network namespace and loads the state
// file. It changes nothing on the network; call Setup (or Repair) next.
func New(cfg Config) (*Node, error) {
	if err := cfg.Prefixes.validate(); err != nil {
		return nil, fmt.Errorf("networking config: %w", err)
	}
	if err := cfg.Cluster.complete(); err != nil {
		return nil, fmt.Errorf("networking config: %w", err)
	}
	if !cfg.Cluster.IPv6.Contains(cfg.Prefixes.IPv6.Addr()) || !cfg.Cluster.IPv4.Contains(cfg.Prefixes.IPv4.Addr()) {
		return nil, fmt.Errorf("networking config: %w: node prefixes %s and %s are not inside the cluster's %s and %s",
			ErrBadPrefix, cfg.Prefixes.IPv6, cfg.Prefixes.IPv4, cfg.Cluster.IPv6, cfg.Cluster.IPv4)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("networking config: DataDir is empty: give the agent's data directory")
	}
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if len(cfg.Bridge) > unix.IFNAMSIZ-1 || cfg.Bridge == "." || cfg.Bridge == ".." || strings.ContainsAny(cfg.Bridge, "/: \t\n") {
		return nil, fmt.Errorf("networking config: bridge name %q: want at most %d bytes without '/', ':' or spaces, such as %s", cfg.Bridge, unix.IFNAMSIZ-1, DefaultBridge)
	}
	if cfg.MTU != 0 && (cfg.MTU < 1280 || cfg.MTU > 65535) {
		return nil, fmt.Errorf("networking config: MTU %d: want 1280 (IPv6's minimum) to 65535, or 0 to use the uplink's", cfg.MTU)
	}
	mode, err := ParseMode(string(cfg.Mode))
	if err != nil {
		return nil, fmt.Errorf("networking config: %w", err)
	}
	cfg.Mode = mode
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Node{cfg: cfg, log: cfg.Logger, nsPath: cfg.NetNSPath}
	if n.nsPath == "" {
		n.nsPath = "/proc/self/ns/net"
	}
	if n.ns, err = netns.GetFromPath(n.nsPath); err != nil {
		return nil, fmt.Errorf("open the node's network namespace %s: %w", n.nsPath, err)
	}
	if n.nl, err = netlink.NewHandleAt(n.ns, unix.NETLINK_ROUTE, unix.NETLINK_INET_DIAG, unix.NETLINK_NETFILTER); err != nil {
		n.ns.Close()
		return nil, fmt.Errorf("netlink in the node's network namespace %s: %w", n.nsPath, err)
	}
	if n.st, err = loadState(cfg.DataDir, cfg.Prefixes); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// Close releases the namespace and netlink handles. It leaves the network
// as it is: containers keep running and a new Node takes over with Repair
// (and SetPeers, which finds the routes to peers in place; SetPeers(ctx,
// nil) is what removes them).
func (n *Node) Close() error {
	if n.nl != nil {
		n.nl.Close()
	}
	return n.ns.Close()
}

// Setup creates what the node needs before any container: the bridge with
// the gateway addresses, IPv4 and IPv6 forwarding, route_localnet on the
// bridge (for 127.0.0.1:hostPort), and the nftables table. It is
// idempotent: it repairs whatever is missing and leaves what is right.
func (n *Node) Setup(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.setupLocked()
}

func (n *Node) setupLocked() error {
	if n.mtu == 0 {
		n.mtu = n.cfg.MTU
		if n.mtu == 0 {
			n.mtu = n.uplinkMTU()
			if n.cfg.Mode == ModeVXLAN {
				n.mtu = max(n.mtu-vxlanOverhead6, 1280)
			}
		}
	}
	br, err := n.ensureBridge()
	if err != nil {
		return err
	}
	if err := n.checkOverlap(br.Attrs().Index); err != nil {
		return err
	}
	if err := n.routeServiceRanges(br); err != nil {
		return err
	}
	if err := setSysctls(n.ns, []sysctl{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv6/conf/all/forwarding", "1"},
		{"net/ipv4/conf/" + n.cfg.Bridge + "/route_localnet", "1"},
	}); err != nil {
		return fmt.Errorf("set up node networking: %w", err)
	}
	return n.applyRules(n.st)
}

// routeServiceRanges routes the cluster's service ranges to the bridge.
// A virtual IP has no host behind it, but the node's own processes need a
// route to one before the nftables data path's DNAT can rewrite it (nat
// output runs after the route lookup; without a route the connect fails
// with "network is unreachable"), and through the bridge a virtual IP no
// Service has stays on the node instead of leaving by the default route.
// The kernel drops IPv6 routes through a link without carrier, as a bridge
// is until its first port is up, so every attach makes the routes again:
// on a node with no container yet, the node's own processes reach IPv6
// virtual IPs in the nftables data path only through a default route.
func (n *Node) routeServiceRanges(br netlink.Link) error {
	v6, v4 := n.cfg.Cluster.ServiceRanges()
	for _, p := range []netip.Prefix{v6, v4} {
		if !p.IsValid() {
			continue
		}
		r := &netlink.Route{LinkIndex: br.Attrs().Index, Dst: prefixIPNet(p), Scope: netlink.SCOPE_LINK}
		if err := n.nl.RouteReplace(r); err != nil {
			return fmt.Errorf("route the service range %s to %s: %w", p, n.cfg.Bridge, err)
		}
	}
	return nil
}

// Attach connects a container: it assigns its addresses (or keeps those it
// has), creates its veth pair with eth0 inside ref.NetNSPath, sets the
// addresses and default routes there, and publishes ref.Ports. Call it after
// the runtime created the container's network namespace and before the
// container's process runs, so the process starts with its network. The
// assignment is saved before any link exists, so a crash in between leaves
// state that Repair completes or removes.
//
// A host port that another container publishes, or that a process of the
// node listens on, is refused with a *PortInUseError naming the holder;
// nothing is changed then. Attaching an attached container again is not an
// error: it repairs its link and replaces its published ports with ref's.
func (n *Node) Attach(ctx context.Context, ref ContainerRef) (Attachment, error) {
	if err := ctx.Err(); err != nil {
		return Attachment{}, err
	}
	ref.Ports = slices.Clone(ref.Ports)
	if err := validateRef(ref); err != nil {
		return Attachment{}, err
	}
	cns, err := netns.GetFromPath(ref.NetNSPath)
	if err != nil {
		return Attachment{}, fmt.Errorf("attach container %s: open its network namespace: %w", ref.ID, err)
	}
	defer cns.Close()

	c, fresh, err := n.assign(ref)
	if err != nil {
		return Attachment{}, err
	}
	a := n.attachment(ref.ID, c)
	if err := n.ensureLink(a, cns); err != nil {
		if fresh {
			// Take back what this call created, so the next try starts clean.
			if derr := n.Detach(context.WithoutCancel(ctx), ref.ID); derr != nil {
				err = errors.Join(err, derr)
			}
		}
		return Attachment{}, fmt.Errorf("attach container %s: %w", ref.ID, err)
	}
	return a, nil
}

// assign records ref in the state (new addresses, or the container's own
// if it has some) after checking its host ports, saves the state and
// applies the rules. fresh says whether the container was new.
func (n *Node) assign(ref ContainerRef) (*containerState, bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	old := n.st.Containers[ref.ID]
	for _, p := range ref.Ports {
		k := portKey{p.HostPort, p.Protocol}
		if holder, ok := n.st.hostPortHolder(k, ref.ID); ok {
			return nil, false, &PortInUseError{Port: p.HostPort, Protocol: p.Protocol, Holder: "container " + holder}
		}
		if old != nil && slices.ContainsFunc(old.Ports, func(q Port) bool { return q.HostPort == p.HostPort && q.Protocol == p.Protocol }) {
			continue // its own rule; the kernel shows no listener for it
		}
		holder, err := n.socketHolder(p.Protocol, p.HostPort)
		if err != nil {
			return nil, false, fmt.Errorf("attach container %s: check host port %d/%s: %w", ref.ID, p.HostPort, p.Protocol, err)
		}
		if holder != "" {
			return nil, false, &PortInUseError{Port: p.HostPort, Protocol: p.Protocol, Holder: holder}
		}
	}
	next := &state{Version: n.st.Version, Prefixes: n.st.Prefixes, Containers: maps.Clone(n.st.Containers)}
	var c *containerState
	if old != nil {
		c = old.clone()
	} else {
		v6, v4, err := n.st.allocate()
		if err != nil {
			return nil, false, fmt.Errorf("attach container %s: %w", ref.ID, err)
		}
		c = &containerState{IPv6: v6, IPv4: v4}
	}
	c.NetNS, c.Ports = ref.NetNSPath, ref.Ports
	next.Containers[ref.ID] = c
	if old != nil && old.NetNS == c.NetNS && slices.Equal(old.Ports, c.Ports) {
		return c, false, nil
	}
	if err := next.save(n.cfg.DataDir); err != nil {
		return nil, false, fmt.Errorf("attach container %s: %w", ref.ID, err)
	}
	// The table changes only with the published ports (ruleset), as in
	// Detach: a new container that publishes none, as most do, leaves it
	// as it is (replacing it took 14-15 ms of each attach).
	var had []Port
	if old != nil {
		had = old.Ports
	}
	if !slices.Equal(had, c.Ports) {
		if err := n.applyRules(next); err != nil {
			// The rules still match n.st; put the file back to it.
			return nil, false, errors.Join(fmt.Errorf("attach container %s: %w", ref.ID, err), n.st.save(n.cfg.DataDir))
		}
	}
	n.st = next
	return c, old == nil, nil
}

func validateRef(ref ContainerRef) error {
	if err := validateID(ref.ID); err != nil {
		return err
	}
	if err := validateNetNSPath(ref.NetNSPath); err != nil {
		return fmt.Errorf("container %s: %w", ref.ID, err)
	}
	if err := validatePorts(ref.Ports); err != nil {
		return fmt.Errorf("container %s: %w", ref.ID, err)
	}
	return nil
}

func (n *Node) attachment(id string, c *containerState) Attachment {
	g6, g4 := n.cfg.Prefixes.Gateways()
	return Attachment{
		ID: id, IPv6: c.IPv6, IPv4: c.IPv4, Gateway6: g6, Gateway4: g4,
		HostVeth: vethName(id), Ports: slices.Clone(c.Ports),
	}
}

// Detach disconnects a container: it deletes its veth pair (eth0 inside
// the container goes with it), removes its published ports and releases
// its addresses for the next container. Call it when the container is
// removed (after its process exited). Detaching a container that is not
// attached does nothing, so a retry after a failure is safe.
func (n *Node) Detach(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validateID(id); err != nil {
		return err
	}
	// The link goes first: once the address is released another container
	// may get it, and must not find it still in use.
	if err := n.deleteLink(vethName(id)); err != nil {
		return fmt.Errorf("detach container %s: %w", id, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	old, ok := n.st.Containers[id]
	if !ok {
		return nil
	}
	next := &state{Version: n.st.Version, Prefixes: n.st.Prefixes, Containers: maps.Clone(n.st.Containers)}
	delete(next.Containers, id)
	if len(old.Ports) > 0 {
		if err := n.applyRules(next); err != nil {
			return fmt.Errorf("detach container %s: %w", id, err)
		}
	}
	if err := next.save(n.cfg.DataDir); err != nil {
		return fmt.Errorf("detach container %s: %w", id, err)
	}
	n.st = next
	return nil
}

// Repair brings the node's networking back to what it should be after an
// agent restart: it runs Setup (a deleted bridge or nftables table comes
// back), re-attaches every container in keep (the agent's running
// containers, with their namespaces and ports) keeping the addresses they
// had, re-creating a veth that is gone, and detaches every container the
// state file knows that is not in keep. Veths on the bridge that belong to
// no container are deleted. It returns the kept containers' attachments;
// a container that cannot be repaired is left out and its error joined
// into the returned error, and the others are repaired all the same.
func (n *Node) Repair(ctx context.Context, keep []ContainerRef) ([]Attachment, error) {
	if err := n.Setup(ctx); err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, ref := range keep {
		want[ref.ID] = true
	}
	n.mu.Lock()
	var gone []string
	for id := range n.st.Containers {
		if !want[id] {
			gone = append(gone, id)
		}
	}
	n.mu.Unlock()
	slices.Sort(gone)
	var errs []error
	for _, id := range gone {
		if err := n.Detach(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		n.log.Info("networking: detached a container that is gone", "container", id)
	}
	var out []Attachment
	for _, ref := range keep {
		a, err := n.Attach(ctx, ref)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, a)
	}
	if err := n.removeStrayVeths(want); err != nil {
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// Attachments returns the attached containers, by ID.
func (n *Node) Attachments() map[string]Attachment {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]Attachment, len(n.st.Containers))
	for id, c := range n.st.Containers {
		out[id] = n.attachment(id, c)
	}
	return out
}

// vethName is the node end's name: "nx" and 12 hex digits of the ID's
// SHA-256, 14 bytes, under IFNAMSIZ whatever the ID's length.
func vethName(id string) string {
	h := sha256.Sum256([]byte(id))
	return vethPrefix + hex.EncodeToString(h[:6])
}
