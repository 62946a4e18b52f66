package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/types"
)

// Claim is a value at most one object may hold at a time, such as a
// Service's virtual IP or node port. The store keeps one key per held
// value under the claims prefix, written in the same transaction as the
// object: a create or update whose claim is held by another object fails
// and changes nothing, and a delete frees the object's claims with it, so
// no value is ever held twice or leaked by a failed or half-done write.
type Claim struct {
	// Key names the value under the claims prefix ("serviceips/fd00::10").
	Key string
	// Field is where the object holds it ("spec.ports[0].nodePort").
	Field string
	// What names the value for people ("node port 30080/TCP").
	What string
}

// ClaimsFunc lists the claims an object holds.
type ClaimsFunc func(types.Object) []Claim

// claimsDir is the claims' place under the store prefix: outside every
// resource's keys, so lists and watches never see them.
const claimsDir = "_claims/"

// ClaimKey is the store key of a claim.
func (s *Store) ClaimKey(c Claim) string { return s.prefix + claimsDir + c.Key }

// HeldClaims returns the claim keys (relative, as Claim.Key) under dir
// that are held, e.g. every allocated node port with dir "nodeports/".
func (s *Store) HeldClaims(ctx context.Context, dir string) (map[string]bool, error) {
	p := s.prefix + claimsDir + dir
	resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, &Error{Reason: Unavailable, Resource: "claims", Message: fmt.Sprintf("the store did not answer a read of %s: %v", p, err), Err: err}
	}
	held := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		held[strings.TrimPrefix(string(kv.Key), s.prefix+claimsDir)] = true
	}
	return held, nil
}

// claimOwner is the value of a claim's key: the object holding it.
type claimOwner struct {
	Object string `json:"object"` // plural/namespace/name
	UID    string `json:"uid"`
}

func ownerOf(ref objectRef, o types.Object) string {
	name := ref.r.Plural + "/" + ref.name
	if ref.ns != "" {
		name = ref.r.Plural + "/" + ref.ns + "/" + ref.name
	}
	b, _ := json.Marshal(claimOwner{Object: name, UID: o.GetObjectMeta().UID})
	return string(b)
}

// claimsOf returns o's claims, each key once.
func (s *Store) claimsOf(r *types.Resource, o types.Object) []Claim {
	f := s.claims[r.Plural]
	if f == nil || o == nil {
		return nil
	}
	seen := map[string]bool{}
	var out []Claim
	for _, c := range f(o) {
		if !seen[c.Key] {
			seen[c.Key] = true
			out = append(out, c)
		}
	}
	return out
}

// claimTaken is the error of a write refused because holder has c.
func claimTaken(ref objectRef, c Claim, holder []byte) *Error {
	var h claimOwner
	who := "another object"
	if json.Unmarshal(holder, &h) == nil && h.Object != "" {
		who = h.Object
	}
	e := errorf(Invalid, ref, "%s: %s is already used by %s: choose another, or leave it out to get a free one", c.Field, c.What, who)
	e.Claim = &c
	return e
}

// claimDiff is what an update changes in an object's claims: the claims
// to take (create-if-absent) and those to free (ours only).
func claimDiff(old, upd []Claim) (add, free []Claim) {
	in := func(l []Claim, k string) bool {
		for _, c := range l {
			if c.Key == k {
				return true
			}
		}
		return false
	}
	for _, c := range upd {
		if !in(old, c.Key) {
			add = append(add, c)
		}
	}
	for _, c := range old {
		if !in(upd, c.Key) {
			free = append(free, c)
		}
	}
	return add, free
}

// takeOps are the conditions and writes that take claims for owner.
func (s *Store) takeOps(claims []Claim, owner string) ([]clientv3.Cmp, []clientv3.Op) {
	var conds []clientv3.Cmp
	var ops []clientv3.Op
	for _, c := range claims {
		k := s.ClaimKey(c)
		conds = append(conds, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		ops = append(ops, clientv3.OpPut(k, owner))
	}
	return conds, ops
}

// freeOps are the conditions and deletes that free those of claims owner
// holds. Claims held by another object, or by no one (an object stored
// before its resource had claims), are left alone.
func (s *Store) freeOps(ctx context.Context, ref objectRef, claims []Claim, owner string) ([]clientv3.Cmp, []clientv3.Op, error) {
	if len(claims) == 0 {
		return nil, nil, nil
	}
	gets := make([]clientv3.Op, len(claims))
	for i, c := range claims {
		gets[i] = clientv3.OpGet(s.ClaimKey(c))
	}
	resp, err := s.cli.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return nil, nil, storeError(ref, err)
	}
	var conds []clientv3.Cmp
	var ops []clientv3.Op
	for i, c := range claims {
		kvs := resp.Responses[i].GetResponseRange().Kvs
		if len(kvs) == 1 && string(kvs[0].Value) == owner {
			k := s.ClaimKey(c)
			conds = append(conds, clientv3.Compare(clientv3.Value(k), "=", owner))
			ops = append(ops, clientv3.OpDelete(k))
		}
	}
	return conds, ops, nil
}

// takenClaim finds which of claims another object holds after a
// transaction that took them failed; nil when none does (the failure was
// a race on the object itself).
func (s *Store) takenClaim(ctx context.Context, ref objectRef, claims []Claim, owner string) error {
	for _, c := range claims {
		resp, err := s.cli.Get(ctx, s.ClaimKey(c))
		if err != nil {
			return storeError(ref, err)
		}
		if len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) != owner {
			return claimTaken(ref, c, resp.Kvs[0].Value)
		}
	}
	return nil
}
