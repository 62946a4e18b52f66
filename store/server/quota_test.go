package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/store/storetest"
)

// reference is a one-member store under test, Nexus's or etcd's, driven
// through etcd's client.
type reference struct {
	name     string
	endpoint string
	cli      *clientv3.Client
	restart  func()
	store    *testStore // Nexus's
}

func etcdClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// waitServing waits until endpoint answers Status (a put would not do: the
// store may refuse writes).
func waitServing(t *testing.T, cli *clientv3.Client, endpoint string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cli.Status(ctx, endpoint)
		cancel()
		if err == nil && st.Leader != 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not serve after a restart: %v", endpoint, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startBoth starts a one-member etcd with etcdFlags and a one-member Nexus
// store with configure, both holding the key StartEtcd writes.
func startBoth(t *testing.T, configure func(*Config), etcdFlags ...string) []*reference {
	t.Helper()
	etcd := storetest.StartEtcd(t, t.TempDir(), 1, etcdFlags...)
	e := &reference{name: "etcd", endpoint: etcd.Clients[0], cli: etcdClient(t, etcd.Clients)}
	e.restart = func() {
		etcd.Kill(0)
		if err := etcd.Start(0); err != nil {
			t.Fatal(err)
		}
		waitServing(t, e.cli, e.endpoint)
	}
	ts := startStoreIn(t, 1, t.TempDir(), configure)
	n := &reference{name: "nexus", endpoint: ts.endpoints()[0], cli: ts.client(), store: ts}
	n.restart = func() {
		ts.kill(ts.members[0])
		ts.start(ts.members[0])
		waitServing(t, n.cli, n.endpoint)
	}
	if _, err := n.cli.Put(t.Context(), "storetest/ready", "1"); err != nil {
		t.Fatal(err)
	}
	return []*reference{e, n}
}

// put is one put of putsUntilRefused: the database size before it (as
// Status reports it), the put's quota cost by etcd's estimate, and its
// outcome.
type put struct {
	size, cost int64
	err        error
}

// putsUntilRefused puts values of size bytes under new keys until a put
// fails (at most limit), reading the database size before each.
func putsUntilRefused(ctx context.Context, t *testing.T, r *reference, size, limit int) []put {
	t.Helper()
	value := strings.Repeat("v", size)
	var puts []put
	for i := range limit {
		st, err := r.cli.Status(ctx, r.endpoint)
		if err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("quota/%03d", i)
		_, err = r.cli.Put(ctx, key, value)
		puts = append(puts, put{size: st.DbSize, cost: int64(256 + len(key) + len(value)), err: err})
		if err != nil {
			break
		}
	}
	return puts
}

// checkQuotaRule checks etcd's rule on puts: a put is refused with NOSPACE
// exactly when the database size before it plus its cost reaches the quota.
func checkQuotaRule(t *testing.T, who string, quota int64, puts []put) {
	t.Helper()
	for i, p := range puts {
		over := p.size+p.cost >= quota
		switch {
		case over && !errors.Is(p.err, rpctypes.ErrNoSpace):
			t.Errorf("%s: put %d (database %d + cost %d >= quota %d): %v, want NOSPACE", who, i+1, p.size, p.cost, quota, p.err)
		case !over && p.err != nil:
			t.Errorf("%s: put %d (database %d + cost %d < quota %d): %v", who, i+1, p.size, p.cost, quota, p.err)
		}
	}
	if last := puts[len(puts)-1]; last.err == nil {
		t.Errorf("%s: %d puts and none refused", who, len(puts))
	}
}

// etcdOneCommitPerWrite makes etcd commit every write at once, as Nexus
// does; by default it commits every 100 ms and checks a burst of puts
// against the size of its last commit, so it admits more than its quota
// (18 puts of 133 KiB under 2 MiB instead of 8, measured).
const etcdOneCommitPerWrite = "--backend-batch-limit=1"

// TestSpaceQuotaLikeEtcd: under the same --quota-backend-bytes, Nexus
// refuses puts by etcd's rule, checked on etcd beside it: NOSPACE exactly
// when the database file's size plus the put's cost reaches the quota. The
// files grow alike, so usually the same put is refused; but etcd's own
// count varies between runs (it closes the read transaction of its last
// commit in a goroutine, and a commit made before that reuses no page the
// last one freed: 5 runs each refused the 7th or 11th put of 133,000 bytes
// under 2,000,000, the 33rd or 37th of 100 KiB under 4 MiB, the 77th to
// 81st of 10 KiB under 1 MiB; Nexus always the 11th, 37th and 79th), so
// the counts are logged, not compared.
func TestSpaceQuotaLikeEtcd(t *testing.T) {
	for _, tt := range []struct {
		quota int64
		value int
	}{
		{2 << 20, 133 << 10}, // the report in issue #12
		{2000000, 133000},
		{4 << 20, 100 << 10},
		{1 << 20, 10 << 10},
	} {
		t.Run(fmt.Sprintf("quota %d value %d", tt.quota, tt.value), func(t *testing.T) {
			ctx := ctxT(t, time.Minute)
			both := startBoth(t, func(c *Config) { c.QuotaBytes = tt.quota },
				fmt.Sprintf("--quota-backend-bytes=%d", tt.quota), etcdOneCommitPerWrite)
			for _, r := range both {
				puts := putsUntilRefused(ctx, t, r, tt.value, 500)
				checkQuotaRule(t, r.name, tt.quota, puts)
				last := puts[len(puts)-1]
				t.Logf("%s: refused put %d (database %d bytes)", r.name, len(puts), last.size)
			}
		})
	}
}

// alarmView is what a client sees of the alarms: their types, and whether
// they were raised by the member that answers.
func alarmView(ctx context.Context, r *reference, alarms []*etcdserverpb.AlarmMember) string {
	st, err := r.cli.Status(ctx, r.endpoint)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, a := range alarms {
		who := "other member"
		if a.MemberID == st.Header.MemberId {
			who = "this member"
		}
		out = append(out, fmt.Sprintf("%s of %s", a.Alarm, who))
	}
	return strings.Join(out, ", ")
}

// TestNoSpaceAlarmLikeEtcd runs an operator's session with a full store
// against etcd and Nexus and compares every answer: the alarm is raised,
// survives a restart, stops puts and lease grants but not deletes; a
// disarm lists what it disarmed, but a put that still does not fit raises
// the alarm again; after compaction and defragmentation a disarm sticks.
func TestNoSpaceAlarmLikeEtcd(t *testing.T) {
	const quota, value = 2 << 20, 133 << 10
	ctx := ctxT(t, 2*time.Minute)
	both := startBoth(t, func(c *Config) { c.QuotaBytes = quota },
		fmt.Sprintf("--quota-backend-bytes=%d", quota), etcdOneCommitPerWrite)
	var transcripts [2][]string
	for i, r := range both {
		say := func(format string, args ...any) {
			transcripts[i] = append(transcripts[i], fmt.Sprintf(format, args...))
		}
		outcome := func(err error) string {
			if err == nil {
				return "ok"
			}
			return err.Error()
		}
		list := func() string {
			resp, err := r.cli.AlarmList(ctx)
			if err != nil {
				return err.Error()
			}
			return alarmView(ctx, r, resp.Alarms)
		}
		puts := putsUntilRefused(ctx, t, r, value, 100)
		checkQuotaRule(t, r.name, quota, puts)
		say("the last put: %s", outcome(puts[len(puts)-1].err))
		say("alarm list: %s", list())
		st, err := r.cli.Status(ctx, r.endpoint)
		if err != nil {
			t.Fatal(err)
		}
		say("status errors: %q", strings.ReplaceAll(strings.Join(st.Errors, "|"), fmt.Sprint(st.Header.MemberId), "ID"))
		_, err = r.cli.Put(ctx, "small", "1")
		say("small put: %s", outcome(err))
		_, err = r.cli.Grant(ctx, 60)
		say("lease grant: %s", outcome(err))
		_, err = r.cli.Txn(ctx).If(clientv3.Compare(clientv3.Version("small"), "=", 0)).Then(clientv3.OpGet("small")).Else(clientv3.OpPut("small", "1")).Commit()
		say("txn with a put in the branch not taken: %s", outcome(err))
		_, err = r.cli.Delete(ctx, "quota/000")
		say("delete: %s", outcome(err))

		r.restart()
		say("after a restart, alarm list: %s", list())
		_, err = r.cli.Put(ctx, "small", "1")
		say("after a restart, small put: %s", outcome(err))

		disarmed, err := r.cli.AlarmDisarm(ctx, &clientv3.AlarmMember{})
		if err != nil {
			t.Fatalf("%s: disarm: %v", r.name, err)
		}
		say("disarm answers: %s", alarmView(ctx, r, disarmed.Alarms))
		say("after the disarm, alarm list: %q", list())
		// The database is no smaller than when the last put was refused.
		_, err = r.cli.Put(ctx, "quota/again", strings.Repeat("v", value))
		say("after the disarm, the put refused before: %s", outcome(err))
		say("then alarm list: %s", list())
		_, err = r.cli.Put(ctx, "small", "2")
		say("small put: %s", outcome(err))

		if _, err := r.cli.Delete(ctx, "quota/", clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
		last, err := r.cli.Get(ctx, "storetest/ready")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.cli.Compact(ctx, last.Header.Revision); err != nil {
			t.Fatal(err)
		}
		if _, err := r.cli.Defragment(ctx, r.endpoint); err != nil {
			t.Fatal(err)
		}
		if st, err = r.cli.Status(ctx, r.endpoint); err != nil || st.DbSize >= quota {
			t.Fatalf("%s after compaction and defragmentation: %+v %v", r.name, st, err)
		}
		if disarmed, err = r.cli.AlarmDisarm(ctx, &clientv3.AlarmMember{}); err != nil {
			t.Fatalf("%s: disarm: %v", r.name, err)
		}
		say("compacted and defragmented, disarm answers: %s", alarmView(ctx, r, disarmed.Alarms))
		_, err = r.cli.Put(ctx, "small", "1")
		say("small put: %s", outcome(err))
		say("alarm list: %q", list())
	}
	etcd, nexus := transcripts[0], transcripts[1]
	t.Logf("etcd:\n  %s", strings.Join(etcd, "\n  "))
	for i := range etcd {
		if i >= len(nexus) || nexus[i] != etcd[i] {
			t.Errorf("etcd:  %s\nnexus: %s", etcd[i], nexus[min(i, len(nexus)-1)])
		}
	}
}

// TestNoSpaceRaisedByAnyMember: each member checks its own database as it
// applies writes. A member with a smaller quota than the one that admitted
// the writes raises its alarm through raft, and then every member refuses
// puts and lists the alarm as that member's.
func TestNoSpaceRaisedByAnyMember(t *testing.T) {
	ts := startStoreIn(t, 3, t.TempDir(), func(c *Config) {
		c.QuotaBytes = 64 << 20
		if c.Name == "m2" {
			c.QuotaBytes = 1 << 20
		}
	})
	ctx := ctxT(t, time.Minute)
	m0 := etcdClient(t, ts.endpoints()[:1])
	value := strings.Repeat("v", 100<<10)
	var err error
	n := 0
	for ; n < 200 && err == nil; n++ {
		_, err = m0.Put(ctx, fmt.Sprintf("quota/%03d", n), value)
	}
	// 200 puts of 100 KiB stay far below m0's and m1's quota: only m2's
	// alarm can refuse them.
	if !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("put %d through m0: %v, want NOSPACE raised by m2 (quota 1 MiB)", n, err)
	}
	for i, ep := range ts.endpoints() {
		cli := etcdClient(t, []string{ep})
		resp, err := cli.AlarmList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Alarms) != 1 || resp.Alarms[0].MemberID != MemberID("m2") || resp.Alarms[0].Alarm != etcdserverpb.AlarmType_NOSPACE {
			t.Errorf("alarm list through m%d: %v, want NOSPACE of m2 only", i, resp.Alarms)
		}
		if _, err := cli.Put(ctx, "small", "1"); !errors.Is(err, rpctypes.ErrNoSpace) {
			t.Errorf("put through m%d: %v, want NOSPACE", i, err)
		}
	}
}
