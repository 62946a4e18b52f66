package dns

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// ResolvConf is a container's /etc/resolv.conf: the cluster DNS server's
// addresses (the node bridge's) as nameservers, and a search list that
// makes "web" find the Service web in the container's namespace and
// "web.other" the one in namespace other. ndots:5 makes names with fewer
// than five dots try the search list first (what Kubernetes does), so
// "web.other.svc" finds the Service too; the price is a few NXDOMAIN
// answers for outside names, which the server gives from memory.
func ResolvConf(namespace string, nameservers []netip.Addr, domain string) []byte {
	if domain == "" {
		domain = DefaultDomain
	}
	domain = strings.TrimSuffix(domain, ".")
	var b bytes.Buffer
	b.WriteString("# Written by the nexus agent: the cluster's DNS server, which forwards other names to the node's resolvers.\n")
	for _, ns := range nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns.Unmap())
	}
	fmt.Fprintf(&b, "search %s.svc.%s svc.%s %s\n", namespace, domain, domain, domain)
	b.WriteString("options ndots:5\n")
	return b.Bytes()
}

// readUpstreams returns the nameservers of the resolv.conf at path.
func readUpstreams(path string) ([]netip.AddrPort, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read the node's resolvers: %w; give Upstreams instead", err)
	}
	defer f.Close()
	ups, err := parseUpstreams(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ups, nil
}

// parseUpstreams reads the nameserver lines of a resolv.conf. Link-local
// IPv6 nameservers keep their zone (fe80::1%eth0), which the upstream
// exchange needs.
func parseUpstreams(r io.Reader) ([]netip.AddrPort, error) {
	cfg, err := dns.ClientConfigFromReader(r)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(cfg.Port, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("port %q: want 1-65535", cfg.Port)
	}
	var ups []netip.AddrPort
	for _, s := range cfg.Servers {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("nameserver %q: want an IP address", s)
		}
		ups = append(ups, netip.AddrPortFrom(a.Unmap(), uint16(port)))
	}
	return ups, nil
}
