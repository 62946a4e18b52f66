package storetest

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The checker must be able to fail: a read that sees a value before it
// was written, and a stale read after a newer write, are both caught.
func TestCheckerRejectsNonLinearizableHistories(t *testing.T) {
	op := func(client int, in Input, call int64, out Output, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
	}
	tests := []struct {
		name    string
		history []porcupine.Operation
		ok      bool
	}{
		{"read after write", []porcupine.Operation{
			op(0, Input{Kind: OpPut, Key: "k", Value: "1"}, 0, Output{}, 10),
			op(1, Input{Kind: OpGet, Key: "k"}, 20, Output{Found: true, Value: "1"}, 30),
		}, true},
		{"read from the future", []porcupine.Operation{
			op(1, Input{Kind: OpGet, Key: "k"}, 0, Output{Found: true, Value: "1"}, 5),
			op(0, Input{Kind: OpPut, Key: "k", Value: "1"}, 10, Output{}, 20),
		}, false},
		{"stale read", []porcupine.Operation{
			op(0, Input{Kind: OpPut, Key: "k", Value: "1"}, 0, Output{}, 10),
			op(0, Input{Kind: OpPut, Key: "k", Value: "2"}, 20, Output{}, 30),
			op(1, Input{Kind: OpGet, Key: "k"}, 40, Output{Found: true, Value: "1"}, 50),
		}, false},
		{"unknown write may have happened", []porcupine.Operation{
			op(0, Input{Kind: OpPut, Key: "k", Value: "1"}, 0, Output{Unknown: true}, math.MaxInt64),
			op(1, Input{Kind: OpGet, Key: "k"}, 40, Output{Found: true, Value: "1"}, 50),
			op(1, Input{Kind: OpGet, Key: "j"}, 60, Output{}, 70),
		}, true},
		{"cas outcome must match the state", []porcupine.Operation{
			op(0, Input{Kind: OpPut, Key: "k", Value: "1"}, 0, Output{}, 10),
			op(1, Input{Kind: OpCAS, Key: "k", Expect: "1", Value: "2"}, 20, Output{OK: false}, 30),
		}, false},
	}
	for _, tt := range tests {
		err := Check(tt.history, 5*time.Second)
		if (err == nil) != tt.ok {
			t.Errorf("%s: Check = %v, want linearizable=%v", tt.name, err, tt.ok)
		}
	}
	if err := CheckWatchRevisions(5, []int64{5, 6, 8}); err == nil {
		t.Error("a gap in watch revisions was not reported")
	}
	if err := CheckWatchRevisions(5, []int64{5, 6, 6}); err == nil {
		t.Error("a duplicate watch revision was not reported")
	}
}

// TestWorkloadAgainstEtcd validates the workload and the checker against
// the reference implementation, with a member killed and restarted.
func TestWorkloadAgainstEtcd(t *testing.T) {
	c := StartEtcd(t, t.TempDir(), 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	watcher, err := clientv3.New(clientv3.Config{Endpoints: c.Clients, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	start, err := watcher.Get(ctx, "lin/")
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := watcher.Watch(wctx, "lin/", clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision+1))

	faultDone := make(chan struct{})
	go func() {
		defer close(faultDone)
		time.Sleep(300 * time.Millisecond)
		c.Kill(1)
		time.Sleep(500 * time.Millisecond)
		_ = c.Start(1)
	}()
	history, stats, err := Run(ctx, Workload{Endpoints: c.Clients, Clients: 4, OpsPerClient: 250, Keys: 8, Prefix: "lin/", Seed: 1})
	<-faultDone // the cluster's cleanup must not race the restart
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d ops, %d failed, %d unknown", stats.Ops, stats.Failed, stats.Unknown)
	if err := Check(history, time.Minute); err != nil {
		t.Fatal(err)
	}

	// Every write revision reaches the watcher once, in order.
	end, err := watcher.Get(ctx, "lin/")
	if err != nil {
		t.Fatal(err)
	}
	revs, err := WatchRevisions(wch, end.Header.Revision, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckWatchRevisions(start.Header.Revision+1, revs); err != nil {
		t.Fatal(err)
	}
}
