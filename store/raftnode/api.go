package raftnode

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// Propose replicates data and waits until this member has applied it,
// returning what StateMachine.Apply returned. raft forwards a follower's
// proposal to the leader. Without a leader for Config.LeaderWait it fails
// with ErrNoLeader; if the leader is lost while the proposal is pending the
// error says its outcome is unknown. When another leader takes over while
// it is pending and it is still not applied half an election timeout later
// (a proposal forwarded to a leader that failed just then is never heard
// of again; one the new leader has is applied within a heartbeat or two),
// it fails with ErrTimeoutLeaderChanged: it may or may not be applied. Any
// other proposal not applied within Config.RequestTimeout fails with
// ErrTimeout. ctx can end the wait sooner.
func (n *Node) Propose(ctx context.Context, data []byte) (any, error) {
	if err := n.waitLeader(ctx); err != nil {
		return nil, err
	}
	req := n.seq.Add(1)
	buf := make([]byte, proposalHeader+len(data))
	binary.BigEndian.PutUint64(buf[0:8], n.id)
	binary.BigEndian.PutUint64(buf[8:16], req)
	copy(buf[proposalHeader:], data)
	ch := make(chan any, 1)
	n.mu.Lock()
	n.proposals[req] = ch
	n.mu.Unlock()
	forget := func() {
		n.mu.Lock()
		delete(n.proposals, req)
		n.mu.Unlock()
	}
	// raft takes proposals only while it knows a leader.
	pctx, cancel := context.WithTimeout(ctx, n.cfg.LeaderWait)
	err := n.propose(pctx, buf, nil)
	cancel()
	if err != nil {
		forget()
		return nil, n.proposeError(ctx, err)
	}
	// Give up when two checks a LeaderWait apart both find no leader: an
	// election in between is not enough. Give up too after RequestTimeout:
	// an entry forwarded to a leader that failed just then never arrives.
	check := time.NewTicker(n.cfg.LeaderWait)
	defer check.Stop()
	timeout := time.NewTimer(n.cfg.RequestTimeout)
	defer timeout.Stop()
	n.mu.Lock()
	leaderAtStart, changed := n.leader, n.leaderc
	n.mu.Unlock()
	// settled fires half an election timeout after another leader took
	// over (five heartbeats):
	// without it a write forwarded to a leader that died held its caller
	// for the whole RequestTimeout (5 s and more), well after the new
	// leader took writes again.
	var settled <-chan time.Time
	leaderless := 0
	for {
		select {
		case res := <-ch:
			return res, nil
		case <-changed:
			n.mu.Lock()
			lead := n.leader
			changed = n.leaderc
			n.mu.Unlock()
			if settled == nil && lead != raft.None && lead != leaderAtStart {
				t := time.NewTimer(time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval / 2)
				defer t.Stop()
				settled = t.C
			}
		case <-settled:
			forget()
			return nil, fmt.Errorf("%w (%x, now %x) and it was not applied half an election timeout later; it may or may not be applied", ErrTimeoutLeaderChanged, leaderAtStart, n.Leader())
		case <-timeout.C:
			forget()
			if lead := n.Leader(); lead != leaderAtStart {
				return nil, fmt.Errorf("%w (%x, now %x) within %v; it may or may not be applied", ErrTimeoutLeaderChanged, leaderAtStart, lead, n.cfg.RequestTimeout)
			}
			return nil, fmt.Errorf("%w after %v; it may or may not be applied", ErrTimeout, n.cfg.RequestTimeout)
		case <-check.C:
			if n.Leader() != raft.None {
				leaderless = 0
				continue
			}
			if leaderless++; leaderless >= 2 {
				forget()
				return nil, fmt.Errorf("%w: the leader was lost while the proposal was pending; it may or may not be applied", ErrNoLeader)
			}
		case <-ctx.Done():
			forget()
			return nil, ctx.Err()
		case <-n.stopc:
			forget()
			return nil, n.stoppedErr()
		}
	}
}

func (n *Node) proposeError(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, raft.ErrProposalDropped):
		return fmt.Errorf("%w: raft did not take the proposal (%v): the leader was lost or is handing over; retry", ErrNoLeader, err)
	case errors.Is(err, raft.ErrStopped):
		return n.stoppedErr()
	}
	return fmt.Errorf("propose: %w", err)
}

// ReadIndex is a linearizable read barrier: it returns once this member
// has applied everything the leader had committed when ReadIndex was
// called, so a read of the local state machine afterwards sees every write
// acknowledged before the call.
func (n *Node) ReadIndex(ctx context.Context) error {
	// raft drops a read request when leadership changes under it; ask
	// again after an election timeout.
	retry := time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval
	for {
		if err := n.waitLeader(ctx); err != nil {
			return err
		}
		req := n.seq.Add(1)
		ch := make(chan uint64, 1)
		n.mu.Lock()
		n.reads[req] = ch
		n.mu.Unlock()
		rctx := binary.BigEndian.AppendUint64(nil, req)
		if !n.in.post(func(rn *raft.RawNode) { rn.ReadIndex(rctx) }) {
			n.forgetRead(req)
			return n.stoppedErr()
		}
		t := time.NewTimer(retry)
		select {
		case index := <-ch:
			t.Stop()
			return n.waitApplied(ctx, index)
		case <-t.C:
			n.forgetRead(req)
		case <-ctx.Done():
			t.Stop()
			n.forgetRead(req)
			return ctx.Err()
		case <-n.stopc:
			t.Stop()
			n.forgetRead(req)
			return n.stoppedErr()
		}
	}
}

func (n *Node) forgetRead(req uint64) {
	n.mu.Lock()
	delete(n.reads, req)
	n.mu.Unlock()
}

func (n *Node) waitApplied(ctx context.Context, index uint64) error {
	n.mu.Lock()
	if n.applied >= index {
		n.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	n.appliedWaiters = append(n.appliedWaiters, appliedWaiter{index: index, ch: ch})
	n.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopc:
		return n.stoppedErr()
	}
}

// waitLeader waits up to LeaderWait for a leader to be known.
func (n *Node) waitLeader(ctx context.Context) error {
	t := time.NewTimer(n.cfg.LeaderWait)
	defer t.Stop()
	for {
		n.mu.Lock()
		lead, ch := n.leader, n.leaderc
		n.mu.Unlock()
		if lead != raft.None {
			return nil
		}
		select {
		case <-ch:
		case <-t.C:
			return fmt.Errorf("%w after %v: fewer than a quorum of members are reachable, or an election is still running; check the members and their connectivity, then retry", ErrNoLeader, n.cfg.LeaderWait)
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stopc:
			return n.stoppedErr()
		}
	}
}

// Leader returns the ID of the leader this member knows of, 0 if none.
// Unlike Status it does not wait for the raft goroutine.
func (n *Node) Leader() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leader
}

func (n *Node) stoppedErr() error {
	if err := n.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrStopped, err)
	}
	return ErrStopped
}

// TransferLeadership asks the leader to hand leadership to member to and
// waits until to leads. The leader first brings to's log up to date and
// stops taking proposals meanwhile.
func (n *Node) TransferLeadership(ctx context.Context, to uint64) error {
	retry := time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval
	for {
		if err := n.waitLeader(ctx); err != nil {
			return err
		}
		n.mu.Lock()
		lead, ch := n.leader, n.leaderc
		n.mu.Unlock()
		if lead == to {
			return nil
		}
		// A follower forwards the request to the leader it knows.
		n.in.post(func(rn *raft.RawNode) { rn.TransferLeader(to) })
		t := time.NewTimer(retry)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("transfer leadership to %x: %w", to, ctx.Err())
		case <-n.stopc:
			t.Stop()
			return n.stoppedErr()
		}
		t.Stop()
	}
}

// AddMember adds p as a voting member. Start p with Join once this returns.
func (n *Node) AddMember(ctx context.Context, p Peer) error {
	return n.changeConf(ctx, pb.ConfChangeAddNode, p)
}

// AddLearner adds p as a learner: it receives the log (a snapshot first if
// it is far behind) but does not vote until PromoteMember.
func (n *Node) AddLearner(ctx context.Context, p Peer) error {
	return n.changeConf(ctx, pb.ConfChangeAddLearnerNode, p)
}

// PromoteMember makes a learner a voting member.
func (n *Node) PromoteMember(ctx context.Context, id uint64) error {
	n.mu.Lock()
	m, ok := n.members[id]
	n.mu.Unlock()
	if !ok || !m.Learner {
		return fmt.Errorf("promote member %x: it is not a learner of this cluster", id)
	}
	return n.changeConf(ctx, pb.ConfChangeAddNode, m.Peer)
}

// RemoveMember removes a member (voter or learner).
func (n *Node) RemoveMember(ctx context.Context, id uint64) error {
	n.mu.Lock()
	m, ok := n.members[id]
	n.mu.Unlock()
	if !ok {
		return fmt.Errorf("remove member %x: no such member", id)
	}
	return n.changeConf(ctx, pb.ConfChangeRemoveNode, m.Peer)
}

// changeConf proposes one configuration change and waits until this member
// has applied it. raft refuses a change while another is pending; such a
// refusal is only seen as ctx ending, so changes from this member are
// serialised.
func (n *Node) changeConf(ctx context.Context, typ pb.ConfChangeType, p Peer) error {
	if p.ID == 0 {
		return errors.New("change membership: member ID must not be 0")
	}
	n.confMu.Lock()
	defer n.confMu.Unlock()
	if err := n.waitLeader(ctx); err != nil {
		return err
	}
	req := n.seq.Add(1)
	c, err := json.Marshal(confContext{Member: p, From: n.id, Req: req})
	if err != nil {
		return err
	}
	cc := &pb.ConfChangeV2{
		Changes: []*pb.ConfChangeSingle{{Type: new(typ), NodeId: new(p.ID)}},
		Context: c,
	}
	ch := make(chan struct{})
	n.mu.Lock()
	n.confChanges[req] = ch
	n.mu.Unlock()
	forget := func() {
		n.mu.Lock()
		delete(n.confChanges, req)
		n.mu.Unlock()
	}
	// raft drops a change proposed while another is still pending at the
	// leader, without telling anyone (the leader may not have applied the
	// previous change yet even though this member has). So a change not
	// applied within two election timeouts is proposed again, unless the
	// configuration already shows it; proposing one twice is harmless
	// (raft refuses the second while the first is pending, and adding a
	// present member or removing an absent one changes nothing).
	// A failed retry is not the caller's error: the first proposal may
	// still be applied, and ctx bounds the wait.
	pctx, cancel := context.WithTimeout(ctx, n.cfg.LeaderWait)
	err = n.propose(pctx, nil, cc)
	cancel()
	if err != nil {
		forget()
		return fmt.Errorf("%s %x: %w", typ, p.ID, n.proposeError(ctx, err))
	}
	retry := time.NewTicker(2 * time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval)
	defer retry.Stop()
	for {
		select {
		case <-ch:
			return nil
		case <-retry.C:
			if n.confShows(typ, p.ID) {
				forget()
				return nil
			}
			pctx, cancel := context.WithTimeout(ctx, n.cfg.LeaderWait)
			_ = n.propose(pctx, nil, cc)
			cancel()
		case <-ctx.Done():
			forget()
			return fmt.Errorf("%s %x: %w", typ, p.ID, ctx.Err())
		case <-n.stopc:
			forget()
			return n.stoppedErr()
		}
	}
}

// confShows reports whether the applied configuration already has the
// effect of change typ on member id.
func (n *Node) confShows(typ pb.ConfChangeType, id uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	m, ok := n.members[id]
	switch typ {
	case pb.ConfChangeAddNode:
		return ok && !m.Learner
	case pb.ConfChangeAddLearnerNode:
		return ok
	case pb.ConfChangeRemoveNode:
		return !ok
	}
	return false
}

// Members returns the current configuration, ordered by ID.
func (n *Node) Members() []Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.memberListLocked()
}

// Status is a member's view of the cluster.
type Status struct {
	ID      uint64
	Leader  uint64
	Term    uint64
	Commit  uint64
	Applied uint64
	// State is the raft role: "StateFollower", "StateCandidate",
	// "StateLeader", "StatePreCandidate".
	State string
}

// Status returns the member's raft status.
func (n *Node) Status() Status {
	var st raft.Status
	n.onLoop(context.Background(), func(rn *raft.RawNode) { st = rn.Status() })
	n.mu.Lock()
	applied := n.applied
	n.mu.Unlock()
	return Status{
		ID: n.id, Leader: st.Lead, Term: st.GetTerm(), Commit: st.GetCommit(), Applied: applied,
		State: st.RaftState.String(),
	}
}

// Term returns the newest raft term this member has saved. Unlike Status
// it does not wait for the raft goroutine, so it suits every response.
func (n *Node) Term() uint64 { return n.term.Load() }

// ID returns the member's raft ID.
func (n *Node) ID() uint64 { return n.id }
