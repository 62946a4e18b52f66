package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/netnsutil"
	"nexus.dev/nexus/runtime"
)

// Back-off between restarts of a container that keeps exiting: it starts
// at backoffInitial and doubles up to backoffMax; a run of backoffReset
// or longer starts it over.
const (
	backoffInitial = time.Second
	backoffMax     = 5 * time.Minute
	backoffReset   = 10 * time.Minute
	// statusRetryMax caps the wait between attempts to publish a status
	// while the API is unavailable.
	statusRetryMax = 30 * time.Second
)

// supervisor runs one Instance's container through its lifecycle and
// publishes what happens in the Instance's status.
type supervisor struct {
	a     *Agent
	c     *container
	adopt bool

	mu     sync.Mutex
	inst   *types.Instance      // the latest version seen
	status types.InstanceStatus // what the status should say
	dirty  chan struct{}        // status changed (capacity 1)

	removeOnce sync.Once
	removed    chan struct{} // closed when the Instance is gone from this node
	fenceOnce  sync.Once
	fenced     chan struct{} // closed when the node lost every server (fence)
	fenceMsg   string
	done       chan struct{} // closed when run returns
}

func newSupervisor(a *Agent, inst *types.Instance, adopt bool) *supervisor {
	return &supervisor{
		a:       a,
		c:       &container{a: a, id: containerPrefix + inst.UID, dir: a.instanceDir(inst.UID)},
		adopt:   adopt,
		inst:    inst,
		status:  inst.Status,
		dirty:   make(chan struct{}, 1),
		removed: make(chan struct{}),
		fenced:  make(chan struct{}),
		done:    make(chan struct{}),
	}
}

func (s *supervisor) update(inst *types.Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inst = inst
}

func (s *supervisor) instance() *types.Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inst
}

// remove stops the container and removes it, with the Instance's grace
// period; run returns when that is done.
func (s *supervisor) remove() {
	s.removeOnce.Do(func() { close(s.removed) })
}

// fence stops the container for good (as at removal, with its grace
// period) and reports the Instance Stopped with msg once a server is
// reached again; the Instance stays until it is deleted. It is how a node
// cut off from every server makes sure a workload marked stopOnDisconnect
// never runs more copies than asked once its instances are replaced
// elsewhere.
func (s *supervisor) fence(msg string) {
	s.fenceOnce.Do(func() {
		s.mu.Lock()
		s.fenceMsg = msg
		s.mu.Unlock()
		close(s.fenced)
	})
}

// isFenced says whether fence was called.
func (s *supervisor) isFenced() bool {
	select {
	case <-s.fenced:
		return true
	default:
		return false
	}
}

// setStatus changes the status to publish.
func (s *supervisor) setStatus(f func(st *types.InstanceStatus)) {
	s.mu.Lock()
	f(&s.status)
	s.status.ObservedGeneration = s.inst.Generation
	s.mu.Unlock()
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// event records what happened in the Instance's status (nexus describe
// shows it): a repeat of one of the latest events counts it up and makes
// it the latest instead of adding one,
// and only the latest types.MaxInstanceEvents are kept.
func (s *supervisor) event(typ, reason, msg string) {
	if len(msg) > types.MaxEventMessage {
		// Cut on a character boundary.
		msg = strings.ToValidUTF8(msg[:types.MaxEventMessage-len("…")], "") + "…"
	}
	now := time.Now().UTC()
	s.setStatus(func(st *types.InstanceStatus) {
		// A loop (started, exited, started, ...) counts up its events
		// instead of filling the history with copies.
		for i := len(st.Events) - 1; i >= max(0, len(st.Events)-eventLookBack); i-- {
			if e := st.Events[i]; e.Type == typ && e.Reason == reason && e.Message == msg {
				e.Count++
				e.LastTime = now
				st.Events = append(slices.Delete(st.Events, i, i+1), e)
				return
			}
		}
		st.Events = append(st.Events, types.InstanceEvent{Type: typ, Reason: reason, Message: msg, Count: 1, FirstTime: now, LastTime: now})
		if extra := len(st.Events) - types.MaxInstanceEvents; extra > 0 {
			st.Events = slices.Delete(st.Events, 0, extra)
		}
	})
}

// failedEvent records a failed step, with its reason (ImagePullFailed,
// CreateFailed, ...); the message leaves out the next delay, so that
// repeats count up in one event.
func (s *supervisor) failedEvent(err error) {
	reason := "Failed"
	var se *StepError
	if errors.As(err, &se) {
		reason, err = se.Reason, se.Err
	}
	s.event(types.EventWarning, reason, fmt.Sprintf("%v (trying again, the delay doubling up to %v)", err, backoffMax))
}

// eventLookBack is how many of the latest events a new one may repeat.
const eventLookBack = 4

func (s *supervisor) phase(p types.InstancePhase, msg string) {
	s.setStatus(func(st *types.InstanceStatus) {
		st.Phase, st.Message, st.Progress = p, msg, ""
		if p != types.PhaseRunning {
			st.Ready = false
		}
	})
}

func (s *supervisor) log() *slog.Logger {
	inst := s.instance()
	return s.a.log.With("instance", inst.Namespace+"/"+inst.Name, "container", s.c.id)
}

// run is the supervisor's life: until the Instance is removed (then the
// container is stopped and removed) or ctx ends (then the container is
// left running for the next agent to adopt). A fence stops the container
// and leaves the Instance reported Stopped until it is removed.
func (s *supervisor) run(ctx context.Context) {
	defer close(s.done)
	if err := s.c.startLog(); err != nil {
		s.log().Warn("collect the container's output (tried again at its start)", "err", err)
	}
	// pctx is the supervisor's (its status is published while it lasts),
	// lctx the container's, which a fence ends too.
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	lctx, lcancel := context.WithCancel(pctx)
	defer lcancel()
	go func() {
		select {
		case <-s.fenced:
			lcancel()
			select {
			case <-s.removed:
			case <-pctx.Done():
				return
			}
		case <-s.removed:
		case <-pctx.Done():
			return
		}
		pcancel()
	}()
	pubDone := make(chan struct{})
	go func() { defer close(pubDone); s.publish(pctx) }()
	s.live(lctx)
	if pctx.Err() == nil && lctx.Err() != nil {
		s.stopFenced(pctx)
		<-pctx.Done()
	}
	pcancel()
	<-pubDone
	select {
	case <-s.removed:
	default:
		s.c.stopLog(false)
		return // the agent stops; the container stays
	}
	bg := context.WithoutCancel(ctx)
	if err := s.c.stop(bg, s.grace()); err != nil {
		s.log().Warn("stop the container", "err", err)
	}
	if err := s.c.remove(bg); err != nil {
		s.log().Warn("remove the container", "err", err)
	}
	s.c.stopLog(true)
	if err := os.RemoveAll(s.c.dir); err != nil {
		s.log().Warn("remove the instance's files", "err", err)
	}
	s.log().Info("instance removed")
}

// stopFenced stops and deletes the container of a fenced Instance (with
// its grace period, as at removal) and reports it Stopped.
func (s *supervisor) stopFenced(ctx context.Context) {
	bg := context.WithoutCancel(ctx)
	if err := s.c.stop(bg, s.grace()); err != nil {
		s.log().Warn("stop the container of a fenced instance", "err", err)
	}
	if err := s.c.deleteContainer(bg); err != nil {
		s.log().Warn("delete the container of a fenced instance", "err", err)
	}
	s.mu.Lock()
	msg := s.fenceMsg
	s.mu.Unlock()
	s.log().Warn("instance stopped: the node lost every server", "why", msg)
	s.event(types.EventWarning, "Fenced", msg)
	s.setStatus(func(st *types.InstanceStatus) {
		st.Phase, st.Ready, st.Message = types.PhaseStopped, false, msg
	})
}

// grace is the Instance's termination grace period.
func (s *supervisor) grace() time.Duration {
	if g := s.instance().Spec.Template.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return types.DefaultTerminationGracePeriod * time.Second
}

// live prepares, starts and restarts the container until ctx ends. An
// Instance that has finished (succeeded, failed or stopped: its status
// says so, as a previous agent reported it) is not started again.
func (s *supervisor) live(ctx context.Context) {
	if terminal(s.instance().Status.Phase) {
		<-ctx.Done()
		return
	}
	rt := s.a.cfg.Runtime
	delay := backoffInitial
	var pid int
	// exitedWhileAway: an adopted container that ended while no agent
	// ran; its exit is handled as any other before it starts again.
	exitedWhileAway := false
	if s.adopt {
		st, err := rt.State(s.c.id)
		switch {
		case err != nil:
			s.adopt = false
		case st.Status == specs.StateRunning:
			s.c.bundle = st.Bundle
			pid = st.Pid
			if err := s.adoptRunning(ctx, pid); err != nil {
				s.log().Warn("adopt the running container: it is restarted", "err", err)
				s.event(types.EventWarning, "AdoptFailed", fmt.Sprintf("the container running since before the agent started could not be taken over: %v; restarting it", err))
				_ = s.c.stop(ctx, 10*time.Second)
				pid, exitedWhileAway = 0, true
			} else {
				s.log().Info("adopted a running container", "pid", pid)
				s.event(types.EventNormal, "Adopted", fmt.Sprintf("the agent started and took over the running container (pid %d)", pid))
			}
		default:
			s.c.bundle = st.Bundle
			exitedWhileAway = st.Status == specs.StateStopped
		}
	}
	if !s.adopt {
		retrying := ""
		for {
			// A retry keeps the last error in the message until it passes.
			s.phase(types.PhasePreparing, retrying)
			err := s.c.prepare(ctx, s.instance(), func(p string) {
				s.setStatus(func(st *types.InstanceStatus) { st.Progress = p })
			})
			if err == nil {
				s.event(types.EventNormal, "Prepared", "image "+s.instance().Spec.Template.Image+" ready and the root file system prepared")
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.log().Warn("prepare", "err", err)
			s.failedEvent(err)
			s.phase(types.PhasePreparing, fmt.Sprintf("%v (trying again in %v)", err, delay))
			retrying = fmt.Sprintf("%v (trying again now)", err)
			if !sleep(ctx, delay) {
				return
			}
			delay = min(delay*2, backoffMax)
		}
		delay = backoffInitial
	}
	for {
		if pid == 0 && !exitedWhileAway {
			var err error
			if pid, err = s.start(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.log().Warn("start", "err", err)
				s.failedEvent(err)
				s.setStatus(func(st *types.InstanceStatus) {
					st.Phase, st.Ready = types.PhaseStarting, false
					st.Message = fmt.Sprintf("%v (trying again in %v)", err, delay)
				})
				_ = s.c.deleteContainer(context.WithoutCancel(ctx))
				if !sleep(ctx, delay) {
					return
				}
				delay = min(delay*2, backoffMax)
				continue
			}
		}
		started := time.Now()
		var es runtime.ExitStatus
		var reason string
		var err error
		if exitedWhileAway {
			exitedWhileAway = false
			es, err = rt.Wait(ctx, s.c.id)
			started = time.Time{} // how long it ran is not known: no backoff reset
		} else {
			es, reason, err = s.watch(ctx, pid)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log().Warn("wait for the container", "err", err)
		}
		ran := time.Since(started)
		exit := exitInfo(es, reason)
		s.containerExited(es)
		inst := s.instance()
		restart := restartWanted(inst.Spec.Template.RestartPolicy, es, reason)
		s.log().Info("container exited", "status", es.String(), "reason", exit.Reason, "restart", restart)
		if !restart {
			if es.Code == 0 && reason == "" {
				s.event(types.EventNormal, "Completed", describeExit(exit))
			} else {
				s.event(types.EventWarning, exit.Reason, describeExit(exit))
			}
			_ = s.c.deleteContainer(context.WithoutCancel(ctx))
			p := types.PhaseSucceeded
			if es.Code != 0 || reason != "" {
				p = types.PhaseFailed
			}
			s.setStatus(func(st *types.InstanceStatus) {
				st.Phase, st.Ready, st.LastExit = p, false, exit
				st.Message = describeExit(exit)
			})
			<-ctx.Done()
			return
		}
		if ran >= backoffReset {
			delay = backoffInitial
		}
		s.setStatus(func(st *types.InstanceStatus) {
			st.Phase, st.Ready, st.LastExit = types.PhaseStarting, false, exit
			st.Restarts++
			st.Message = fmt.Sprintf("%s; restarting in %v", describeExit(exit), delay)
		})
		s.event(types.EventWarning, "BackOff", fmt.Sprintf("%s; restarting it after a delay that doubles up to %v (restart policy %s)",
			describeExit(exit), backoffMax, cmp.Or(inst.Spec.Template.RestartPolicy, types.RestartAlways)))
		_ = s.c.deleteContainer(context.WithoutCancel(ctx))
		if !sleep(ctx, delay) {
			return
		}
		delay = min(delay*2, backoffMax)
		pid = 0
	}
}

// start creates the container, attaches it to the network and starts it.
func (s *supervisor) start(ctx context.Context) (int, error) {
	s.phase(types.PhaseStarting, "")
	pid, err := s.c.create(ctx)
	if err != nil {
		return 0, err
	}
	var addrs []string
	if n := s.a.net; n != nil {
		inst := s.instance()
		addrs, err = n.Attach(ctx, s.c.id, netnsutil.ProcPath(pid), inst.Spec.Template.Ports)
		if err != nil {
			return 0, stepError("NetworkFailed", err)
		}
	}
	if err := s.a.cfg.Runtime.Start(ctx, s.c.id); err != nil {
		return 0, stepError("StartFailed", err)
	}
	// StartedAt keeps its full precision: it is the one record of when
	// the process started, and bench/orchestration times starts by it.
	started := time.Now().UTC()
	s.setStatus(func(st *types.InstanceStatus) {
		st.Phase, st.Message, st.Progress = types.PhaseRunning, "", ""
		st.StartedAt = started
		st.Addresses = addrs
	})
	msg := "container started"
	if len(addrs) > 0 {
		msg += " with addresses " + strings.Join(addrs, ", ")
	}
	s.event(types.EventNormal, "Started", msg)
	return pid, nil
}

// adoptRunning takes over a container that runs since before this agent
// started: its network attachment is checked and repaired (same
// addresses), and the status says it runs.
func (s *supervisor) adoptRunning(ctx context.Context, pid int) error {
	var addrs []string
	if n := s.a.net; n != nil {
		var err error
		addrs, err = n.Attach(ctx, s.c.id, netnsutil.ProcPath(pid), s.instance().Spec.Template.Ports)
		if err != nil {
			return stepError("NetworkFailed", err)
		}
	}
	s.setStatus(func(st *types.InstanceStatus) {
		st.Phase, st.Progress = types.PhaseRunning, ""
		if st.StartedAt.IsZero() {
			st.StartedAt = time.Now().UTC()
		}
		if addrs != nil {
			st.Addresses = addrs
		}
	})
	return nil
}

// watch waits for the container to exit while its probes run. A failed
// liveness probe stops it (reason "LivenessFailed").
func (s *supervisor) watch(ctx context.Context, pid int) (runtime.ExitStatus, string, error) {
	type result struct {
		es  runtime.ExitStatus
		err error
	}
	exited := make(chan result, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		es, err := s.a.cfg.Runtime.Wait(wctx, s.c.id)
		exited <- result{es, err}
	}()
	inst := s.instance()
	t := &inst.Spec.Template
	pr := &prober{a: s.a, id: s.c.id, pid: pid}
	if t.Readiness != nil {
		go pr.run(wctx, t.Readiness, func(ok bool, err error) {
			s.setStatus(func(st *types.InstanceStatus) {
				if st.Phase == types.PhaseRunning {
					st.Ready = ok
				}
			})
			if ok {
				s.event(types.EventNormal, "Ready", "the readiness probe passes")
			} else {
				s.event(types.EventWarning, "NotReady", fmt.Sprintf("the readiness probe fails: %v", err))
			}
		})
	} else {
		s.setStatus(func(st *types.InstanceStatus) { st.Ready = st.Phase == types.PhaseRunning })
	}
	livenessFailed := make(chan struct{})
	if t.Liveness != nil {
		var once sync.Once
		go pr.run(wctx, t.Liveness, func(ok bool, err error) {
			if !ok {
				s.event(types.EventWarning, "Unhealthy", fmt.Sprintf("the liveness probe fails: %v; stopping the container", err))
				once.Do(func() { close(livenessFailed) })
			}
		})
	}
	select {
	case r := <-exited:
		return r.es, "", r.err
	case <-livenessFailed:
		s.log().Info("liveness probe failed: stopping the container")
		grace := 30 * time.Second
		if g := t.TerminationGracePeriodSeconds; g != nil {
			grace = time.Duration(*g) * time.Second
		}
		if err := s.c.stop(ctx, grace); err != nil && ctx.Err() == nil {
			s.log().Warn("stop after a failed liveness probe", "err", err)
		}
		r := <-exited
		return r.es, "LivenessFailed", r.err
	case <-ctx.Done():
		return runtime.ExitStatus{}, "", ctx.Err()
	}
}

// publish writes the status whenever it changed, retrying while the API
// is unavailable, until ctx ends.
func (s *supervisor) publish(ctx context.Context) {
	delay := 500 * time.Millisecond
	for {
		select {
		case <-s.dirty:
		case <-ctx.Done():
			return
		}
		for {
			s.mu.Lock()
			obj := *s.inst
			obj.Status = s.status
			// event edits the history in place: the copy sent must not share it.
			obj.Status.Events = slices.Clone(s.status.Events)
			s.mu.Unlock()
			// The agent owns a bound Instance's status: written whatever
			// the stored version.
			obj.ResourceVersion = ""
			_, err := s.a.cfg.Client.UpdateStatus(ctx, &obj)
			if err == nil {
				delay = 500 * time.Millisecond
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.log().Warn("publish the instance's status", "err", err, "retry in", delay)
			if !sleep(ctx, delay) {
				return
			}
			delay = min(delay*2, statusRetryMax)
		}
	}
}

// restartWanted applies the restart policy to how the container ended.
func restartWanted(p types.RestartPolicy, es runtime.ExitStatus, reason string) bool {
	switch p {
	case types.RestartNever:
		return false
	case types.RestartOnFailure:
		return es.Code != 0 || reason != ""
	default:
		return true
	}
}

func exitInfo(es runtime.ExitStatus, reason string) *types.ExitInfo {
	e := &types.ExitInfo{Code: int32(es.Code), OOMKilled: es.OOMKilled, FinishedAt: time.Now().UTC().Truncate(time.Second)}
	if es.Signal != 0 {
		e.Signal = es.Signal.String()
	}
	switch {
	case reason != "":
		e.Reason = reason
	case es.OOMKilled:
		e.Reason = "OOMKilled"
	case !es.Known:
		e.Reason = "Unknown"
	case es.Code == 0:
		e.Reason = "Completed"
	default:
		e.Reason = "Error"
	}
	return e
}

func describeExit(e *types.ExitInfo) string {
	switch e.Reason {
	case "OOMKilled":
		return fmt.Sprintf("killed for using more memory than its limit (exit code %d): raise resources.limits.memory", e.Code)
	case "LivenessFailed":
		return fmt.Sprintf("stopped after its liveness probe failed (exit code %d)", e.Code)
	case "Unknown":
		return "exited while the agent was away; its exit status was not recorded"
	}
	if e.Signal != "" {
		return fmt.Sprintf("killed by %s (exit code %d)", e.Signal, e.Code)
	}
	return fmt.Sprintf("exited with code %d", e.Code)
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// terminal reports whether an Instance in phase p has finished for good.
func terminal(p types.InstancePhase) bool {
	return p == types.PhaseSucceeded || p == types.PhaseFailed || p == types.PhaseStopped
}
