package server

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// TestElectionAcrossLeaderDeath measures what the controllers' leader
// election (controller.RunElected, 1 s sessions) gets from this store
// when the server that dies held both the election and the store's raft
// leadership: its session lease survives the raft election (a new raft
// leader extends every lease by 10 ticks before counting it down, so that
// clients can find it), and the waiting candidate, on a follower, leads
// once the lease then runs out. docs/architecture.md quotes the times.
func TestElectionAcrossLeaderDeath(t *testing.T) {
	// The default raft tick (100 ms), as a server runs with.
	ts := startStoreIn(t, 3, t.TempDir(), func(c *Config) { c.TickInterval = 0 })
	leader := ts.waitLeader()
	var follower *testMember
	for _, m := range ts.members {
		if m != leader {
			follower = m
			break
		}
	}
	dial := func(m *testMember) *clientv3.Client {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + m.clientAddr}, DialTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	ctx := ctxT(t, time.Minute)
	sa, err := concurrency.NewSession(dial(leader), concurrency.WithTTL(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := concurrency.NewElection(sa, "/nexus/leader/controllers").Campaign(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	sb, err := concurrency.NewSession(dial(follower), concurrency.WithTTL(1))
	if err != nil {
		t.Fatal(err)
	}
	won := make(chan time.Time, 1)
	go func() {
		if err := concurrency.NewElection(sb, "/nexus/leader/controllers").Campaign(ctx, "b"); err == nil {
			won <- time.Now()
		}
	}()
	time.Sleep(1500 * time.Millisecond) // a's keep-alives hold it past a TTL
	select {
	case <-won:
		t.Fatal("b leads while a's session is kept alive")
	default:
	}
	killed := time.Now()
	ts.kill(leader)
	select {
	case at := <-won:
		took := at.Sub(killed)
		t.Logf("b leads %v after the raft leader (and a) died", took.Round(10*time.Millisecond))
		if took < time.Second {
			t.Fatalf("b led %v after a died, before a's 1 s lease could run out", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b does not lead 10 s after a and the raft leader died")
	}
}

// TestKeepAliveOutlivesLostQuorum: keep-alives that fail because the
// member cannot reach a quorum (no leader, as during an election) do not
// end the client's session: the member ends the stream with the error and
// the client opens another, instead of hearing TTL 0, "the lease is gone",
// and giving the lease up. Once the quorum is back the lease is alive.
func TestKeepAliveOutlivesLostQuorum(t *testing.T) {
	ts := startStore(t, 3)
	m := ts.members[0]
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + m.clientAddr}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range ts.members[1:] {
		ts.kill(o)
	}
	time.Sleep(1500 * time.Millisecond) // several keep-alives fail
	select {
	case <-sess.Done():
		t.Fatal("the session ended while its member had no quorum")
	default:
	}
	for _, o := range ts.members[1:] {
		ts.start(o)
	}
	ts.waitLeader()
	time.Sleep(2 * time.Second)
	select {
	case <-sess.Done():
		t.Fatal("the session ended after the quorum came back")
	default:
	}
	ttl, err := cli.TimeToLive(ctxT(t, 5*time.Second), sess.Lease())
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("the session's lease after the outage: %+v %v", ttl, err)
	}
}
