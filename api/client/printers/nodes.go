package printers

import (
	"cmp"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"nexus.dev/nexus/api/types"
)

// Nodes writes the table of `nexus nodes`: each node's state
// (Ready/NotReady/Unknown, SchedulingDisabled when cordoned), roles
// (node-role.nexus.dev/<role> labels; every node runs an agent), its
// addresses, what the instances bound to it request against its
// allocatable CPU and memory, how many run there, its Nexus and kernel
// versions and when its certificate expires; with the Wide format also
// how it balances Service traffic (ebpf or nftables) and its OS.
func Nodes(w io.Writer, nodes []*types.Node, insts []*types.Instance, o Options) error {
	now := time.Now()
	if o.Now != nil {
		now = o.Now()
	}
	type alloc struct {
		cpu       types.MilliCPU
		mem       types.Bytes
		instances int
	}
	allocs := map[string]*alloc{}
	for _, n := range nodes {
		allocs[n.Name] = &alloc{}
	}
	for _, i := range insts {
		a := allocs[i.Spec.NodeName]
		switch i.Status.Phase {
		case types.PhaseSucceeded, types.PhaseFailed, types.PhaseStopped:
			continue
		}
		if a == nil {
			continue // not bound, or bound to a node that is gone
		}
		r := i.Spec.Template.Resources.Requests
		a.cpu += r.CPU
		a.mem += r.Memory
		a.instances++
	}
	nodes = slices.Clone(nodes)
	slices.SortFunc(nodes, func(a, b *types.Node) int { return cmp.Compare(a.Name, b.Name) })
	header := []string{"NAME", "STATUS", "ROLES", "ADDRESSES", "CPU(REQ/ALLOC)", "MEMORY(REQ/ALLOC)", "INSTANCES", "VERSION", "KERNEL", "CERT-EXPIRES", "AGE"}
	wide := o.Format == Wide
	if wide {
		header = append(header, "SERVICE-DATAPATH", "OS")
	}
	t := &table{header: header}
	for _, n := range nodes {
		a := allocs[n.Name]
		capacity := n.Status.Allocatable
		if capacity == (types.ResourceList{}) {
			capacity = n.Status.Capacity
		}
		row := []string{n.Name, nodeStatus(n), nodeRolesOrAgent(n), nodeAddresses(n),
			used(a.cpu.String(), capacity.CPU.String(), int64(a.cpu), int64(capacity.CPU)),
			used(a.mem.String(), capacity.Memory.String(), int64(a.mem), int64(capacity.Memory)),
			strconv.Itoa(a.instances), orNone(n.Status.Versions.Nexus), orNone(n.Status.Versions.Kernel),
			certExpiry(n.Status.CertificateExpiry, now), Age(n.CreationTimestamp, now)}
		if wide {
			row = append(row, orNone(n.Status.ServiceDataPath), orNone(n.Status.Versions.OS))
		}
		t.add(row)
	}
	return t.flush(w, o.NoHeaders)
}

// nodeRolesOrAgent is a node's roles from its labels, or "agent": every
// node runs one.
func nodeRolesOrAgent(n *types.Node) string {
	if r := nodeRoles(n); r != none {
		return r
	}
	return "agent"
}

// nodeAddresses lists a node's IP addresses, internal first.
func nodeAddresses(n *types.Node) string {
	var out []string
	for _, typ := range []string{"InternalIP", "ExternalIP"} {
		for _, a := range n.Status.Addresses {
			if a.Type == typ {
				out = append(out, a.Address)
			}
		}
	}
	if len(out) == 0 {
		return nodeAddress(n)
	}
	return strings.Join(out, ",")
}

// used writes "requested/allocatable (percent)", or the request alone when
// the node reports no capacity.
func used(req, capacity string, r, c int64) string {
	if c <= 0 {
		return req + "/" + none
	}
	return req + "/" + capacity + " (" + percent(r, c) + ")"
}
