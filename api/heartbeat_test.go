package api_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/audit"
)

// TestNodeHeartbeatLease: a node's heartbeat grants a store lease of the
// configured duration under /nexus/leases/nodes/<name> and later ones keep
// it alive; the key is deleted by the store once the heartbeats stop, and
// the next heartbeat grants a new lease. Only the node itself or an admin
// may heartbeat for it, only a Node that exists has one, and only the
// grants are in the audit log. Against both stores (etcd and ours).
func TestNodeHeartbeatLease(t *testing.T) {
	for _, b := range apitest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			c := servertest.StartServer(t, b, servertest.ServerOptions{NodeLeaseDuration: 2 * time.Second})
			admin := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
			n1 := client{t: t, hc: c.HTTPClient(t, c.Node(t, "n1"), true), url: c.URL()}
			n2 := client{t: t, hc: c.HTTPClient(t, c.Node(t, "n2"), false), url: c.URL()}
			admin.must(201, "POST", "/v1/nodes", "application/json", `{"kind":"Node","metadata":{"name":"n1"}}`)
			store := b.Client(t)
			ctx := context.Background()
			key := types.NodeLeaseKey("n1")

			beat := func(cl client) types.NodeHeartbeat {
				t.Helper()
				r := cl.must(200, "POST", "/v1/nodes/n1/heartbeat", "", nil)
				var hb types.NodeHeartbeat
				if err := json.Unmarshal(r.body, &hb); err != nil {
					t.Fatalf("heartbeat answer %s: %v", r.body, err)
				}
				if hb.Node != "n1" || hb.LeaseDurationSeconds != 2 {
					t.Fatalf("heartbeat answer %+v: want node n1, 2 s", hb)
				}
				return hb
			}
			if hb := beat(n1); !hb.Acquired {
				t.Fatalf("first heartbeat %+v: no lease granted", hb)
			}
			got, err := store.Get(ctx, key)
			if err != nil || len(got.Kvs) != 1 || got.Kvs[0].Lease == 0 {
				t.Fatalf("lease key after the first heartbeat: %+v %v", got, err)
			}
			lease := clientv3.LeaseID(got.Kvs[0].Lease)
			ttl, err := store.TimeToLive(ctx, lease)
			if err != nil || ttl.GrantedTTL != 2 {
				t.Fatalf("lease %x: %+v %v, want a TTL of 2 s", lease, ttl, err)
			}
			// Renewals keep the same lease alive past its TTL.
			for range 5 {
				time.Sleep(700 * time.Millisecond)
				if hb := beat(n1); hb.Acquired {
					t.Fatalf("a renewal granted a new lease: %+v", hb)
				}
			}
			if hb := beat(admin); hb.Acquired {
				t.Fatalf("an admin's heartbeat granted a new lease: %+v", hb)
			}
			got, _ = store.Get(ctx, key)
			if len(got.Kvs) != 1 || clientv3.LeaseID(got.Kvs[0].Lease) != lease {
				t.Fatalf("lease key after renewals: %+v, want lease %x", got.Kvs, lease)
			}

			r := n2.must(403, "POST", "/v1/nodes/n1/heartbeat", "", nil)
			if !strings.Contains(r.problem.Detail, "only its own Node") {
				t.Fatalf("n2 heartbeating for n1: %s", r.body)
			}
			admin.must(404, "POST", "/v1/nodes/ghost/heartbeat", "", nil)
			admin.must(405, "GET", "/v1/nodes/n1/heartbeat", "", nil)
			if got, _ := store.Get(ctx, types.NodeLeaseKey("ghost")); len(got.Kvs) != 0 {
				t.Fatalf("a lease for a node that does not exist: %+v", got.Kvs)
			}

			// Without heartbeats the store deletes the key within the TTL
			// (plus its expiry check).
			w := store.Watch(ctx, key, clientv3.WithRev(got.Header.Revision+1))
			stopped := time.Now()
			deadline := time.After(5 * time.Second)
		wait:
			for {
				select {
				case wr := <-w:
					for _, ev := range wr.Events {
						if ev.Type == clientv3.EventTypeDelete {
							break wait
						}
					}
				case <-deadline:
					t.Fatal("the lease key outlived its lease by 3 s")
				}
			}
			if gone := time.Since(stopped); gone < 1500*time.Millisecond {
				t.Fatalf("the lease key went %v after the last heartbeat, before its 2 s TTL", gone)
			}
			if hb := beat(n1); !hb.Acquired {
				t.Fatalf("heartbeat after the lease expired %+v: no new lease", hb)
			}

			data, err := os.ReadFile(filepath.Join(c.AuditDir, "audit.log"))
			if err != nil {
				t.Fatal(err)
			}
			granted, denied := 0, 0
			for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
				var rec audit.Record
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatal(err)
				}
				if rec.Subresource != "heartbeat" {
					continue
				}
				switch rec.Code {
				case 200:
					granted++
				case 403:
					denied++
				}
			}
			if granted != 2 || denied != 1 {
				t.Fatalf("audit log: %d heartbeats that granted a lease (want 2), %d denied (want 1)", granted, denied)
			}
		})
	}
}
