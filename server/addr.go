package server

import (
	"net"
	"strconv"
)

// The addresses a server gives the other machines: the API URL in its
// Server object and the store peer address raft and joiners dial. A
// server that listens on every address ([::]:7380) must still name one.

// reachableHost is the host other machines reach this server at: the
// first --advertise, else the store peer address's host when it is a
// specific, non-loopback address, else the API's, else this machine's
// first global address, else loopback (a single machine).
func (c *Config) reachableHost() string {
	if len(c.Advertise) > 0 && c.Advertise[0] != "" {
		return c.Advertise[0]
	}
	for _, addr := range []string{c.StorePeerAddr, c.APIAddr} {
		if host, _, err := net.SplitHostPort(addr); err == nil && specific(host) {
			return host
		}
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.IsGlobalUnicast() {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// specific reports whether host names one address other machines can
// dial: not empty, not "every address", not loopback.
func specific(host string) bool {
	if host == "" || host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !(ip.IsUnspecified() || ip.IsLoopback())
}

// peerAdvertise is the store peer address the other members dial: the
// listen address, with reachableHost in place of an unspecified host.
func (c *Config) peerAdvertise() string {
	host, port, err := net.SplitHostPort(c.StorePeerAddr)
	if err != nil {
		return c.StorePeerAddr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = c.reachableHost()
	}
	return net.JoinHostPort(host, port)
}

// clusterAPIURL is the API's URL for other machines (the Server object's
// status.apiURL).
func (c *Config) clusterAPIURL(listening string) string {
	_, port, err := net.SplitHostPort(listening)
	if err != nil {
		port = strconv.Itoa(DefaultAPIPort)
	}
	return "https://" + net.JoinHostPort(c.reachableHost(), port)
}

// isLoopback reports whether a host:port is on loopback only.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// hasPort reports whether addr is host:port rather than a bare host.
func hasPort(addr string) bool {
	_, _, err := net.SplitHostPort(addr)
	return err == nil
}

// joinHostPort adds the port to a bare host (an IPv6 address in brackets
// or not).
func joinHostPort(host string, port int) string {
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
