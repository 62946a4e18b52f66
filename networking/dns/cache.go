package dns

import (
	"container/list"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Bounds on how long a forwarded answer is kept, whatever its TTL says:
// an hour for answers (what CoreDNS's cache keeps at most), five minutes
// for negative ones (RFC 2308 §5 lets a resolver cap them; a name that
// appears upstream should not stay missing for long).
const (
	maxCacheTTL    = time.Hour
	maxNegativeTTL = 5 * time.Minute
)

// cache keeps forwarded answers until their TTL runs out, at most size of
// them, evicting the least recently used. Safe for concurrent use.
type cache struct {
	mu    sync.Mutex
	size  int
	lru   *list.List // of *cacheEntry, most recently used first
	items map[string]*list.Element
}

type cacheEntry struct {
	key     string
	msg     *dns.Msg
	stored  time.Time
	expires time.Time
}

func newCache(size int) *cache {
	return &cache{size: size, lru: list.New(), items: make(map[string]*list.Element)}
}

// get returns a copy of the cached answer to key with its TTLs lowered by
// the time it has spent in the cache, or false when there is none still
// valid at now.
func (c *cache) get(key string, now time.Time) (*dns.Msg, bool) {
	if c.size <= 0 {
		return nil, false
	}
	c.mu.Lock()
	el, ok := c.items[key]
	if !ok {
		c.mu.Unlock()
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.lru.Remove(el)
		delete(c.items, key)
		c.mu.Unlock()
		return nil, false
	}
	c.lru.MoveToFront(el)
	c.mu.Unlock()
	// e.msg is never changed once stored, so it is copied outside the lock.
	m := e.msg.Copy()
	elapsed := uint32(now.Sub(e.stored) / time.Second)
	left := uint32((e.expires.Sub(now) + time.Second - 1) / time.Second)
	for _, rrs := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range rrs {
			h := rr.Header()
			h.Ttl = min(h.Ttl-min(h.Ttl, elapsed), left)
		}
	}
	return m, true
}

// put keeps m under key if it may be cached (see cacheTTL). m must not be
// changed afterwards.
func (c *cache) put(key string, m *dns.Msg, now time.Time) {
	ttl, ok := cacheTTL(m)
	if !ok || c.size <= 0 {
		return
	}
	e := &cacheEntry{key: key, msg: m, stored: now, expires: now.Add(ttl)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		el.Value = e
		c.lru.MoveToFront(el)
		return
	}
	c.items[key] = c.lru.PushFront(e)
	for c.lru.Len() > c.size {
		oldest := c.lru.Back()
		c.lru.Remove(oldest)
		delete(c.items, oldest.Value.(*cacheEntry).key)
	}
}

// cacheTTL is how long a forwarded answer may be kept: the smallest TTL
// of its records for an answer; for a negative one (NXDOMAIN or NODATA)
// the SOA's minimum or its own TTL, whichever is less (RFC 2308 §5), and
// nothing without an SOA. Failures and truncated answers are not kept.
func cacheTTL(m *dns.Msg) (time.Duration, bool) {
	if m.Truncated || (m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError) {
		return 0, false
	}
	if m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0 {
		ttl := uint32(1<<32 - 1)
		for _, rrs := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
			for _, rr := range rrs {
				if rr.Header().Rrtype != dns.TypeOPT {
					ttl = min(ttl, rr.Header().Ttl)
				}
			}
		}
		d := min(time.Duration(ttl)*time.Second, maxCacheTTL)
		return d, d > 0
	}
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			d := min(time.Duration(min(soa.Hdr.Ttl, soa.Minttl))*time.Second, maxNegativeTTL)
			return d, d > 0
		}
	}
	return 0, false
}
