package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

// upstreamUDPSize is the EDNS buffer size asked of upstreams and offered
// to clients: 1232 bytes fits an IPv6 packet on any link without
// fragments (the DNS flag day 2020 value); larger answers go over TCP.
const upstreamUDPSize = 1232

// forwarder sends the questions the zone does not answer to the node's
// resolvers, through a cache, with concurrent identical questions sent
// upstream once.
type forwarder struct {
	upstreams []string
	timeout   time.Duration
	cache     *cache
	flight    singleflight.Group
	udp, tcp  *dns.Client
	log       *slog.Logger
	logFail   rate.Sometimes
}

func newForwarder(upstreams []netip.AddrPort, timeout time.Duration, cacheSize int, log *slog.Logger) *forwarder {
	f := &forwarder{
		timeout: timeout,
		cache:   newCache(cacheSize),
		udp:     &dns.Client{Net: "udp", UDPSize: upstreamUDPSize},
		tcp:     &dns.Client{Net: "tcp"},
		log:     log,
		logFail: rate.Sometimes{Interval: 10 * time.Second},
	}
	for _, u := range upstreams {
		f.upstreams = append(f.upstreams, u.String())
	}
	return f
}

// resolve answers q (its name lower-case) from the cache or the
// upstreams. do and cd are the client's DNSSEC OK and checking disabled
// bits, passed on and part of the cache key since they change the answer.
// The returned message is the caller's to change.
func (f *forwarder) resolve(ctx context.Context, q dns.Question, do, cd bool) (*dns.Msg, error) {
	key := q.Name + "/" + strconv.Itoa(int(q.Qtype)) + "/" + strconv.FormatBool(do) + "/" + strconv.FormatBool(cd)
	if m, ok := f.cache.get(key, time.Now()); ok {
		return m, nil
	}
	v, err, _ := f.flight.Do(key, func() (any, error) {
		m, err := f.exchange(ctx, q, do, cd)
		if err != nil {
			return nil, err
		}
		f.cache.put(key, m, time.Now())
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	// The cache and the other waiters hold the same message.
	return v.(*dns.Msg).Copy(), nil
}

// exchange asks the upstreams in turn until one answers, within the
// forwarder's timeout in all: each gets an equal share of what is left,
// so one that does not answer leaves time for the next, and the client
// hears SERVFAIL before its own resolver gives up (glibc waits 5 s).
func (f *forwarder) exchange(ctx context.Context, q dns.Question, do, cd bool) (*dns.Msg, error) {
	if len(f.upstreams) == 0 {
		return nil, errors.New("no upstream resolver: the node's resolv.conf has no nameserver")
	}
	req := new(dns.Msg)
	req.SetQuestion(q.Name, q.Qtype)
	req.CheckingDisabled = cd
	req.SetEdns0(upstreamUDPSize, do)
	deadline := time.Now().Add(f.timeout)
	var errs []error
	for i, up := range f.upstreams {
		share := time.Until(deadline) / time.Duration(len(f.upstreams)-i)
		if share <= 0 {
			break
		}
		r, err := f.exchangeOne(ctx, req, up, share)
		if err == nil {
			return r, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", up, err))
	}
	err := fmt.Errorf("forward %s %s: %w", q.Name, dns.TypeToString[q.Qtype], errors.Join(errs...))
	f.logFail.Do(func() {
		f.log.Warn("no upstream resolver answered; clients get SERVFAIL (logged at most every 10 s)", "err", err)
	})
	return nil, err
}

// exchangeOne asks one upstream over UDP, and again over TCP when the
// answer was truncated. An answer to another question, a failure or a
// refusal counts as no answer.
func (f *forwarder) exchangeOne(ctx context.Context, req *dns.Msg, upstream string, timeout time.Duration) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, _, err := f.udp.ExchangeContext(ctx, req, upstream)
	if err == nil && r.Truncated {
		r, _, err = f.tcp.ExchangeContext(ctx, req, upstream)
	}
	if err != nil {
		return nil, err
	}
	switch {
	case len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, req.Question[0].Name) ||
		r.Question[0].Qtype != req.Question[0].Qtype || r.Question[0].Qclass != req.Question[0].Qclass:
		return nil, errors.New("answered another question")
	case r.Rcode == dns.RcodeServerFailure || r.Rcode == dns.RcodeRefused:
		return nil, fmt.Errorf("answered %s", dns.RcodeToString[r.Rcode])
	}
	return r, nil
}
