package raftnode

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// inboxMessages bounds the peer messages waiting for the loop; a receiver
// that finds it full waits, which holds its stream back (as raft.Node's
// unbuffered channel did).
const inboxMessages = 4096

// inbox is how other goroutines reach the raft loop, the only goroutine
// that touches the RawNode. The loop drains everything queued at each wake
// and steps it before asking for the next Ready, so proposals and messages
// that arrive while a WAL write is under way go into the next Ready
// together (group commit), and a message from a peer reaches raft in one
// goroutine hand-off instead of two (raft.Node runs its own goroutine
// between the receiver and the application's loop).
type inbox struct {
	mu     sync.Mutex
	space  *sync.Cond // signalled when msgs was drained or the inbox closed
	msgs   []*pb.Message
	calls  []func(*raft.RawNode)
	closed bool
	wake   chan struct{} // capacity 1: "something is queued"
}

func newInbox() *inbox {
	in := &inbox{wake: make(chan struct{}, 1)}
	in.space = sync.NewCond(&in.mu)
	return in
}

func (in *inbox) signal() {
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// step queues a message from a peer, waiting while the inbox is full.
func (in *inbox) step(m *pb.Message) error {
	in.mu.Lock()
	for len(in.msgs) >= inboxMessages && !in.closed {
		in.space.Wait()
	}
	if in.closed {
		in.mu.Unlock()
		return ErrStopped
	}
	in.msgs = append(in.msgs, m)
	in.mu.Unlock()
	in.signal()
	return nil
}

// post queues f to run on the loop. It never blocks, so the loop itself
// may post (a peer sender's report while the loop sends); it reports false
// once the loop has stopped.
func (in *inbox) post(f func(*raft.RawNode)) bool {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		return false
	}
	in.calls = append(in.calls, f)
	in.mu.Unlock()
	in.signal()
	return true
}

// take hands the loop everything queued, reusing the slices it returned
// last time.
func (in *inbox) take(msgs []*pb.Message, calls []func(*raft.RawNode)) ([]*pb.Message, []func(*raft.RawNode)) {
	in.mu.Lock()
	msgs, in.msgs = in.msgs, msgs[:0]
	calls, in.calls = in.calls, calls[:0]
	in.mu.Unlock()
	in.space.Broadcast()
	return msgs, calls
}

// close makes further step and post calls fail and releases waiters.
func (in *inbox) close() {
	in.mu.Lock()
	in.closed = true
	in.msgs, in.calls = nil, nil
	in.mu.Unlock()
	in.space.Broadcast()
}

// drainInbox steps every queued message and runs every queued call.
func (n *Node) drainInbox() {
	n.inMsgs, n.inCalls = n.in.take(n.inMsgs, n.inCalls)
	for i, m := range n.inMsgs {
		if err := n.rn.Step(m); err != nil && !errors.Is(err, raft.ErrStepPeerNotFound) {
			n.log.Debug("raft: message not stepped", "type", m.GetType().String(), "from", m.GetFrom(), "err", err)
		}
		n.inMsgs[i] = nil
	}
	for i, f := range n.inCalls {
		f(n.rn)
		n.inCalls[i] = nil
	}
}

// onLoop runs f on the loop and waits for it; false if the loop stopped
// first or ctx ended.
func (n *Node) onLoop(ctx context.Context, f func(*raft.RawNode)) bool {
	done := make(chan struct{})
	if !n.in.post(func(rn *raft.RawNode) { f(rn); close(done) }) {
		return false
	}
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	case <-n.donec:
		return false
	}
}

// propose steps a proposal (normal entry or configuration change) on the
// loop. A proposal raft drops because it knows no leader, or because
// leadership is being handed over, is tried again once a leader is known,
// until ctx ends: raft.Node made such proposals wait the same way.
func (n *Node) propose(ctx context.Context, data []byte, cc pb.ConfChangeI) error {
	for {
		var err error
		ok := n.onLoop(ctx, func(rn *raft.RawNode) {
			if cc != nil {
				err = rn.ProposeConfChange(cc)
			} else {
				err = rn.Propose(data)
			}
		})
		switch {
		case !ok && ctx.Err() != nil:
			return ctx.Err()
		case !ok:
			return raft.ErrStopped
		case !errors.Is(err, raft.ErrProposalDropped):
			return err
		}
		n.mu.Lock()
		lead, leaderc := n.leader, n.leaderc
		n.mu.Unlock()
		wait := n.cfg.TickInterval
		if lead == raft.None {
			wait = n.cfg.LeaderWait
		}
		t := time.NewTimer(wait)
		select {
		case <-leaderc:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		case <-n.donec:
			t.Stop()
			return raft.ErrStopped
		}
		t.Stop()
	}
}
