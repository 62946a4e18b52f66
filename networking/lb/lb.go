// Package lb is the node's view of the services it balances: frontends (a
// service's virtual address and port, or a node port on one of the node's
// own addresses) and the ready backends behind each. The agent builds the
// table from the Services and Endpoints it watches and hands the whole of
// it to the data path on every change; a data path (eBPF connect-time
// balancing in package ebpf, nftables DNAT in package networking) turns it
// into kernel state, updating in place so established connections live on.
package lb

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Protocol is a transport protocol by its IP protocol number.
type Protocol uint8

// The protocols a service port can have.
const (
	TCP Protocol = 6
	UDP Protocol = 17
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	}
	return fmt.Sprintf("protocol %d", uint8(p))
}

// Frontend is where clients send a service's traffic: an address (a
// virtual IP, or one of the node's addresses for a node port), a port and
// a protocol.
type Frontend struct {
	Addr  netip.AddrPort
	Proto Protocol
}

func (f Frontend) String() string { return fmt.Sprintf("%s/%s", f.Addr, f.Proto) }

// Entry is one frontend and the backends it balances over.
type Entry struct {
	Frontend Frontend
	// Service is namespace/name of the Service, for logs and errors.
	Service string
	// Backends are the ready instances' addresses and target ports, of the
	// frontend's address family. None means the service has no ready
	// instance: a connection is refused at once (ECONNREFUSED).
	Backends []netip.AddrPort
	// Affinity, when not zero, sends a client back to the backend it was
	// last given for this long after its last connection (session affinity
	// ClientIP).
	Affinity time.Duration
	// NodePort marks a frontend on one of the node's own addresses that
	// clients outside the cluster reach: besides the connect-time
	// rewrite for the node's own processes and containers, packets that
	// arrive from outside are translated (DNAT, and masquerade when the
	// backend is on another node).
	NodePort bool
}

// Table is every frontend the node serves.
type Table []Entry

// Validate checks what a data path relies on: valid addresses and
// ports, backends of the frontend's family, known protocols and no
// frontend twice.
func (t Table) Validate() error {
	seen := make(map[Frontend]string, len(t))
	for _, e := range t {
		f := e.Frontend
		if !f.Addr.IsValid() || f.Addr.Port() == 0 {
			return fmt.Errorf("service %s: frontend %s: want an address and a port other than 0", e.Service, f)
		}
		if f.Proto != TCP && f.Proto != UDP {
			return fmt.Errorf("service %s: frontend %s: protocol must be TCP or UDP", e.Service, f)
		}
		if other, dup := seen[f]; dup {
			return fmt.Errorf("service %s: frontend %s is also service %s's", e.Service, f, other)
		}
		seen[f] = e.Service
		for _, b := range e.Backends {
			if !b.IsValid() || b.Port() == 0 {
				return fmt.Errorf("service %s: frontend %s: backend %s: want an address and a port other than 0", e.Service, f, b)
			}
			if b.Addr().Unmap().Is4() != f.Addr.Addr().Unmap().Is4() {
				return fmt.Errorf("service %s: frontend %s: backend %s is of the other address family", e.Service, f, b)
			}
		}
		if e.Affinity < 0 {
			return fmt.Errorf("service %s: frontend %s: negative affinity %v", e.Service, f, e.Affinity)
		}
	}
	return nil
}

// Sorted returns a copy of t in a stable order (by frontend), each
// entry's backends sorted too: two tables with the same content compare
// equal after Sorted.
func (t Table) Sorted() Table {
	out := make(Table, len(t))
	for i, e := range t {
		e.Backends = slices.Clone(e.Backends)
		slices.SortFunc(e.Backends, netip.AddrPort.Compare)
		out[i] = e
	}
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(a.Frontend.Addr.Compare(b.Frontend.Addr), cmp.Compare(a.Frontend.Proto, b.Frontend.Proto))
	})
	return out
}

// DataPath programs the kernel so that connections to the table's
// frontends reach their backends.
type DataPath interface {
	// Sync makes the data path serve exactly t, changing only what
	// differs from the last Sync: a frontend or backend that stays keeps
	// its state, so established connections are not dropped.
	Sync(t Table) error
	// Mode names the data path ("ebpf" or "nftables"), as the node reports it.
	Mode() string
	// Close removes everything the data path installed.
	Close() error
}

// Choice is which data path a node uses, as its agent is told.
type Choice string

// The choices: Auto takes eBPF when its hooks load and attach on the
// node, nftables otherwise; EBPF and Nftables force one (a forced eBPF
// that cannot load is an error, not a fallback).
const (
	Auto     Choice = "auto"
	EBPF     Choice = "ebpf"
	Nftables Choice = "nftables"
)

// ParseChoice reads a Choice ("" is Auto).
func ParseChoice(s string) (Choice, error) {
	switch c := Choice(s); c {
	case "":
		return Auto, nil
	case Auto, EBPF, Nftables:
		return c, nil
	}
	return "", fmt.Errorf("service data path %q: want auto, ebpf or nftables", s)
}
