package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
)

// timeline is what happened to one Instance, in this process's clock (the
// same as nexus up's: one machine).
type timeline struct {
	t0      time.Time // just before the create request was sent
	created time.Time // the create returned
	bound   time.Time // the first event with spec.nodeName
	running time.Time // the first event with phase Running
	ready   time.Time // the first event with status.ready
	serving time.Time // the first 200 from its IPv4 address
	// started is status.startedAt: when the agent's runtime.Start returned.
	started   time.Time
	addresses []string
	ipv4      string
	phase     types.InstancePhase
	message   string
	deleted   bool
}

func (t *timeline) failed() bool {
	return t.phase == types.PhaseFailed || t.phase == types.PhaseSucceeded
}

// tracker records the watch events of every Instance as they arrive.
type tracker struct {
	mu      sync.Mutex
	byName  map[string]*timeline
	changed chan struct{} // closed (and replaced) on every change
}

func newTracker() *tracker {
	return &tracker{byName: map[string]*timeline{}, changed: make(chan struct{})}
}

func (tr *tracker) notifyLocked() {
	close(tr.changed)
	tr.changed = make(chan struct{})
}

func (tr *tracker) get(name string) *timeline {
	tl := tr.byName[name]
	if tl == nil {
		tl = &timeline{}
		tr.byName[name] = tl
	}
	return tl
}

// expect starts a fresh timeline for name (a name may be used again in a
// later round).
func (tr *tracker) expect(name string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.byName[name] = &timeline{}
}

func (tr *tracker) update(name string, f func(*timeline)) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	f(tr.get(name))
	tr.notifyLocked()
}

// forget drops every timeline (between rounds, once all are deleted).
func (tr *tracker) forget() {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.byName = map[string]*timeline{}
}

// observe records an event received at at.
func (tr *tracker) observe(ev client.Event, at time.Time) {
	inst, ok := ev.Object.(*types.Instance)
	if !ok {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tl := tr.get(inst.Name)
	defer tr.notifyLocked()
	if ev.Type == client.Deleted {
		tl.deleted = true
		return
	}
	st := &inst.Status
	tl.phase, tl.message = st.Phase, st.Message
	if tl.bound.IsZero() && inst.Spec.NodeName != "" {
		tl.bound = at
	}
	if tl.running.IsZero() && st.Phase == types.PhaseRunning {
		tl.running, tl.started, tl.addresses = at, st.StartedAt, st.Addresses
		for _, a := range st.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil && ip.Is4() {
				tl.ipv4 = a
			}
		}
	}
	if tl.ready.IsZero() && st.Ready {
		tl.ready = at
	}
}

// wait returns name's timeline once done says so, or an error after limit.
func (tr *tracker) wait(ctx context.Context, name string, limit time.Duration, done func(*timeline) bool) (timeline, error) {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		tr.mu.Lock()
		tl := *tr.get(name)
		ch := tr.changed
		tr.mu.Unlock()
		if done(&tl) {
			return tl, nil
		}
		select {
		case <-ch:
		case <-timer.C:
			return tl, fmt.Errorf("nothing after %s (phase %q, message %q)", limit, tl.phase, tl.message)
		case <-ctx.Done():
			return tl, ctx.Err()
		}
	}
}

// count returns how many live instances whose name starts with prefix
// are running, and the message of one that is not.
func (tr *tracker) count(prefix string) (running, total int, why string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for name, tl := range tr.byName {
		if !strings.HasPrefix(name, prefix) || tl.deleted {
			continue
		}
		total++
		if !tl.running.IsZero() {
			running++
		} else if tl.message != "" {
			why = name + ": " + string(tl.phase) + ": " + tl.message
		}
	}
	return running, total, why
}

// changes is closed at the next change.
func (tr *tracker) changes() <-chan struct{} {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.changed
}
