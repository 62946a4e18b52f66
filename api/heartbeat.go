package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/types"
)

var nodesRes, _ = types.LookupResource("nodes")

// heartbeat renews a node's heartbeat lease (POST /v1/nodes/{name}/heartbeat):
// the key types.NodeLeaseKey(name), attached to a store lease of the node
// lease duration, kept alive when it exists and granted when it does not.
// The server keeps nothing in memory, so a node may heartbeat to any
// server, and to another one after a failover.
//
// Only a heartbeat that grants a lease is audited: a renewal changes no
// object, and a record (synced to disk) per node per second would cost
// more than the renewal itself, as Kubernetes' audit policies leave out
// the kubelets' lease updates. The grant marks the node coming (back).
func (s *Server) heartbeat(w http.ResponseWriter, r *request) error {
	ctx := r.http.Context()
	if _, _, err := s.current(ctx, nodesRes, "", r.name); err != nil {
		return err
	}
	acquired, err := s.renewNodeLease(ctx, r.name)
	if err != nil {
		if ctx.Err() != nil {
			return errRequestCanceled
		}
		return problem(http.StatusServiceUnavailable, "Unavailable", "the store did not renew node %s's heartbeat lease: %v", r.name, err).withRetry(1)
	}
	hb := types.NodeHeartbeat{Node: r.name, LeaseDurationSeconds: s.nodeLeaseSeconds, EvictionSeconds: s.evictionSeconds, Acquired: acquired}
	body, err := json.Marshal(hb)
	if err != nil {
		return err
	}
	if acquired {
		return s.finish(w, r, http.StatusOK, body)
	}
	r.code = http.StatusOK
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body, '\n'))
	return nil
}

// nodeLeaseValue is what a node's lease key holds, for people who look
// at the store (etcdctl get --prefix /nexus/leases/nodes/): when the
// lease was granted and for how long each renewal keeps it.
type nodeLeaseValue struct {
	AcquireTime          time.Time `json:"acquireTime"`
	LeaseDurationSeconds int64     `json:"leaseDurationSeconds"`
}

// renewNodeLease keeps node's lease alive, or grants one when the node
// has none (first heartbeat, or its lease ran out); acquired says which.
// Two servers granting at once are settled by a transaction on the key's
// revision: the loser revokes its lease, the node has the winner's.
func (s *Server) renewNodeLease(ctx context.Context, node string) (acquired bool, err error) {
	key := types.NodeLeaseKey(node)
	cur, err := s.client.Get(ctx, key)
	if err != nil {
		return false, err
	}
	var modRev int64
	if len(cur.Kvs) == 1 {
		kv := cur.Kvs[0]
		modRev = kv.ModRevision
		if kv.Lease != 0 {
			_, err := s.client.KeepAliveOnce(ctx, clientv3.LeaseID(kv.Lease))
			if err == nil {
				return false, nil
			}
			if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return false, err
			}
			// It ran out just now: its key goes with it, and a new lease
			// takes its place below.
		}
	}
	grant, err := s.client.Grant(ctx, s.nodeLeaseSeconds)
	if err != nil {
		return false, err
	}
	val, _ := json.Marshal(nodeLeaseValue{AcquireTime: s.now().UTC(), LeaseDurationSeconds: s.nodeLeaseSeconds})
	txn, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(grant.ID))).
		Commit()
	if err != nil || !txn.Succeeded {
		// Another server granted one meanwhile (or the put failed): ours
		// is not needed. It would run out on its own; revoking says so now.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_, _ = s.client.Revoke(rctx, grant.ID)
		cancel()
		return false, err
	}
	s.log.Info("node heartbeat lease granted", "node", node, "lease", int64(grant.ID), "ttl", s.nodeLeaseSeconds)
	return true, nil
}
