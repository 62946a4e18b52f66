package api

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"nexus.dev/nexus/api/storage"
	"nexus.dev/nexus/api/types"
)

// Services' virtual IPs and node ports are claims (storage.Claim): the
// server picks free ones at create (and node ports when an update asks for
// new ones), and the store takes them in the same transaction as the
// Service and frees them with its delete. A user may give them; they are
// checked against the ranges here and against other Services by the
// claims.
const (
	claimServiceIPs = "serviceips/"
	claimNodePorts  = "nodeports/"
	// allocationAttempts bounds the retries of a write that lost a value it
	// picked to a concurrent one: picks start at a random place in the
	// range, so two writers rarely collide even once.
	allocationAttempts = 8
)

// ServiceRanges are where Services' virtual IPs come from
// (networking.ClusterPrefixes.ServiceRanges): an IPv6 range, and an IPv4
// one when the cluster has an IPv4 prefix (invalid otherwise).
type ServiceRanges struct {
	IPv6, IPv4 netip.Prefix
}

// serviceClaims are a Service's virtual IPs and node ports.
func serviceClaims(o types.Object) []storage.Claim {
	svc, ok := o.(*types.Service)
	if !ok {
		return nil
	}
	var claims []storage.Claim
	for i, a := range svc.Spec.VirtualIPs {
		claims = append(claims, storage.Claim{Key: claimServiceIPs + a, Field: "spec.virtualIPs[" + strconv.Itoa(i) + "]", What: "virtual IP " + a})
	}
	for i, p := range svc.Spec.Ports {
		if p.NodePort != 0 {
			claims = append(claims, nodePortClaim(p.NodePort, p.Protocol, i))
		}
	}
	return claims
}

func nodePortClaim(port int32, proto types.Protocol, i int) storage.Claim {
	return storage.Claim{
		Key:   claimNodePorts + strings.ToLower(string(proto)) + "/" + strconv.Itoa(int(port)),
		Field: "spec.ports[" + strconv.Itoa(i) + "].nodePort",
		What:  fmt.Sprintf("node port %d/%s", port, proto),
	}
}

// allocation is one write's allocations: the claim keys the server picked
// (not the user), so that a write that loses one of them to a concurrent
// write is tried again with other values.
type allocation struct {
	picked map[string]bool
}

// lost reports whether err refused a write for a value this allocation
// picked.
func (a *allocation) lost(err error) bool {
	var se *storage.Error
	return errors.As(err, &se) && se.Claim != nil && a.picked[se.Claim.Key]
}

// withAllocation runs write, which allocates with the allocation it is
// given, again when another write took a picked value meanwhile.
func withAllocation(write func(a *allocation) (types.Object, error)) (types.Object, error) {
	for attempt := 1; ; attempt++ {
		a := &allocation{picked: map[string]bool{}}
		o, err := write(a)
		if attempt < allocationAttempts && a.lost(err) {
			continue
		}
		return o, err
	}
}

// allocate returns o with what the server allocates for its kind filled
// in: a Service's virtual IPs and node ports. cur is the stored object for
// an update (nil for a create), whose allocations an update that leaves
// them out keeps. o is not changed.
func (s *Server) allocate(ctx context.Context, a *allocation, cur, o types.Object) (types.Object, error) {
	svc, ok := o.(*types.Service)
	if !ok {
		return o, nil
	}
	out := *svc
	out.Spec.VirtualIPs = slices.Clone(svc.Spec.VirtualIPs)
	out.Spec.Ports = slices.Clone(svc.Spec.Ports)
	var old *types.ServiceSpec
	if c, ok := cur.(*types.Service); ok {
		old = &c.Spec
		out.Spec.KeepAllocated(old)
	}
	if err := s.allocateVirtualIPs(ctx, a, old, &out); err != nil {
		return nil, err
	}
	if err := s.allocateNodePorts(ctx, a, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// allocateVirtualIPs checks the virtual IPs a user gave (in the service
// ranges, not a range's network or broadcast address) and picks a free one
// for each family the service lacks.
func (s *Server) allocateVirtualIPs(ctx context.Context, a *allocation, old *types.ServiceSpec, svc *types.Service) error {
	if svc.Spec.Headless {
		return nil
	}
	var errs types.FieldErrors
	var have6, have4 netip.Addr
	for i, v := range svc.Spec.VirtualIPs {
		ip, err := netip.ParseAddr(v)
		if err != nil {
			continue // validation has said so
		}
		if ip.Is4() {
			have4 = ip
		} else {
			have6 = ip
		}
		if old != nil && slices.Contains(old.VirtualIPs, v) {
			continue // allocated before: not checked again
		}
		if msg := s.services.check(ip); msg != "" {
			errs = append(errs, types.FieldError{Field: "spec.virtualIPs[" + strconv.Itoa(i) + "]", Detail: msg})
		}
	}
	if len(errs) > 0 {
		return errs
	}
	if old != nil && len(old.VirtualIPs) > 0 {
		return nil // an update never adds a family: the addresses are fixed at create
	}
	if !s.services.IPv6.IsValid() {
		return problem(http.StatusServiceUnavailable, "Unavailable", "this server has no service address range configured, so Service %s cannot get a virtual IP: make it headless (headless: true), or run the server with its cluster prefixes", svc.Name)
	}
	held, err := s.store.HeldClaims(ctx, claimServiceIPs)
	if err != nil {
		return err
	}
	pick := func(r netip.Prefix, family string) (netip.Addr, error) {
		ip, ok := pickAddr(r, func(ip netip.Addr) bool { return held[claimServiceIPs+ip.String()] })
		if !ok {
			return netip.Addr{}, problem(http.StatusConflict, ReasonExhausted,
				"no free virtual %s address for Service %s: all %d of the service range %s are in use; delete Services you no longer need, or make this one headless (headless: true needs no virtual IP)",
				family, svc.Name, rangeSize(r), r)
		}
		a.picked[claimServiceIPs+ip.String()] = true
		return ip, nil
	}
	if !have6.IsValid() {
		if have6, err = pick(s.services.IPv6, "IPv6"); err != nil {
			return err
		}
	}
	if !have4.IsValid() && s.services.IPv4.IsValid() {
		if have4, err = pick(s.services.IPv4, "IPv4"); err != nil {
			return err
		}
	}
	svc.Spec.VirtualIPs = []string{have6.String()}
	if have4.IsValid() {
		svc.Spec.VirtualIPs = append(svc.Spec.VirtualIPs, have4.String())
	}
	return nil
}

// allocateNodePorts picks a free node port for each port of a NodePort
// service that has none.
func (s *Server) allocateNodePorts(ctx context.Context, a *allocation, svc *types.Service) error {
	if svc.Spec.Type != types.ServiceNodePort {
		return nil
	}
	var held map[string]bool
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if p.NodePort != 0 {
			continue
		}
		if held == nil {
			var err error
			if held, err = s.store.HeldClaims(ctx, claimNodePorts); err != nil {
				return err
			}
			// The service's own ports are taken too, for the ports after them.
			for j, q := range svc.Spec.Ports {
				if q.NodePort != 0 {
					held[nodePortClaim(q.NodePort, q.Protocol, j).Key] = true
				}
			}
		}
		n := int32(types.MaxNodePort - types.MinNodePort + 1)
		start := rand.Uint64N(uint64(n))
		for k := range n {
			port := types.MinNodePort + int32((start+uint64(k))%uint64(n))
			if c := nodePortClaim(port, p.Protocol, i); !held[c.Key] {
				p.NodePort = port
				held[c.Key], a.picked[c.Key] = true, true
				break
			}
		}
		if p.NodePort == 0 {
			return problem(http.StatusConflict, ReasonExhausted,
				"no free node port for spec.ports[%d] (%d/%s) of Service %s: all %d of %d-%d are in use for %s; delete NodePort Services you no longer need, or use type ClusterIP",
				i, p.Port, p.Protocol, svc.Name, n, types.MinNodePort, types.MaxNodePort, p.Protocol)
		}
	}
	return nil
}

// ReasonExhausted is the reason of a 409 answer to a Service that cannot
// get a virtual IP or node port because its range is full.
const ReasonExhausted = "Exhausted"

// check says what is wrong with a virtual IP a user gave, "" if nothing.
func (r ServiceRanges) check(ip netip.Addr) string {
	ranges := r.IPv6.String()
	if r.IPv4.IsValid() {
		ranges += " and " + r.IPv4.String()
	}
	var in netip.Prefix
	switch {
	case ip.Is6() && r.IPv6.Contains(ip):
		in = r.IPv6
	case ip.Is4() && r.IPv4.IsValid() && r.IPv4.Contains(ip):
		in = r.IPv4
	case ip.Is4() && !r.IPv4.IsValid():
		return fmt.Sprintf("%s is IPv4, but the cluster has no IPv4 prefix: give an IPv6 address in %s, or leave virtualIPs out", ip, r.IPv6)
	default:
		return fmt.Sprintf("%s is outside the service ranges (%s): give an address in them, or leave virtualIPs out to get free ones", ip, ranges)
	}
	if !usableIn(in, ip) {
		return fmt.Sprintf("%s is the network or broadcast address of the service range %s: give another address", ip, in)
	}
	return ""
}

// usableIn reports whether ip may be a virtual IP of range r: any address
// but the first (the network's) and, in IPv4, the last (broadcast).
func usableIn(r netip.Prefix, ip netip.Addr) bool {
	if ip == r.Addr() {
		return false
	}
	return !ip.Is4() || ip.Next().IsValid() && r.Contains(ip.Next())
}

// rangeSize is how many virtual IPs range r holds (capped at 2^32).
func rangeSize(r netip.Prefix) uint64 {
	n := uint64(1) << min(r.Addr().BitLen()-r.Bits(), 32)
	if r.Addr().Is4() {
		return max(n, 2) - 2
	}
	return n - 1
}

// pickAddr returns a usable address of r that taken says is free,
// starting at a random place so that concurrent creates rarely pick the
// same; false when every one is taken.
func pickAddr(r netip.Prefix, taken func(netip.Addr) bool) (netip.Addr, bool) {
	size := uint64(1) << min(r.Addr().BitLen()-r.Bits(), 32)
	start := rand.Uint64N(size)
	for k := range size {
		ip := addrAt(r, (start+k)%size)
		if usableIn(r, ip) && !taken(ip) {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// addrAt is the address at offset i of range r (i below its size).
func addrAt(r netip.Prefix, i uint64) netip.Addr {
	if r.Addr().Is4() {
		b := r.Addr().As4()
		binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])+uint32(i))
		return netip.AddrFrom4(b)
	}
	b := r.Addr().As16()
	binary.BigEndian.PutUint64(b[8:], binary.BigEndian.Uint64(b[8:])+i)
	return netip.AddrFrom16(b)
}
