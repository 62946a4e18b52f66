package embed

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"nexus.dev/nexus/agent"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/ebpf"
	"nexus.dev/nexus/networking"
	"nexus.dev/nexus/networking/dns"
	"nexus.dev/nexus/networking/lb"
)

// serviceNetwork is the node's networking with Services: the containers'
// networking (nodeNetwork), the service data path (eBPF connect-time
// balancing, or the nftables fallback), the nftables translation of
// node-port packets from outside (beside eBPF, which only sees the
// node's own sockets), and the cluster DNS on the bridge's addresses.
type serviceNetwork struct {
	nodeNetwork
	log *slog.Logger
	dp  lb.DataPath
	// ext translates node-port packets from outside when dp is eBPF; nil
	// when dp is nftables, which does that itself.
	ext lb.DataPath
	// bpf is dp when it is eBPF: the containers' network namespaces must
	// be allowed in it.
	bpf *ebpf.DataPath
	dns *dns.Server
	// nameservers are the DNS server's addresses, for the containers'
	// resolv.conf.
	nameservers []netip.Addr

	mu      sync.Mutex
	cookies map[string]uint64 // network namespace cookie by container ID
}

var (
	_ agent.ServiceNetwork = (*serviceNetwork)(nil)
	_ agent.PeerNetwork    = (*serviceNetwork)(nil)
)

// openServices opens the service data path the choice asks for and the
// cluster DNS on the bridge's addresses of prefixes. With lb.Auto, eBPF
// when its hooks load and attach here, else nftables (the reason is
// logged); a forced eBPF that cannot load is an error.
func openServices(n *networking.Node, prefixes networking.NodePrefixes, choice lb.Choice, log *slog.Logger) (_ *serviceNetwork, err error) {
	s := &serviceNetwork{nodeNetwork: nodeNetwork{n}, log: log, cookies: map[string]uint64{}}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	switch choice {
	case lb.Nftables:
	case lb.EBPF, lb.Auto, "":
		bpf, err := ebpf.New(ebpf.Config{})
		if err != nil {
			if choice == lb.EBPF {
				return nil, fmt.Errorf("the eBPF service data path (--service-datapath ebpf): %w; use --service-datapath nftables or auto", err)
			}
			log.Warn("eBPF service data path unavailable: balancing Services with nftables DNAT instead", "reason", err)
			break
		}
		s.bpf, s.dp, s.ext = bpf, bpf, n.ServiceNAT(true)
		// The node's own processes reach Services too.
		if err := s.allow("", "/proc/self/ns/net"); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("service data path %q: want auto, ebpf or nftables", choice)
	}
	if s.dp == nil {
		s.dp = n.ServiceNAT(false)
	}
	v6, v4 := prefixes.Gateways()
	var listen []netip.AddrPort
	for _, ip := range []netip.Addr{v6, v4} {
		if ip.IsValid() {
			listen = append(listen, netip.AddrPortFrom(ip, 53))
			s.nameservers = append(s.nameservers, ip)
		}
	}
	if s.dns, err = dns.New(dns.Config{Listen: listen, Log: log.With("component", "dns")}); err != nil {
		return nil, fmt.Errorf("cluster DNS: %w", err)
	}
	if err := s.dns.Start(); err != nil {
		return nil, fmt.Errorf("cluster DNS on %v: %w", listen, err)
	}
	log.Info("services", "datapath", s.ServiceMode(), "dns", listen)
	return s, nil
}

// allow lets the eBPF data path balance the sockets of the network
// namespace at path (a container's, by id; "" for the node's own).
func (s *serviceNetwork) allow(id, path string) error {
	if s.bpf == nil {
		return nil
	}
	cookie, err := ebpf.NetnsCookie(path)
	if err != nil {
		return fmt.Errorf("services for container %s: %w", cmp.Or(id, "(the node)"), err)
	}
	if err := s.bpf.AllowNetns(cookie); err != nil {
		return fmt.Errorf("services for container %s: %w", cmp.Or(id, "(the node)"), err)
	}
	s.mu.Lock()
	s.cookies[id] = cookie
	s.mu.Unlock()
	return nil
}

func (s *serviceNetwork) forget(id string) {
	if s.bpf == nil {
		return
	}
	s.mu.Lock()
	cookie, ok := s.cookies[id]
	delete(s.cookies, id)
	s.mu.Unlock()
	if ok {
		if err := s.bpf.ForgetNetns(cookie); err != nil {
			s.log.Warn("forget a container's network namespace in the eBPF data path", "container", id, "err", err)
		}
	}
}

// Attach connects the container and lets it reach Services.
func (s *serviceNetwork) Attach(ctx context.Context, id, netns string, ports []types.Port) ([]string, error) {
	addrs, err := s.nodeNetwork.Attach(ctx, id, netns, ports)
	if err != nil {
		return nil, err
	}
	if err := s.allow(id, netns); err != nil {
		_ = s.nodeNetwork.Detach(ctx, id)
		return nil, err
	}
	return addrs, nil
}

// Detach undoes Attach.
func (s *serviceNetwork) Detach(ctx context.Context, id string) error {
	s.forget(id)
	return s.nodeNetwork.Detach(ctx, id)
}

// Repair repairs the running containers' networking and lets them reach
// Services again (a new agent has new eBPF maps).
func (s *serviceNetwork) Repair(ctx context.Context, running map[string]string) error {
	err := s.nodeNetwork.Repair(ctx, running)
	for id, netns := range running {
		if aerr := s.allow(id, netns); aerr != nil {
			err = errors.Join(err, aerr)
		}
	}
	return err
}

// SetServices programs the data path(s) and the DNS.
func (s *serviceNetwork) SetServices(_ context.Context, t lb.Table, views []agent.ServiceView) error {
	err := s.dp.Sync(t)
	if s.ext != nil {
		err = errors.Join(err, s.ext.Sync(t))
	}
	return errors.Join(err, s.dns.Update(dnsRecords(views)))
}

// ServiceMode is "ebpf" or "nftables".
func (s *serviceNetwork) ServiceMode() string { return s.dp.Mode() }

// ResolvConf points a container at the cluster DNS.
func (s *serviceNetwork) ResolvConf(ns string) []byte {
	return dns.ResolvConf(ns, s.nameservers, dns.DefaultDomain)
}

// close stops the DNS server and removes the data paths' programs, maps
// and rules. What it cannot remove is logged: nftables chains left behind
// would go on balancing to backends nothing updates any more.
func (s *serviceNetwork) close() {
	if s.dns != nil {
		if err := s.dns.Close(); err != nil {
			s.log.Warn("stop the cluster DNS", "err", err)
		}
	}
	for _, dp := range []lb.DataPath{s.ext, s.dp} {
		if dp == nil {
			continue
		}
		if err := dp.Close(); err != nil {
			s.log.Warn("remove the service data path", "mode", dp.Mode(), "err", err)
		}
	}
}

// dnsRecords are the cluster's names from the Services and Endpoints: the
// Services, and every instance behind one (by its name).
func dnsRecords(views []agent.ServiceView) dns.Records {
	var r dns.Records
	seen := map[string]bool{}
	for _, v := range views {
		svc := v.Service
		d := dns.Service{Namespace: svc.Namespace, Name: svc.Name, Headless: svc.Spec.Headless}
		for _, vip := range svc.Spec.VirtualIPs {
			if ip, err := netip.ParseAddr(vip); err == nil {
				d.VirtualIPs = append(d.VirtualIPs, ip.Unmap())
			}
		}
		if svc.Spec.Headless {
			if v.Endpoints != nil {
				for _, p := range v.Endpoints.Ports {
					d.Ports = append(d.Ports, dns.Port{Name: p.Name, Port: uint16(p.Port), Protocol: agent.LBProtocol(p.Protocol)})
				}
			}
		} else {
			for _, p := range svc.Spec.Ports {
				d.Ports = append(d.Ports, dns.Port{Name: p.Name, Port: uint16(p.Port), Protocol: agent.LBProtocol(p.Protocol)})
			}
		}
		if v.Endpoints != nil {
			for _, b := range v.Endpoints.Backends {
				addrs := parseAddrs(b.Addresses)
				if key := svc.Namespace + "/" + b.Instance; !seen[key] && len(addrs) > 0 {
					seen[key] = true
					r.Instances = append(r.Instances, dns.Instance{Namespace: svc.Namespace, Name: b.Instance, Addrs: addrs})
				}
				if svc.Spec.Headless && b.Ready {
					d.Backends = append(d.Backends, dns.Backend{Instance: b.Instance, Addrs: addrs})
				}
			}
		}
		r.Services = append(r.Services, d)
	}
	return r
}

func parseAddrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}
