package dns

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"

	"nexus.dev/nexus/networking/lb"
)

// Records is the agent's whole view of the cluster's names, handed to
// Server.Update on every change.
type Records struct {
	Services  []Service
	Instances []Instance
}

// Service is one Service as DNS needs it.
type Service struct {
	Namespace, Name string
	// VirtualIPs are the Service's virtual addresses (none when headless).
	VirtualIPs []netip.Addr
	// Ports are the ports clients connect to: the Service's ports when it
	// has virtual IPs, the Endpoints' (target) ports when it is headless,
	// since then clients connect to the instances themselves. Only named
	// ports get SRV records.
	Ports []Port
	// Headless services answer with their ready backends' addresses.
	Headless bool
	// Backends are the ready instances behind a headless Service; ignored
	// for a Service with virtual IPs.
	Backends []Backend
}

// Port is one port of a Service.
type Port struct {
	Name     string
	Port     uint16
	Protocol lb.Protocol
}

// Backend is one ready instance behind a headless Service.
type Backend struct {
	// Instance is the instance's name, in the Service's namespace.
	Instance string
	Addrs    []netip.Addr
}

// Instance is one instance and its addresses.
type Instance struct {
	Namespace, Name string
	Addrs           []netip.Addr
}

// Time to live of the records the server answers with. Virtual IPs never
// change during a Service's life, but a Service deleted and created again
// gets new ones: 5 s (CoreDNS's default) bounds how long a client may use
// the old. Headless answers and instance names follow instances as they
// turn ready or go, so they live 1 s: answers follow an endpoint change
// within a second. Negative answers live 1 s too (the SOA's minimum), so
// a Service created just after a failed lookup resolves a second later.
const (
	ttlVirtualIP = 5
	ttlInstance  = 1
	ttlNegative  = 1
)

// node is the records of one name. A name with none is an empty
// non-terminal (a parent of names that have records, such as
// <ns>.svc.<domain>): it exists, so it is NODATA rather than NXDOMAIN.
type node struct {
	a, aaaa, srv []dns.RR
	// srvExtra holds the A/AAAA records of the SRV targets, sent in the
	// additional section to save clients a round trip.
	srvExtra []dns.RR
	soa      bool
}

func (n *node) records(qtype uint16) []dns.RR {
	switch qtype {
	case dns.TypeA:
		return n.a
	case dns.TypeAAAA:
		return n.aaaa
	case dns.TypeSRV:
		return n.srv
	}
	return nil
}

// zone is one immutable snapshot of the cluster's names; Update builds a
// new one and swaps it in whole.
type zone struct {
	domain  string // lower-case, fully qualified
	soa     *dns.SOA
	names   map[string]*node
	reverse map[string][]dns.RR // PTR records by reverse name
}

// inDomain reports whether the lower-case fully qualified name is the
// cluster domain or below it.
func inDomain(name, domain string) bool {
	return name == domain || (len(name) > len(domain) && strings.HasSuffix(name, domain) && name[len(name)-len(domain)-1] == '.')
}

// zoneBuilder accumulates a zone; errs collects what was skipped.
type zoneBuilder struct {
	z    *zone
	errs []error
	// instances merges the addresses of the Instances and of headless
	// backends by instance name, so an SRV target always resolves even
	// when the Instance list lags the Endpoints.
	instances map[string][]netip.Addr
	order     []string
}

// buildZone turns records into a zone under domain (lower-case, fully
// qualified). Records that cannot be names (invalid labels, addresses
// with a zone, duplicates) are skipped; the error names each of them.
func buildZone(domain string, r Records, serial uint32) (*zone, error) {
	b := &zoneBuilder{
		z: &zone{
			domain:  domain,
			names:   make(map[string]*node, 2*len(r.Services)+len(r.Instances)+3),
			reverse: make(map[string][]dns.RR, len(r.Instances)),
		},
		instances: make(map[string][]netip.Addr, len(r.Instances)),
	}
	b.z.soa = &dns.SOA{
		Hdr:     dns.RR_Header{Name: domain, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttlNegative},
		Ns:      "ns.dns." + domain,
		Mbox:    "hostmaster." + domain,
		Serial:  serial,
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  ttlNegative,
	}
	b.node(domain).soa = true
	b.node("svc." + domain)
	b.node("instance." + domain)
	seen := make(map[string]bool, len(r.Services))
	for _, s := range r.Services {
		key := s.Namespace + "/" + s.Name
		switch {
		case !validLabel(s.Namespace) || !validLabel(s.Name):
			b.errs = append(b.errs, fmt.Errorf("service %q: namespace and name must be DNS labels (lower-case letters, digits, '-')", key))
		case seen[key]:
			b.errs = append(b.errs, fmt.Errorf("service %s: listed twice, the first kept", key))
		default:
			seen[key] = true
			b.service(s)
		}
	}
	for _, in := range r.Instances {
		if !validLabel(in.Namespace) || !validLabel(in.Name) {
			b.errs = append(b.errs, fmt.Errorf("instance %q: namespace and name must be DNS labels (lower-case letters, digits, '-')", in.Namespace+"/"+in.Name))
			continue
		}
		b.instance(in.Namespace, in.Name, in.Addrs)
	}
	for _, name := range b.order {
		b.instanceRecords(name, b.instances[name])
	}
	return b.z, errors.Join(b.errs...)
}

// node returns the node of name, creating it and its missing ancestors up
// to the domain (as empty non-terminals).
func (b *zoneBuilder) node(name string) *node {
	if n, ok := b.z.names[name]; ok {
		return n
	}
	n := &node{}
	b.z.names[name] = n
	if name != b.z.domain {
		if i := strings.IndexByte(name, '.'); i >= 0 && inDomain(name[i+1:], b.z.domain) {
			b.node(name[i+1:])
		}
	}
	return n
}

func (b *zoneBuilder) service(s Service) {
	name := s.Name + "." + s.Namespace + ".svc." + b.z.domain
	key := s.Namespace + "/" + s.Name
	if !b.fits("service "+key, name) {
		return
	}
	if !s.Headless {
		n := b.node(name)
		for _, ip := range s.VirtualIPs {
			rr, err := addrRecord(name, ip, ttlVirtualIP)
			if err != nil {
				b.errs = append(b.errs, fmt.Errorf("service %s: virtual IP: %w", key, err))
				continue
			}
			n.add(rr)
			b.ptr(ip, name, ttlVirtualIP)
		}
		for _, p := range s.Ports {
			if srvName, ok := b.srvName(key, name, p); ok {
				srv := b.node(srvName)
				srv.srv = append(srv.srv, srvRecord(srvName, name, p.Port, 100, ttlVirtualIP))
				srv.srvExtra = append(append(srv.srvExtra, n.a...), n.aaaa...)
			}
		}
		return
	}
	var backends []Backend
	for _, be := range s.Backends {
		if !validLabel(be.Instance) {
			b.errs = append(b.errs, fmt.Errorf("service %s: backend %q: instance name must be a DNS label", key, be.Instance))
			continue
		}
		if len(be.Addrs) > 0 {
			backends = append(backends, be)
		}
	}
	if len(backends) == 0 {
		// As CoreDNS does: a headless Service without a ready instance
		// has no name at all (NXDOMAIN), nor have its SRV names.
		return
	}
	n := b.node(name)
	for _, be := range backends {
		for _, ip := range be.Addrs {
			rr, err := addrRecord(name, ip, ttlInstance)
			if err != nil {
				b.errs = append(b.errs, fmt.Errorf("service %s: backend %s: %w", key, be.Instance, err))
				continue
			}
			n.add(rr)
		}
		b.instance(s.Namespace, be.Instance, be.Addrs)
	}
	weight := uint16(max(1, 100/len(backends)))
	for _, p := range s.Ports {
		srvName, ok := b.srvName(key, name, p)
		if !ok {
			continue
		}
		srv := b.node(srvName)
		for _, be := range backends {
			target := be.Instance + "." + s.Namespace + ".instance." + b.z.domain
			srv.srv = append(srv.srv, srvRecord(srvName, target, p.Port, weight, ttlInstance))
			for _, ip := range be.Addrs {
				if rr, err := addrRecord(target, ip, ttlInstance); err == nil {
					srv.srvExtra = append(srv.srvExtra, rr)
				}
			}
		}
	}
}

// srvName is the SRV name of a named port, or false for an unnamed one
// (no SRV record, as in Kubernetes) or one that cannot be a name.
func (b *zoneBuilder) srvName(key, svcName string, p Port) (string, bool) {
	if p.Name == "" {
		return "", false
	}
	var proto string
	switch p.Protocol {
	case lb.TCP:
		proto = "_tcp."
	case lb.UDP:
		proto = "_udp."
	default:
		b.errs = append(b.errs, fmt.Errorf("service %s: port %q: protocol %v is neither TCP nor UDP", key, p.Name, p.Protocol))
		return "", false
	}
	if !validLabel(p.Name) || p.Port == 0 {
		b.errs = append(b.errs, fmt.Errorf("service %s: port %q (%d): want a DNS label as name and a port other than 0", key, p.Name, p.Port))
		return "", false
	}
	name := "_" + p.Name + "." + proto + svcName
	return name, b.fits("service "+key+" port "+p.Name, name)
}

// fits reports whether name fits in a DNS message (255 bytes on the
// wire), recording an error when it does not.
func (b *zoneBuilder) fits(what, name string) bool {
	if len(name) > 254 {
		b.errs = append(b.errs, fmt.Errorf("%s: name %s is longer than DNS allows (255 bytes): shorten the names or the cluster domain", what, name))
		return false
	}
	return true
}

// instance records the addresses of an instance, merged by name.
func (b *zoneBuilder) instance(namespace, name string, addrs []netip.Addr) {
	fqdn := name + "." + namespace + ".instance." + b.z.domain
	have, ok := b.instances[fqdn]
	if !ok {
		b.order = append(b.order, fqdn)
	}
	for _, a := range addrs {
		if a = a.Unmap(); !slices.Contains(have, a) {
			have = append(have, a)
		}
	}
	b.instances[fqdn] = have
}

func (b *zoneBuilder) instanceRecords(fqdn string, addrs []netip.Addr) {
	if !b.fits("instance", fqdn) {
		return
	}
	n := b.node(fqdn)
	for _, ip := range addrs {
		rr, err := addrRecord(fqdn, ip, ttlInstance)
		if err != nil {
			b.errs = append(b.errs, fmt.Errorf("instance %s: %w", strings.TrimSuffix(fqdn, "."+b.z.domain), err))
			continue
		}
		n.add(rr)
		b.ptr(ip, fqdn, ttlInstance)
	}
}

func (b *zoneBuilder) ptr(ip netip.Addr, target string, ttl uint32) {
	rev, err := dns.ReverseAddr(ip.Unmap().String())
	if err != nil {
		return // addrRecord already rejected what ReverseAddr cannot take
	}
	for _, rr := range b.z.reverse[rev] {
		if rr.(*dns.PTR).Ptr == target {
			return
		}
	}
	b.z.reverse[rev] = append(b.z.reverse[rev], &dns.PTR{
		Hdr: dns.RR_Header{Name: rev, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl},
		Ptr: target,
	})
}

func (n *node) add(rr dns.RR) {
	switch rr := rr.(type) {
	case *dns.A:
		for _, have := range n.a {
			if have.(*dns.A).A.Equal(rr.A) {
				return
			}
		}
		n.a = append(n.a, rr)
	case *dns.AAAA:
		for _, have := range n.aaaa {
			if have.(*dns.AAAA).AAAA.Equal(rr.AAAA) {
				return
			}
		}
		n.aaaa = append(n.aaaa, rr)
	}
}

// addrRecord is the A or AAAA record of ip (IPv4-mapped IPv6 addresses
// are IPv4).
func addrRecord(name string, ip netip.Addr, ttl uint32) (dns.RR, error) {
	if !ip.IsValid() || ip.Zone() != "" || ip.IsUnspecified() {
		return nil, fmt.Errorf("address %q: want an IPv4 or IPv6 address without a zone", ip)
	}
	ip = ip.Unmap()
	hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: ttl}
	if ip.Is4() {
		hdr.Rrtype = dns.TypeA
		return &dns.A{Hdr: hdr, A: ip.AsSlice()}, nil
	}
	hdr.Rrtype = dns.TypeAAAA
	return &dns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()}, nil
}

func srvRecord(name, target string, port, weight uint16, ttl uint32) dns.RR {
	return &dns.SRV{
		Hdr:    dns.RR_Header{Name: name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: ttl},
		Weight: weight,
		Port:   port,
		Target: target,
	}
}

// validLabel reports whether s is a DNS-1123 label, the form every
// object name and namespace has (api/types.ValidateName enforces it at
// the API; it is checked again here because a name that is not a label
// would silently become several).
func validLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// answer is what the zone says to one question.
type answer struct {
	rcode             int
	answer, ns, extra []dns.RR
}

// lookup answers a question about name (lower-case, fully qualified)
// from the zone, or returns false when the name is not the zone's to
// answer: outside the domain, and not the reverse name of an address the
// zone holds. Such questions are forwarded.
func (z *zone) lookup(name string, qtype uint16) (answer, bool) {
	if qtype == dns.TypePTR {
		if ptr, ok := z.reverse[name]; ok {
			return answer{answer: ptr}, true
		}
	}
	if !inDomain(name, z.domain) {
		return answer{}, false
	}
	switch qtype {
	case dns.TypeANY, dns.TypeAXFR, dns.TypeIXFR, dns.TypeMAILA, dns.TypeMAILB:
		// The zone is not for transfer, and ANY would make the largest
		// answer the cheapest to ask for (RFC 8482 allows refusing it).
		return answer{rcode: dns.RcodeNotImplemented}, true
	}
	n, ok := z.names[name]
	if !ok {
		return answer{rcode: dns.RcodeNameError, ns: []dns.RR{z.soa}}, true
	}
	if qtype == dns.TypeSOA && n.soa {
		return answer{answer: []dns.RR{z.soa}}, true
	}
	rrs := n.records(qtype)
	if len(rrs) == 0 {
		return answer{ns: []dns.RR{z.soa}}, true // NODATA
	}
	if qtype == dns.TypeSRV {
		return answer{answer: rrs, extra: n.srvExtra}, true
	}
	if len(rrs) > 1 {
		// Clients that take the first address (glibc) spread over a
		// headless Service's instances, as with CoreDNS's loadbalance.
		rrs = slices.Clone(rrs)
		rand.Shuffle(len(rrs), func(i, j int) { rrs[i], rrs[j] = rrs[j], rrs[i] })
	}
	return answer{answer: rrs}, true
}
