package raftnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/transport"
	"nexus.dev/nexus/transport/transporttest"
)

// TestReplication proposes 1,000 entries concurrently through all three
// members and checks that every member applied the same sequence, holding
// each entry exactly once.
func TestReplication(t *testing.T) {
	c := newCluster(t, 3, fastConfig(), false, nil)
	c.waitLeader(10 * time.Second)

	const total, workers = 1000, 48
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ms := c.running()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			m := ms[w%len(ms)]
			for {
				i := next.Add(1)
				if i > total {
					return
				}
				res, err := m.node.Propose(ctx, fmt.Appendf(nil, "e%04d", i))
				if err != nil {
					errs <- fmt.Errorf("propose e%04d through member %d: %w", i, m.peer.ID, err)
					return
				}
				if _, ok := res.(uint64); !ok {
					errs <- fmt.Errorf("propose e%04d: Apply result %v, want its index", i, res)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	log := c.waitConverged(20*time.Second, total)
	if len(log) != total {
		t.Fatalf("members applied %d entries, want %d", len(log), total)
	}
	seen := map[string]bool{}
	for _, e := range log {
		if seen[e] {
			t.Fatalf("entry %s applied twice", e)
		}
		seen[e] = true
	}
}

// TestLeaderFailover kills the leader, expects a new one quickly and
// proposals to go on, then restarts the old leader from its data dir and
// expects it to catch up from its WAL and the new leader.
func TestLeaderFailover(t *testing.T) {
	cfg := fastConfig()
	c := newCluster(t, 3, cfg, true, nil)
	lead := c.waitLeader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 50 {
		if err := propose(ctx, lead, fmt.Sprintf("a%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c.waitConverged(10*time.Second, 50)

	c.stop(lead)
	killed := time.Now()
	newLead := c.waitLeader(5 * time.Second)
	t.Logf("new leader %d elected %v after the old leader was killed", newLead.peer.ID, time.Since(killed).Round(time.Millisecond))
	if newLead == lead {
		t.Fatal("the stopped member is still leader")
	}
	for i := range 50 {
		if err := propose(ctx, c.running()[i%2], fmt.Sprintf("b%d", i)); err != nil {
			t.Fatal(err)
		}
	}

	c.start(lead, false, nil)
	if got := lead.sm.AppliedIndex(); got == 0 {
		t.Fatal("the restarted member's state machine lost its applied index")
	}
	log := c.waitConverged(20*time.Second, 100)
	if len(log) != 100 {
		t.Fatalf("converged on %d entries, want 100", len(log))
	}
	c.waitLeader(10 * time.Second)
	if err := propose(ctx, lead, "after-restart"); err != nil {
		t.Fatalf("propose through the restarted member: %v", err)
	}
	c.waitConverged(10*time.Second, 101)
}

// TestSnapshotLearnerMembership compacts the log with frequent snapshots,
// adds a learner that can only catch up from a snapshot, promotes it and
// removes another member.
func TestSnapshotLearnerMembership(t *testing.T) {
	cfg := fastConfig()
	cfg.SnapshotEvery, cfg.KeepEntries = 20, 5
	c := newCluster(t, 3, cfg, false, nil)
	lead := c.waitLeader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 100 {
		if err := propose(ctx, lead, fmt.Sprintf("s%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c.waitConverged(10*time.Second, 100)
	snaps, _ := filepath.Glob(filepath.Join(lead.dir, "raft", "snap", "*.snap"))
	if len(snaps) == 0 || len(snaps) > snapshotsKept {
		t.Fatalf("leader holds %d snapshot files, want 1..%d", len(snaps), snapshotsKept)
	}
	if first, _ := lead.node.storage.FirstIndex(); first < 50 {
		t.Fatalf("leader's log starts at %d: not compacted", first)
	}

	learner := c.newMember(4, nil)
	if err := lead.node.AddLearner(ctx, learner.peer); err != nil {
		t.Fatal(err)
	}
	var peers []Peer
	for _, m := range c.running() {
		peers = append(peers, m.peer)
	}
	c.start(learner, true, peers)
	c.waitConverged(20*time.Second, 100)
	if learner.sm.restores == 0 {
		t.Fatal("the learner caught up without a snapshot; the log was not compacted enough to test that")
	}
	if m := memberByID(lead.node.Members(), 4); m == nil || !m.Learner {
		t.Fatalf("member 4 is %+v, want a learner", m)
	}

	if err := lead.node.PromoteMember(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if m := memberByID(lead.node.Members(), 4); m == nil || m.Learner {
		t.Fatalf("member 4 is %+v after promotion, want a voter", m)
	}
	var victim *member
	for _, m := range c.running() {
		if m != lead && m != learner {
			victim = m
			break
		}
	}
	if err := lead.node.RemoveMember(ctx, victim.peer.ID); err != nil {
		t.Fatal(err)
	}
	c.stop(victim)
	if m := memberByID(lead.node.Members(), victim.peer.ID); m != nil {
		t.Fatalf("removed member still listed: %+v", m)
	}
	for i := range 30 {
		if err := propose(ctx, learner, fmt.Sprintf("p%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c.waitConverged(10*time.Second, 130)
	// Three voters remain (two old, the promoted learner): losing one of
	// the two old ones must still leave a quorum, which needs member 4.
	if got := len(learner.node.Members()); got != 3 {
		t.Fatalf("the new member sees %d members, want 3", got)
	}
}

func memberByID(ms []Member, id uint64) *Member {
	for _, m := range ms {
		if m.ID == id {
			return &m
		}
	}
	return nil
}

// TestReadIndex writes through the leader and reads on a follower after a
// ReadIndex barrier: the follower's state machine must hold the write.
func TestReadIndex(t *testing.T) {
	c := newCluster(t, 3, fastConfig(), false, nil)
	lead := c.waitLeader(10 * time.Second)
	var follower *member
	for _, m := range c.running() {
		if m != lead {
			follower = m
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 30 {
		v := fmt.Sprintf("r%d", i)
		if _, err := lead.node.Propose(ctx, []byte(v)); err != nil {
			t.Fatal(err)
		}
		if err := follower.node.ReadIndex(ctx); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(follower.sm.snapshot(), v) {
			t.Fatalf("after ReadIndex the follower does not see %s, acknowledged before it", v)
		}
	}
}

// TestTransferLeadership hands leadership to a chosen follower.
func TestTransferLeadership(t *testing.T) {
	c := newCluster(t, 3, fastConfig(), false, nil)
	lead := c.waitLeader(10 * time.Second)
	var to *member
	for _, m := range c.running() {
		if m != lead {
			to = m
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := lead.node.TransferLeadership(ctx, to.peer.ID); err != nil {
		t.Fatal(err)
	}
	if got := c.waitLeader(5 * time.Second); got != to {
		t.Fatalf("leader is %d, want %d", got.peer.ID, to.peer.ID)
	}
}

// TestDurability stops every member abruptly while proposals are in flight,
// restarts them all and checks that every acknowledged proposal survived.
func TestDurability(t *testing.T) {
	c := newCluster(t, 3, fastConfig(), true, nil)
	c.waitLeader(10 * time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	for w := range 12 {
		m := c.running()[w%3]
		node := m.node
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				v := fmt.Sprintf("w%d-%d", w, i)
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := node.Propose(pctx, []byte(v))
				pcancel()
				if err != nil {
					return
				}
				mu.Lock()
				acked = append(acked, v)
				mu.Unlock()
			}
		})
	}
	time.Sleep(1500 * time.Millisecond)
	for _, m := range c.running() {
		c.stop(m)
	}
	cancel()
	wg.Wait()
	if len(acked) < 50 {
		t.Fatalf("only %d proposals acknowledged before the stop", len(acked))
	}
	for _, m := range c.members {
		c.start(m, false, nil)
	}
	c.waitLeader(10 * time.Second)
	log := c.waitConverged(20*time.Second, len(acked))
	have := map[string]bool{}
	for _, e := range log {
		have[e] = true
	}
	for _, v := range acked {
		if !have[v] {
			t.Fatalf("acknowledged proposal %s lost after a full restart (%d acknowledged, %d applied)", v, len(acked), len(log))
		}
	}
	t.Logf("%d acknowledged proposals, %d applied after restart", len(acked), len(log))
}

// TestGroupCommit sends many concurrent proposals to a one-member cluster
// and counts the WAL's fsyncs: proposals must share them.
func TestGroupCommit(t *testing.T) {
	c := newCluster(t, 1, fastConfig(), false, nil)
	m := c.waitLeader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before := m.node.wal.Syncs()
	const n = 500
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if _, err := m.node.Propose(ctx, fmt.Appendf(nil, "g%d", i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	syncs := m.node.wal.Syncs() - before
	t.Logf("%d concurrent proposals took %d fsyncs (%.1f proposals per fsync)", n, syncs, float64(n)/float64(syncs))
	if syncs >= n/2 {
		t.Fatalf("%d proposals took %d fsyncs: no group commit", n, syncs)
	}
}

// TestNoLeaderFailsFast starts one member of a three-member cluster alone:
// a proposal must fail with ErrNoLeader within a bounded time.
func TestNoLeaderFailsFast(t *testing.T) {
	cfg := fastConfig()
	cfg.LeaderWait = 500 * time.Millisecond
	ca, err := transporttest.NewCA("raft test CA")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, ca: ca, members: map[uint64]*member{}, base: cfg,
		tune: transport.Tuning{IdleTimeout: 2 * time.Second, HandshakeTimeout: time.Second}}
	var peers []Peer
	for id := uint64(1); id <= 3; id++ {
		peers = append(peers, c.newMember(id, nil).peer)
	}
	t.Cleanup(c.stopAll)
	c.start(c.members[1], false, peers)
	start := time.Now()
	_, err = c.members[1].node.Propose(context.Background(), []byte("x"))
	if !errors.Is(err, ErrNoLeader) {
		t.Fatalf("Propose without a quorum: %v, want ErrNoLeader", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Propose without a quorum took %v to fail", d)
	}
	t.Logf("failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
}

// TestOnlyServersSpeakRaft checks that an identity that is not a server of
// the cluster cannot open the raft service.
func TestOnlyServersSpeakRaft(t *testing.T) {
	c := newCluster(t, 1, fastConfig(), false, nil)
	m := c.waitLeader(10 * time.Second)
	for _, id := range []identity.ID{identity.Node(testCluster, "agent1"), identity.Server("other.cluster", "m1")} {
		cert, err := c.ca.IssueValid(id)
		if err != nil {
			t.Fatal(err)
		}
		d, err := transport.NewDialer(transport.DialerConfig{Credentials: transporttest.NewCredentials(c.ca, cert)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		st, err := d.Stream(ctx, transport.Target{Addr: m.peer.Addr, Service: ALPN, Verify: AuthorizePeer(testCluster)}, methodMessages, nil)
		if err == nil {
			// The refusal may come at the first exchange on the stream.
			st.CloseSend()
			_, err = st.Recv()
		}
		cancel()
		d.Close()
		if err == nil {
			t.Fatalf("%s spoke %s", id, ALPN)
		}
		t.Logf("%s refused: %v", id, err)
	}
}

// TestCorruptWALRefusesStart damages the middle of a member's WAL: the
// member must refuse to start, naming the file and offset.
func TestCorruptWALRefusesStart(t *testing.T) {
	c := newCluster(t, 1, fastConfig(), false, nil)
	m := c.waitLeader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 20 {
		if _, err := m.node.Propose(ctx, fmt.Appendf(nil, "c%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c.stop(m)
	segs, _ := filepath.Glob(filepath.Join(m.dir, "raft", "wal", "*.wal"))
	if len(segs) != 1 {
		t.Fatalf("want one WAL segment, have %v", segs)
	}
	f, err := os.OpenFile(segs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("garbage!"), 60); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cfg := m.cfg
	cfg.StateMachine = newLogSM(t, "")
	_, err = Start(context.Background(), cfg)
	if err == nil {
		t.Fatal("started on a corrupt WAL")
	}
	t.Logf("refused: %v", err)
	for _, want := range []string{segs[0], "offset"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not name %q", err, want)
		}
	}
}

// TestSoleVoterCampaignsAtOnce: a one-member cluster elects itself without
// waiting out an election timeout, on a fresh start and after a restart.
// The timeout here is 100 s, far beyond the test's wait.
func TestSoleVoterCampaignsAtOnce(t *testing.T) {
	c := newCluster(t, 1, Config{TickInterval: time.Second, ElectionTicks: 100}, true, nil)
	m := c.waitLeader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.node.Propose(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	c.stop(m)
	c.start(m, false, nil)
	c.waitLeader(10 * time.Second)
}

// TestMemberRemovesItself removes a follower through its own API and then
// the leader through its own: each call returns once the change is
// applied, the removed member stops with ErrRemoved, and the rest go on.
// Before, a follower that proposed its own removal never heard that it
// committed (the leader dropped its queue with the sender) and the call
// hung; one that did hear went on serving and waited forever on reads.
func TestMemberRemovesItself(t *testing.T) {
	c := newCluster(t, 4, fastConfig(), false, nil)
	lead := c.waitLeader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := propose(ctx, lead, "before"); err != nil {
		t.Fatal(err)
	}
	var follower *member
	for _, m := range c.running() {
		if m != lead {
			follower = m
			break
		}
	}
	for _, victim := range []*member{follower, lead} {
		if err := victim.node.RemoveMember(ctx, victim.peer.ID); err != nil {
			t.Fatalf("member %d removing itself: %v", victim.peer.ID, err)
		}
		select {
		case <-victim.node.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("member %d still runs after applying its own removal", victim.peer.ID)
		}
		if err := victim.node.Err(); !errors.Is(err, ErrRemoved) {
			t.Fatalf("member %d stopped with %v, want ErrRemoved", victim.peer.ID, err)
		}
		if err := propose(ctx, victim, "after"); !errors.Is(err, ErrStopped) {
			t.Fatalf("a removed member took a proposal: %v", err)
		}
		c.stop(victim)
	}
	lead = c.waitLeader(10 * time.Second)
	if err := propose(ctx, lead, "still-two"); err != nil {
		t.Fatal(err)
	}
	if got := len(lead.node.Members()); got != 2 {
		t.Fatalf("%d members left, want 2", got)
	}
}

// TestProposalLostWithItsLeaderTimesOut: a follower forwards a proposal to
// a leader that dies before it handles it. Raft never sees it again, so
// Propose must give up (with a context that has no deadline) instead of
// waiting forever, and say the leader changed: an election timeout after
// the new leader took over, not only after RequestTimeout, so a caller
// can retry while the new leader takes writes.
func TestProposalLostWithItsLeaderTimesOut(t *testing.T) {
	cfg := fastConfig()
	cfg.RequestTimeout = 30 * time.Second
	c := newCluster(t, 3, cfg, false, nil)
	lead := c.waitLeader(10 * time.Second)
	var follower *member
	for _, m := range c.running() {
		if m != lead {
			follower = m
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := propose(ctx, follower, "before"); err != nil {
		t.Fatal(err)
	}
	// Hold the leader's loop, so that the forwarded proposal waits in its
	// inbox; then take it out, as if the leader had died with it, and stop
	// the leader. (Stopping the leader first and proposing then lost the
	// proposal only if the follower still knew the old leader; when it had
	// already started an election, the proposal waited for the new leader
	// and succeeded.)
	held, release := make(chan struct{}), make(chan struct{})
	if !lead.node.in.post(func(*raft.RawNode) { close(held); <-release }) {
		t.Fatal("the leader's loop has stopped")
	}
	<-held
	start := time.Now()
	result := make(chan error, 1)
	go func() {
		_, err := follower.node.Propose(context.Background(), []byte("lost"))
		result <- err
	}()
	if !takeProposal(lead.node.in, follower.peer.ID, 10*time.Second) {
		close(release)
		t.Fatal("the follower's proposal did not reach the leader within 10s")
	}
	close(release)
	c.stop(lead)
	err := <-result
	took := time.Since(start)
	switch {
	case !errors.Is(err, ErrTimeoutLeaderChanged):
		t.Fatalf("Propose: %v, want ErrTimeoutLeaderChanged", err)
	case took > 6*time.Second:
		t.Fatalf("Propose gave up after %v: the next leader was elected within an election timeout or two (0.2-0.4 s) and the proposal was not applied another 0.2 s on", took)
	}
	t.Logf("%v after %v", err, took.Round(time.Millisecond))
	// The survivors elect a leader and go on, without the lost entry.
	m := c.waitLeader(10 * time.Second)
	if err := propose(ctx, m, "after"); err != nil {
		t.Fatal(err)
	}
	if log := c.waitConverged(10*time.Second, 2); slices.Contains(log, "lost") {
		t.Fatalf("the lost proposal was applied: %q", log)
	}
}

// takeProposal waits until in holds a proposal forwarded by from and
// removes it.
func takeProposal(in *inbox, from uint64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		in.mu.Lock()
		i := slices.IndexFunc(in.msgs, func(m *pb.Message) bool { return m.GetType() == pb.MsgProp && m.GetFrom() == from })
		if i >= 0 {
			in.msgs = slices.Delete(in.msgs, i, i+1)
		}
		in.mu.Unlock()
		if i >= 0 {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

// TestConcurrentMembershipChanges: two members each add a learner at the
// same moment. The leader drops whichever change arrives while the other
// is still pending, without telling its proposer; the proposer must notice
// and propose it again rather than wait for its deadline.
func TestConcurrentMembershipChanges(t *testing.T) {
	c := newCluster(t, 3, fastConfig(), false, nil)
	lead := c.waitLeader(10 * time.Second)
	var followers []*member
	for _, m := range c.running() {
		if m != lead {
			followers = append(followers, m)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := make(chan error, 2)
	for i, f := range followers {
		p := Peer{ID: uint64(10 + i), Name: fmt.Sprintf("l%d", i), Addr: "[::1]:1"}
		go func() { errs <- f.node.AddLearner(ctx, p) }()
	}
	for range followers {
		if err := <-errs; err != nil {
			t.Fatalf("AddLearner: %v", err)
		}
	}
	// Each call returned once its own member applied the change; the
	// leader may apply a moment later.
	deadline := time.Now().Add(5 * time.Second)
	for _, id := range []uint64{10, 11} {
		for {
			m := memberByID(lead.node.Members(), id)
			if m != nil && m.Learner {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("member %d is %+v on the leader, want a learner", id, m)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
