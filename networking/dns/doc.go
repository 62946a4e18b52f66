// Package dns is the cluster DNS server the node agent runs on the node
// bridge's addresses, the resolver every container is given. It answers the
// cluster's own names itself, from an in-memory view the agent replaces on
// every change of Services or Endpoints, and forwards every other
// name to the node's resolvers through a small cache.
//
// Names under the cluster domain D (default cluster.local):
//
//	<svc>.<ns>.svc.D                      A/AAAA: the Service's virtual IPs;
//	                                      headless: the ready instances' addresses
//	_<port>._<tcp|udp>.<svc>.<ns>.svc.D   SRV for each named port: the Service's
//	                                      name, or each ready instance's name when headless
//	<instance>.<ns>.instance.D            A/AAAA: the instance's addresses (the
//	                                      Records' Instances: the agent gives those
//	                                      behind a Service)
//	reverse names of those addresses      PTR to the names above
//
// The view is one immutable snapshot behind an atomic pointer: Update builds
// the next one aside and swaps it in, so a lookup takes no lock and the
// next query after Update sees the new records. Inside D the server is
// authoritative: a name it does not hold is NXDOMAIN with the SOA in the
// authority section (so a stub resolver walking the search list moves on at
// once), a name it holds without the asked type is NODATA.
//
// The behaviour where Kubernetes' CoreDNS defines one is copied from it: a
// headless Service without a ready instance is NXDOMAIN (the name has no
// record at all), an AAAA question for an IPv4-only Service is NODATA,
// every DNS label is compared without regard to case. Where the wire
// format is at stake (malformed or unsupported queries) the RFCs decide:
// see respond in server.go.
package dns
