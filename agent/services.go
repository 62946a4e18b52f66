package agent

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/networking/lb"
)

// ServiceNetwork is implemented by a Network that also serves Services
// on the node (agent/embed's, over the eBPF or nftables data path and the
// cluster DNS): the agent hands it the table of frontends and backends,
// and the Services with their Endpoints for DNS, whenever they change.
type ServiceNetwork interface {
	// SetServices makes the node's data path serve t and its DNS answer
	// for svcs. An error leaves the last good state in place; the next
	// change or resync tries again.
	SetServices(ctx context.Context, t lb.Table, svcs []ServiceView) error
	// ServiceMode names the data path ("ebpf" or "nftables"), for the
	// Node's status.
	ServiceMode() string
	// ResolvConf is the /etc/resolv.conf of a container in namespace ns
	// (nil: the container keeps its image's).
	ResolvConf(ns string) []byte
}

// ServiceView is a Service and its Endpoints (nil until the endpoints
// controller has written them).
type ServiceView struct {
	Service   *types.Service
	Endpoints *types.Endpoints
}

// serviceResync is how often the services are programmed again without
// a change: a map entry or rule someone removed comes back within it.
const serviceResync = 30 * time.Second

// serviceWatch follows every Service and Endpoints in the cluster and
// programs the node's ServiceNetwork with them.
type serviceWatch struct {
	a    *Agent
	kick chan struct{}

	mu        sync.Mutex
	services  map[string]*types.Service   // by namespace/name
	endpoints map[string]*types.Endpoints // by namespace/name
}

func newServiceWatch(a *Agent) *serviceWatch {
	return &serviceWatch{a: a, kick: make(chan struct{}, 1),
		services: map[string]*types.Service{}, endpoints: map[string]*types.Endpoints{}}
}

// run follows Services and Endpoints and programs sn until ctx ends.
func (w *serviceWatch) run(ctx context.Context, sn ServiceNetwork) {
	var wg sync.WaitGroup
	defer wg.Wait()
	svcRes, _ := types.LookupResource("services")
	epRes, _ := types.LookupResource("endpoints")
	wg.Go(func() { w.follow(ctx, svcRes) })
	wg.Go(func() { w.follow(ctx, epRes) })
	w.program(ctx, sn)
}

// follow keeps one kind's objects until ctx ends (see followAlways):
// the data path keeps serving what it had while the server is away.
func (w *serviceWatch) follow(ctx context.Context, res *types.Resource) {
	w.a.followAlways(ctx, res, func(objs []types.Object) {
		w.mu.Lock()
		w.replace(res, objs)
		w.mu.Unlock()
		w.changed()
	}, func(ev client.Event) {
		w.mu.Lock()
		w.apply(ev)
		w.mu.Unlock()
		w.changed()
	})
}

func (w *serviceWatch) replace(res *types.Resource, objs []types.Object) {
	if res.Plural == "services" {
		w.services = map[string]*types.Service{}
	} else {
		w.endpoints = map[string]*types.Endpoints{}
	}
	for _, o := range objs {
		w.apply(client.Event{Type: client.Added, Object: o})
	}
}

func (w *serviceWatch) apply(ev client.Event) {
	switch o := ev.Object.(type) {
	case *types.Service:
		key := o.Namespace + "/" + o.Name
		if ev.Type == client.Deleted {
			delete(w.services, key)
		} else {
			w.services[key] = o
		}
	case *types.Endpoints:
		key := o.Namespace + "/" + o.Name
		if ev.Type == client.Deleted {
			delete(w.endpoints, key)
		} else {
			w.endpoints[key] = o
		}
	}
}

func (w *serviceWatch) changed() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// views returns the Services with their Endpoints, sorted by key.
func (w *serviceWatch) views() []ServiceView {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]ServiceView, 0, len(w.services))
	for key, s := range w.services {
		out = append(out, ServiceView{Service: s, Endpoints: w.endpoints[key]})
	}
	slices.SortFunc(out, func(a, b ServiceView) int {
		return compareKeys(a.Service.Namespace, a.Service.Name, b.Service.Namespace, b.Service.Name)
	})
	return out
}

func compareKeys(ns1, n1, ns2, n2 string) int {
	return cmp.Or(strings.Compare(ns1, ns2), strings.Compare(n1, n2))
}

// program hands the table to sn on every change (changes that come
// together within a few milliseconds are programmed once) and every
// serviceResync, until ctx ends.
func (w *serviceWatch) program(ctx context.Context, sn ServiceNetwork) {
	t := time.NewTicker(serviceResync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
			// An endpoints update often follows its service's, and a scale
			// changes several instances: take them in one go.
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		case <-t.C:
		}
		views := w.views()
		table := serviceTable(views, nodeIPs())
		if err := sn.SetServices(ctx, table, views); err != nil && ctx.Err() == nil {
			w.a.log.Warn("program the node's services", "err", err, "frontends", len(table))
		}
	}
}

// nodeIPs are the node's own addresses that node ports are served on.
func nodeIPs() []netip.Addr {
	var out []netip.Addr
	for _, a := range nodeAddresses() {
		if a.Type != "InternalIP" {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// serviceTable turns Services and their Endpoints into the node's
// frontends: each port on each virtual IP, and each node port on each of
// the node's addresses (nodeIPs), with the ready backends of the
// frontend's family on the port's target port. A headless Service has
// no frontend (its name resolves to the instances themselves).
func serviceTable(views []ServiceView, nodeIPs []netip.Addr) lb.Table {
	var t lb.Table
	for _, v := range views {
		s := v.Service
		if s.Spec.Headless {
			continue
		}
		key := s.Namespace + "/" + s.Name
		var affinity time.Duration
		if s.Spec.SessionAffinity == types.SessionAffinityClientIP {
			secs := int32(types.DefaultSessionAffinityTimeoutSeconds)
			if t := s.Spec.SessionAffinityTimeoutSeconds; t != nil {
				secs = *t
			}
			affinity = time.Duration(secs) * time.Second
		}
		for _, p := range s.Spec.Ports {
			proto := LBProtocol(p.Protocol)
			v4, v6 := backends(v.Endpoints, p)
			add := func(ip netip.Addr, port int32, nodePort bool) {
				if port <= 0 || port > 65535 {
					return
				}
				b := v6
				if ip.Is4() {
					b = v4
				}
				t = append(t, lb.Entry{Frontend: lb.Frontend{Addr: netip.AddrPortFrom(ip, uint16(port)), Proto: proto},
					Service: key, Backends: b, Affinity: affinity, NodePort: nodePort})
			}
			for _, vip := range s.Spec.VirtualIPs {
				if ip, err := netip.ParseAddr(vip); err == nil {
					add(ip.Unmap(), p.Port, false)
				}
			}
			if p.NodePort != 0 {
				for _, ip := range nodeIPs {
					add(ip, p.NodePort, true)
				}
			}
		}
	}
	return dedupeFrontends(t)
}

// backends are the ready backends of service port p in ep, IPv4 and
// IPv6 apart, on the port's target port (found by name in ep's ports,
// else the port's targetPort, else its port).
func backends(ep *types.Endpoints, p types.ServicePort) (v4, v6 []netip.AddrPort) {
	if ep == nil {
		return nil, nil
	}
	target := p.TargetPort
	for _, epp := range ep.Ports {
		if epp.Name == p.Name && epp.Protocol.OrTCP() == p.Protocol.OrTCP() {
			target = epp.Port
			break
		}
	}
	if target == 0 {
		target = p.Port
	}
	if target <= 0 || target > 65535 {
		return nil, nil
	}
	for _, b := range ep.Backends {
		if !b.Ready {
			continue
		}
		for _, s := range b.Addresses {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			ap := netip.AddrPortFrom(ip.Unmap(), uint16(target))
			if ap.Addr().Is4() {
				v4 = append(v4, ap)
			} else {
				v6 = append(v6, ap)
			}
		}
	}
	return v4, v6
}

// dedupeFrontends keeps the first entry of a frontend two Services claim
// (the API server keeps virtual IPs and node ports unique, so only a
// node address that is also another's, or a stale view, could do it).
func dedupeFrontends(t lb.Table) lb.Table {
	seen := make(map[lb.Frontend]bool, len(t))
	out := t[:0]
	for _, e := range t {
		if seen[e.Frontend] {
			continue
		}
		seen[e.Frontend] = true
		out = append(out, e)
	}
	return out
}

// LBProtocol is a port's protocol as the data path numbers it (TCP when
// empty).
func LBProtocol(p types.Protocol) lb.Protocol {
	if p == types.UDP {
		return lb.UDP
	}
	return lb.TCP
}
