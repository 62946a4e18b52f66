package api

import (
	"math"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"nexus.dev/nexus/security/authz"
)

// fairness keeps one noisy identity from starving the others: a token
// bucket for its request rate and a bound on its concurrent requests (and,
// apart, its open watches). Over either, it gets 429 with Retry-After.
type fairness struct {
	limits Limits
	mu     sync.Mutex
	ids    map[string]*identityLimits
}

type identityLimits struct {
	rate     *rate.Limiter
	inFlight int
	watches  int
	lastSeen time.Time
}

func newFairness(l Limits) *fairness {
	return &fairness{limits: l, ids: map[string]*identityLimits{}}
}

// idleAfter is how long an identity's state is kept after its last request.
const idleAfter = 10 * time.Minute

// admit takes a slot for the request's identity, or refuses with 429. The
// returned function gives the slot back.
func (f *fairness) admit(r *request) (func(), *Problem) {
	// Servers are the control plane itself (their controllers and
	// scheduler act for everyone): never limited.
	if r.principal.Kind == authz.PrincipalServer {
		return func() {}, nil
	}
	key := r.principal.ID
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.ids[key]
	if l == nil {
		if len(f.ids) > 10000 {
			f.sweepLocked(now)
		}
		l = &identityLimits{rate: rate.NewLimiter(rate.Limit(f.limits.RequestsPerSecond), f.limits.Burst)}
		f.ids[key] = l
	}
	l.lastSeen = now
	if res := l.rate.ReserveN(now, 1); !res.OK() || res.DelayFrom(now) > 0 {
		wait := res.DelayFrom(now)
		res.CancelAt(now)
		return nil, tooMany(r, "%s sends more than %g requests per second", key, f.limits.RequestsPerSecond, wait)
	}
	// Long-lived requests (watches, followed logs, execs) have their own bound.
	if r.longLived() {
		if l.watches >= f.limits.MaxWatches {
			return nil, tooMany(r, "%s has %g watches, followed logs and execs open, the most one identity may have", key, float64(l.watches), time.Second)
		}
		l.watches++
		return func() { f.release(l, true) }, nil
	}
	if l.inFlight >= f.limits.MaxInFlight {
		return nil, tooMany(r, "%s has %g requests in flight, the most one identity may have", key, float64(l.inFlight), time.Second)
	}
	l.inFlight++
	return func() { f.release(l, false) }, nil
}

func (f *fairness) release(l *identityLimits, watch bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if watch {
		l.watches--
	} else {
		l.inFlight--
	}
}

func (f *fairness) sweepLocked(now time.Time) {
	for k, l := range f.ids {
		if l.inFlight == 0 && l.watches == 0 && now.Sub(l.lastSeen) > idleAfter {
			delete(f.ids, k)
		}
	}
}

func tooMany(r *request, format string, who string, n float64, wait time.Duration) *Problem {
	p := problem(http.StatusTooManyRequests, "TooManyRequests", format+": slow down", who, n)
	p.RetryAfterSeconds = int(math.Max(1, math.Ceil(wait.Seconds())))
	return p
}
