package networking

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Store keys of the address management, outside the API's resource keyspace
// (/nexus/v1/...) because no client edits them: the cluster's prefixes, one
// record per node, and one claim per node prefix pair, whose create-if-absent
// is what keeps two nodes from sharing a prefix.
const (
	keyCluster       = "/nexus/ipam/cluster"
	keyNodesPrefix   = "/nexus/ipam/nodes/"
	keySubnetsPrefix = "/nexus/ipam/subnets/"
)

// maxRecord bounds what IPAM decodes from one key; its records are tiny.
const maxRecord = 4 << 10

var (
	// ErrExhausted means every prefix or address of a range is in use.
	ErrExhausted = errors.New("address range exhausted")
	// ErrClusterMismatch means the configured cluster prefixes differ from
	// those the cluster was created with.
	ErrClusterMismatch = errors.New("configured cluster prefixes differ from the cluster's")
	// ErrCorrupt means a stored record cannot be read.
	ErrCorrupt = errors.New("corrupt networking record")
)

// IPAM hands out node prefixes through the store (the etcd v3 client API,
// so the embedded store and an external etcd both work). It keeps no state
// of its own; any number of IPAMs on any number of nodes may run at once.
type IPAM struct {
	cli  *clientv3.Client
	want ClusterPrefixes
}

// NewIPAM returns an IPAM that uses cli. want holds the configured cluster
// prefixes (ParseClusterPrefixes); unset fields take the cluster's, or the
// defaults when the cluster has none yet.
func NewIPAM(cli *clientv3.Client, want ClusterPrefixes) (*IPAM, error) {
	if cli == nil {
		return nil, errors.New("networking: NewIPAM needs a store client")
	}
	if err := want.validate(); err != nil {
		return nil, err
	}
	return &IPAM{cli: cli, want: want}, nil
}

// nodeRecord is the value of keyNodesPrefix+<node>.
type nodeRecord struct {
	Index int `json:"index"`
	NodePrefixes
}

// Cluster returns the cluster's prefixes, storing them (the configured ones,
// defaults for the rest) if the cluster has none yet. A configured prefix
// that differs from the stored one is an error wrapping ErrClusterMismatch:
// the nodes' prefixes were cut from the stored ones.
func (a *IPAM) Cluster(ctx context.Context) (ClusterPrefixes, error) {
	have, ok, err := a.getCluster(ctx)
	if err != nil {
		return ClusterPrefixes{}, err
	}
	if !ok {
		c, err := a.want.withDefaults()
		if err != nil {
			return ClusterPrefixes{}, err
		}
		data, err := json.Marshal(c)
		if err != nil {
			return ClusterPrefixes{}, fmt.Errorf("encode cluster prefixes: %w", err)
		}
		resp, err := a.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(keyCluster), "=", 0)).
			Then(clientv3.OpPut(keyCluster, string(data))).
			Commit()
		if err != nil {
			return ClusterPrefixes{}, fmt.Errorf("store cluster prefixes at %s: %w", keyCluster, err)
		}
		if resp.Succeeded {
			return c, nil
		}
		// Another node stored them first; use theirs.
		if have, ok, err = a.getCluster(ctx); err != nil {
			return ClusterPrefixes{}, err
		} else if !ok {
			return ClusterPrefixes{}, fmt.Errorf("%w: %s was deleted while this node created it", ErrCorrupt, keyCluster)
		}
	}
	if d := a.want.conflicts(have); d != "" {
		return ClusterPrefixes{}, fmt.Errorf("%w: the cluster has %s; remove the setting or use the cluster's value", ErrClusterMismatch, d)
	}
	return have, nil
}

func (a *IPAM) getCluster(ctx context.Context) (ClusterPrefixes, bool, error) {
	resp, err := a.cli.Get(ctx, keyCluster)
	if err != nil {
		return ClusterPrefixes{}, false, fmt.Errorf("read cluster prefixes at %s: %w", keyCluster, err)
	}
	if len(resp.Kvs) == 0 {
		return ClusterPrefixes{}, false, nil
	}
	c, err := decodeCluster(resp.Kvs[0].Value)
	if err != nil {
		return ClusterPrefixes{}, false, fmt.Errorf("%w: %s: %v", ErrCorrupt, keyCluster, err)
	}
	return c, true, nil
}

func decodeCluster(data []byte) (ClusterPrefixes, error) {
	var c ClusterPrefixes
	if err := decodeStrict(data, &c, maxRecord); err != nil {
		return ClusterPrefixes{}, err
	}
	return c, c.complete()
}

// AllocateNode returns node's prefixes, allocating the lowest free pair if
// it has none; the cluster's last pair is never given to a node (it holds
// ClusterPrefixes.ServiceRanges). Asking again returns the same prefixes. Concurrent calls for
// different nodes, from any number of processes, never return the same
// prefix: each allocation is a transaction that creates the prefix's claim
// only if no one holds it, and retries with the next free one if someone
// does.
func (a *IPAM) AllocateNode(ctx context.Context, node string) (NodePrefixes, error) {
	if err := validateNodeName(node); err != nil {
		return NodePrefixes{}, err
	}
	cluster, err := a.Cluster(ctx)
	if err != nil {
		return NodePrefixes{}, err
	}
	nodeKey := keyNodesPrefix + node
	for {
		rec, ok, err := a.getNode(ctx, node)
		if err != nil {
			return NodePrefixes{}, err
		}
		if ok {
			return rec.NodePrefixes, nil
		}
		used, err := a.usedSubnets(ctx)
		if err != nil {
			return NodePrefixes{}, err
		}
		i := 0
		for i < cluster.nodeSubnets() && used[i] {
			i++
		}
		if i == cluster.nodeSubnets() {
			return NodePrefixes{}, fmt.Errorf("%w: all %d node prefixes of the cluster (%s, %s; the last pair is kept for service addresses) are allocated: release those of removed nodes or use a larger cluster prefix", ErrExhausted, cluster.nodeSubnets(), cluster.IPv6, cluster.IPv4)
		}
		rec = nodeRecord{Index: i, NodePrefixes: cluster.node(i)}
		data, err := json.Marshal(rec)
		if err != nil {
			return NodePrefixes{}, fmt.Errorf("encode prefixes of node %s: %w", node, err)
		}
		subnetKey := keySubnetsPrefix + strconv.Itoa(i)
		resp, err := a.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(nodeKey), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(subnetKey), "=", 0)).
			Then(clientv3.OpPut(nodeKey, string(data)), clientv3.OpPut(subnetKey, node)).
			Commit()
		if err != nil {
			return NodePrefixes{}, fmt.Errorf("allocate prefixes for node %s: %w", node, err)
		}
		if resp.Succeeded {
			return rec.NodePrefixes, nil
		}
		// Another allocator took prefix i (or allocated this node's
		// prefixes) between the reads and the transaction; look again.
		if err := ctx.Err(); err != nil {
			return NodePrefixes{}, fmt.Errorf("allocate prefixes for node %s: %w", node, err)
		}
	}
}

// ReleaseNode frees node's prefixes so that another node may get them. The
// node must have no containers left (its agent is gone). Releasing a node
// without prefixes does nothing.
func (a *IPAM) ReleaseNode(ctx context.Context, node string) error {
	if err := validateNodeName(node); err != nil {
		return err
	}
	nodeKey := keyNodesPrefix + node
	for {
		resp, err := a.cli.Get(ctx, nodeKey)
		if err != nil {
			return fmt.Errorf("read prefixes of node %s: %w", node, err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		kv := resp.Kvs[0]
		ops := []clientv3.Op{clientv3.OpDelete(nodeKey)}
		conds := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(nodeKey), "=", kv.ModRevision)}
		// A corrupt record is deleted all the same; only a readable one
		// names the claim to delete with it, and only if the claim is
		// this node's.
		if rec, err := decodeNode(kv.Value); err == nil {
			subnetKey := keySubnetsPrefix + strconv.Itoa(rec.Index)
			claim, err := a.cli.Get(ctx, subnetKey)
			if err != nil {
				return fmt.Errorf("read the claim of node %s's prefixes: %w", node, err)
			}
			if len(claim.Kvs) == 1 && string(claim.Kvs[0].Value) == node {
				conds = append(conds, clientv3.Compare(clientv3.Value(subnetKey), "=", node))
				ops = append(ops, clientv3.OpDelete(subnetKey))
			}
		}
		tr, err := a.cli.Txn(ctx).If(conds...).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("release prefixes of node %s: %w", node, err)
		}
		if tr.Succeeded {
			return nil
		}
	}
}

func (a *IPAM) getNode(ctx context.Context, node string) (nodeRecord, bool, error) {
	key := keyNodesPrefix + node
	resp, err := a.cli.Get(ctx, key)
	if err != nil {
		return nodeRecord{}, false, fmt.Errorf("read prefixes of node %s: %w", node, err)
	}
	if len(resp.Kvs) == 0 {
		return nodeRecord{}, false, nil
	}
	rec, err := decodeNode(resp.Kvs[0].Value)
	if err != nil {
		return nodeRecord{}, false, fmt.Errorf("%w: %s: %v (ReleaseNode removes it)", ErrCorrupt, key, err)
	}
	return rec, true, nil
}

func decodeNode(data []byte) (nodeRecord, error) {
	var rec nodeRecord
	if err := decodeStrict(data, &rec, maxRecord); err != nil {
		return nodeRecord{}, err
	}
	if rec.Index < 0 {
		return nodeRecord{}, fmt.Errorf("index %d is negative", rec.Index)
	}
	return rec, rec.NodePrefixes.validate()
}

// usedSubnets returns the indexes of the claimed node prefixes.
func (a *IPAM) usedSubnets(ctx context.Context) (map[int]bool, error) {
	resp, err := a.cli.Get(ctx, keySubnetsPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list allocated node prefixes under %s: %w", keySubnetsPrefix, err)
	}
	used := make(map[int]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		i, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), keySubnetsPrefix))
		if err != nil || i < 0 {
			// Not a claim this package wrote; it holds no index.
			continue
		}
		used[i] = true
	}
	return used, nil
}

// validateNodeName checks that node can be a store key segment. Node names
// come from the API (DNS subdomains); this only guards the keyspace.
func validateNodeName(node string) error {
	if node == "" || len(node) > 253 {
		return fmt.Errorf("node name %q: want 1-253 characters", node)
	}
	for i := 0; i < len(node); i++ {
		c := node[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return fmt.Errorf("node name %q: only lower-case letters, digits, '-' and '.' are allowed", node)
		}
	}
	return nil
}

// decodeStrict decodes one JSON object into v, refusing unknown fields and
// trailing data, so a record written by something else is not half-read.
func decodeStrict(data []byte, v any, limit int) error {
	if len(data) > limit {
		return fmt.Errorf("%d bytes is more than the %d accepted", len(data), limit)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the record")
	}
	return nil
}
