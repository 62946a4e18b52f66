package dns

import (
	"context"
	"net"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// ServeDNS answers one query; the dns.Server calls it for each.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	_, tcp := w.LocalAddr().(*net.TCPAddr)
	if resp := s.respond(s.ctx, req, tcp); resp != nil {
		if err := w.WriteMsg(resp); err != nil {
			s.log.Debug("cluster DNS: write answer", "client", w.RemoteAddr(), "err", err)
		}
	}
}

// respond is the answer to req, or nil for a message that gets none (a
// response: answering it could make a loop or an amplifier). Queries the
// server does not take get, by the RFCs:
//   - an opcode other than QUERY (NOTIFY, UPDATE, ...): NOTIMP;
//   - not exactly one question: FORMERR (RFC 9619);
//   - more than one OPT record: FORMERR; an EDNS version other than 0:
//     BADVERS (RFC 6891 §6.1.3);
//   - a class other than IN: NOTIMP;
//   - ANY, AXFR, IXFR, MAILA, MAILB under the cluster domain: NOTIMP
//     (forwarded elsewhere).
//
// Every other question under the domain is answered from the zone, the
// rest forwarded. Over UDP the answer is truncated (TC set, the client
// retries over TCP) to the client's EDNS buffer size, at most 1232 bytes,
// or to 512 bytes without EDNS.
func (s *Server) respond(ctx context.Context, req *dns.Msg, tcp bool) *dns.Msg {
	if req.Response {
		return nil
	}
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.RecursionAvailable = true
	opt, nopt := requestOPT(req)
	if opt != nil {
		resp.SetEdns0(upstreamUDPSize, opt.Do())
	}
	switch {
	case req.Opcode != dns.OpcodeQuery:
		resp.Rcode = dns.RcodeNotImplemented
	case len(req.Question) != 1 || nopt > 1:
		resp.Rcode = dns.RcodeFormatError
	case opt != nil && opt.Version() != 0:
		resp.Rcode = dns.RcodeBadVers
	case req.Question[0].Qclass != dns.ClassINET:
		resp.Rcode = dns.RcodeNotImplemented
	default:
		s.answer(ctx, req.Question[0], opt, resp)
	}
	size := dns.MaxMsgSize
	if !tcp {
		size = dns.MinMsgSize
		if opt != nil {
			size = min(int(opt.UDPSize()), upstreamUDPSize)
		}
	}
	if len(resp.Extra) > 0 && resp.Len() > size {
		// The additional section is a courtesy: drop it whole rather
		// than let Truncate set TC for it, which would send the client
		// to TCP for records it did not ask for (RFC 2181 §9).
		resp.Extra = slices.DeleteFunc(resp.Extra, func(rr dns.RR) bool { return rr.Header().Rrtype != dns.TypeOPT })
	}
	resp.Truncate(size)
	return resp
}

// answer fills resp with the answer to q, from the zone or the upstreams.
func (s *Server) answer(ctx context.Context, q dns.Question, opt *dns.OPT, resp *dns.Msg) {
	name := strings.ToLower(q.Name)
	if inDomain(name, s.domain) || q.Qtype == dns.TypePTR {
		z := s.zone.Load()
		if z == nil {
			if inDomain(name, s.domain) {
				resp.Rcode = dns.RcodeServerFailure // not synced yet
				return
			}
		} else if a, ok := z.lookup(name, q.Qtype); ok {
			resp.Authoritative = true
			resp.Rcode = a.rcode
			// The zone's slices are shared by every answer: Answer and Ns
			// are only resliced (by Truncate), Extra is written, so it
			// gets its own.
			resp.Answer, resp.Ns = a.answer, a.ns
			resp.Extra = append(append(make([]dns.RR, 0, len(a.extra)+1), a.extra...), resp.Extra...)
			return
		}
	}
	do := opt != nil && opt.Do()
	m, err := s.fwd.resolve(ctx, dns.Question{Name: name, Qtype: q.Qtype, Qclass: q.Qclass}, do, resp.CheckingDisabled)
	if err != nil {
		resp.Rcode = dns.RcodeServerFailure
		return
	}
	resp.Rcode = m.Rcode
	resp.AuthenticatedData = m.AuthenticatedData && do
	resp.Answer, resp.Ns = m.Answer, m.Ns
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			resp.Extra = append(resp.Extra, rr)
		}
	}
}

// requestOPT returns the request's OPT record, if any, and how many it has.
func requestOPT(req *dns.Msg) (*dns.OPT, int) {
	var opt *dns.OPT
	n := 0
	for _, rr := range req.Extra {
		if o, ok := rr.(*dns.OPT); ok {
			if opt == nil {
				opt = o
			}
			n++
		}
	}
	return opt, n
}
