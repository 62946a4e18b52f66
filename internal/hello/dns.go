package hello

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// ServeDNS answers DNS queries on pc until ctx ends, for tests of UDP
// services: a TXT query for any name answers the host name (in a
// container, the instance's name), A and AAAA queries the host's own
// addresses of that family, anything else NOTIMP; a message that is not
// one query gets FORMERR, or nothing when it cannot be parsed at all.
func ServeDNS(ctx context.Context, pc net.PacketConn, hostname func() (string, error), addrs func() ([]Address, error)) error {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("serve dns on %s: %w", pc.LocalAddr(), err)
		}
		if out := answerDNS(buf[:n], hostname, addrs); out != nil {
			_, _ = pc.WriteTo(out, from)
		}
	}
}

// answerDNS builds the answer to one query message (nil: no answer).
func answerDNS(msg []byte, hostname func() (string, error), addrs func() ([]Address, error)) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || h.Response {
		return nil
	}
	qs, err := p.AllQuestions()
	resp := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired}
	if err != nil || len(qs) != 1 || h.OpCode != 0 {
		resp.RCode = dnsmessage.RCodeFormatError
		if err == nil && h.OpCode != 0 {
			resp.RCode = dnsmessage.RCodeNotImplemented
		}
		b := dnsmessage.NewBuilder(nil, resp)
		out, _ := b.Finish()
		return out
	}
	q := qs[0]
	if q.Type != dnsmessage.TypeTXT && q.Type != dnsmessage.TypeA && q.Type != dnsmessage.TypeAAAA {
		resp.RCode = dnsmessage.RCodeNotImplemented
	}
	b := dnsmessage.NewBuilder(nil, resp)
	b.EnableCompression()
	_ = b.StartQuestions()
	_ = b.Question(q)
	_ = b.StartAnswers()
	rh := dnsmessage.ResourceHeader{Name: q.Name, Type: q.Type, Class: dnsmessage.ClassINET, TTL: 0}
	switch q.Type {
	case dnsmessage.TypeTXT:
		name, err := hostname()
		if err != nil {
			name = "unknown"
		}
		_ = b.TXTResource(rh, dnsmessage.TXTResource{TXT: []string{name}})
	case dnsmessage.TypeA, dnsmessage.TypeAAAA:
		as, _ := addrs()
		for _, a := range as {
			pfx, err := netip.ParsePrefix(a.Address)
			if err != nil || a.Loopback || pfx.Addr().IsLinkLocalUnicast() {
				continue
			}
			ip := pfx.Addr()
			switch {
			case q.Type == dnsmessage.TypeA && ip.Is4():
				_ = b.AResource(rh, dnsmessage.AResource{A: ip.As4()})
			case q.Type == dnsmessage.TypeAAAA && ip.Is6():
				_ = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: ip.As16()})
			}
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

const resolveUsage = `usage: resolve [-server HOST:PORT] [-t A|AAAA|TXT|SRV] [-tcp] [-n N] NAME
  -server  ask this server (default: the nameservers of /etc/resolv.conf,
           with its search list)
  -t       the record type (default A and AAAA)
  -tcp     ask over TCP instead of UDP
  -n N     ask N times and print how many times each answer came, as
           "COUNT ANSWER" lines`

// Resolve is the built-in image's `resolve NAME` applet, a minimal dig: it
// looks NAME up with Go's resolver (the container's /etc/resolv.conf, or
// -server) and prints one answer per line; it returns 0 when there was an
// answer, 1 when the lookup failed (the reason on stderr) and 2 for bad
// arguments. Tests use it to check the cluster DNS and UDP services.
func Resolve(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("resolve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	server := fs.String("server", "", "")
	typ := fs.String("t", "", "")
	useTCP := fs.Bool("tcp", false, "")
	count := fs.Int("n", 1, "")
	bad := func(msg string) int {
		fmt.Fprintf(stderr, "resolve: %s\n%s\n", msg, resolveUsage)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		return bad(err.Error())
	}
	if fs.NArg() != 1 {
		return bad("want one name")
	}
	if *count < 1 || *count > maxFetchCount {
		return bad(fmt.Sprintf("-n %d: want 1 to %d", *count, maxFetchCount))
	}
	*typ = strings.ToUpper(*typ)
	if !slices.Contains([]string{"", "A", "AAAA", "TXT", "SRV"}, *typ) {
		return bad(fmt.Sprintf("-t %s: want A, AAAA, TXT or SRV", *typ))
	}
	r := &net.Resolver{PreferGo: true}
	if *server != "" {
		if _, _, err := net.SplitHostPort(*server); err != nil {
			return bad(fmt.Sprintf("-server %q: want HOST:PORT (IPv6 in brackets)", *server))
		}
		d := &net.Dialer{Timeout: 5 * time.Second}
		r.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			if *useTCP {
				network = "tcp"
			}
			return d.DialContext(ctx, network, *server)
		}
	} else if *useTCP {
		return bad("-tcp needs -server")
	}
	tally := map[string]int{}
	failed := 0
	for range *count {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		answers, err := lookup(ctx, r, *typ, fs.Arg(0))
		cancel()
		if err != nil {
			failed++
			tally["error: "+dnsErrorKind(err)]++
			continue
		}
		if *count == 1 {
			for _, a := range answers {
				fmt.Fprintln(stdout, a)
			}
			continue
		}
		tally[strings.Join(answers, " ")]++
	}
	if *count > 1 {
		printTally(stdout, tally)
	}
	if failed > 0 {
		if *count == 1 {
			for k := range tally {
				fmt.Fprintf(stderr, "resolve: %s: %s\n", fs.Arg(0), strings.TrimPrefix(k, "error: "))
			}
		}
		return 1
	}
	return 0
}

func lookup(ctx context.Context, r *net.Resolver, typ, name string) ([]string, error) {
	var out []string
	switch typ {
	case "TXT":
		txt, err := r.LookupTXT(ctx, name)
		if err != nil {
			return nil, err
		}
		out = txt
	case "SRV":
		_, srvs, err := r.LookupSRV(ctx, "", "", name)
		if err != nil {
			return nil, err
		}
		for _, s := range srvs {
			out = append(out, strings.TrimSuffix(s.Target, ".")+":"+strconv.Itoa(int(s.Port)))
		}
	default:
		network := map[string]string{"": "ip", "A": "ip4", "AAAA": "ip6"}[typ]
		ips, err := r.LookupNetIP(ctx, network, name)
		if err != nil {
			return nil, err
		}
		for _, ip := range ips {
			out = append(out, ip.Unmap().String())
		}
	}
	slices.Sort(out)
	return out, nil
}

func dnsErrorKind(err error) string {
	var de *net.DNSError
	if errors.As(err, &de) {
		switch {
		case de.IsNotFound:
			return "no such name"
		case de.IsTimeout:
			return "timed out"
		}
		return de.Err
	}
	return err.Error()
}
