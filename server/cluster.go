package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/storage"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/pki"
)

// How often a server writes its Server object, and how old a heartbeat
// may be before the server counts as down (RemoveServer's quorum check).
const (
	ServerHeartbeatInterval = 3 * time.Second
	ServerStaleAfter        = 15 * time.Second
)

func serverResource() *types.Resource {
	r, _ := types.LookupResource("servers")
	return r
}

// runServerObject writes this server's Server object now and every
// ServerHeartbeatInterval, and deletes the objects of servers that are no
// longer members of the store (removed while down, or by `nexus server
// remove`), until ctx ends.
func (s *Server) runServerObject(ctx context.Context) {
	t := time.NewTicker(ServerHeartbeatInterval)
	defer t.Stop()
	for {
		if err := s.heartbeat(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("write this server's Server object", "err", err)
		}
		if s.member != nil {
			if err := s.forgetRemovedServers(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("delete the Server objects of removed servers", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// status is what this server reports about itself now.
func (s *Server) status() types.ServerStatus {
	st := types.ServerStatus{APIURL: s.cfg.clusterAPIURL(s.apiAddr), LastHeartbeat: time.Now().UTC().Truncate(time.Second)}
	if s.member != nil {
		node := s.member.Server().Node()
		st.PeerAddress = s.cfg.peerAdvertise()
		st.StoreMember.ID = strconv.FormatUint(node.ID(), 16)
		for _, m := range node.Members() {
			if m.ID == node.ID() {
				st.StoreMember.Learner = m.Learner
			}
		}
	}
	return st
}

func (s *Server) heartbeat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, ServerHeartbeatInterval)
	defer cancel()
	st := s.api.Store()
	res := serverResource()
	_, err := st.GuaranteedUpdate(ctx, res, "", s.cfg.Name, storage.UpdateOptions{Status: true}, func(cur types.Object) (types.Object, error) {
		next := *cur.(*types.Server)
		next.Status = s.status()
		return &next, nil
	})
	if storage.IsNotFound(err) {
		o := &types.Server{Status: s.status()}
		o.Name = s.cfg.Name
		_, err = st.Create(ctx, o)
	}
	return err
}

// forgetRemovedServers deletes the Server objects whose server is not a
// member of the store any more. A removed server cannot do it itself: it
// stops as soon as it learns of its removal.
func (s *Server) forgetRemovedServers(ctx context.Context) error {
	members := map[string]bool{}
	for _, m := range s.member.Server().Node().Members() {
		members[m.Name] = true
	}
	if !members[s.cfg.Name] {
		return nil // this server is the one removed
	}
	st := s.api.Store()
	list, err := st.List(ctx, serverResource(), "", storage.ListOptions{})
	if err != nil {
		return err
	}
	for _, o := range list.Items {
		name := o.GetObjectMeta().Name
		if members[name] {
			continue
		}
		if _, err := st.Delete(ctx, serverResource(), "", name, storage.DeleteOptions{}); err != nil && !storage.IsNotFound(err) {
			return err
		}
		s.log.Info("deleted the Server object of a server removed from the store", "removed", name)
	}
	return nil
}

// promoteWhenCaughtUp makes this joined server a voting member once its
// store has applied the revision it was admitted at, retrying until the
// store accepts (raft refuses a change while another is pending, and the
// leader may be changing). It returns once this member votes.
func (s *Server) promoteWhenCaughtUp(ctx context.Context, revision int64) {
	node := s.member.Server().Node()
	wait := 200 * time.Millisecond
	for {
		learner, member := false, false
		for _, m := range node.Members() {
			if m.ID == node.ID() {
				learner, member = m.Learner, true
			}
		}
		if member && !learner {
			return
		}
		if member && s.caughtUp(ctx, revision) {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := node.PromoteMember(pctx, node.ID())
			cancel()
			if err == nil {
				s.log.Info("promoted to a voting member of the store")
				return
			}
			s.log.Info("promotion to a voting member not accepted yet; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// caughtUp reports whether this member's own copy of the store has reached
// revision (a serializable read answers from the local state).
func (s *Server) caughtUp(ctx context.Context, revision int64) bool {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := s.client.Get(cctx, "/nexus/ping", clientv3.WithSerializable())
	return err == nil && resp.Header.Revision >= revision
}

// intermediatesPrefix holds each server's issuing intermediate CA(s), one
// key per server (<prefix><name>): every server trusts all of them, so a
// certificate issued by any server verifies at every other.
const intermediatesPrefix = "/nexus/_pki/intermediates/"

// runTrust keeps the cluster's trust bundle current on this server: it
// publishes this server's own intermediate CA(s) (the current one, and the
// old one during a rotation) and rewrites pki/bundle.pem as this server's
// roots plus every server's published intermediates, whenever either
// changes. The credentials' keepers load the new bundle; the server's own
// credentials get it at once.
func (s *Server) runTrust(ctx context.Context, creds ...*pki.Credentials) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	wch := s.client.Watch(clientv3.WithRequireLeader(ctx), intermediatesPrefix, clientv3.WithPrefix())
	for {
		if err := s.syncTrust(ctx, creds); err != nil && ctx.Err() == nil {
			s.log.Warn("update the trust bundle from the store", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case _, ok := <-wch:
			if !ok {
				wch = s.client.Watch(clientv3.WithRequireLeader(ctx), intermediatesPrefix, clientv3.WithPrefix())
			}
		}
	}
}

func (s *Server) syncTrust(ctx context.Context, creds []*pki.Credentials) error {
	d := s.pkiDir()
	own, err := ownIntermediates(d)
	if err != nil {
		return err
	}
	if len(own) > 0 {
		key := intermediatesPrefix + s.cfg.Name
		cur, err := s.client.Get(ctx, key)
		if err != nil {
			return err
		}
		if len(cur.Kvs) == 0 || !bytes.Equal(cur.Kvs[0].Value, own) {
			if _, err := s.client.Put(ctx, key, string(own)); err != nil {
				return err
			}
		}
	}
	local, err := d.Bundle()
	if err != nil {
		return err
	}
	b, err := pki.NewBundle(local.Roots()...)
	if err != nil {
		return err
	}
	all, err := s.client.Get(ctx, intermediatesPrefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	now := time.Now()
	for _, kv := range append([][]byte{own}, values(all)...) {
		certs, err := pki.ParseCertificates(kv)
		if err != nil {
			s.log.Warn("skip a published intermediate CA that does not parse", "err", err)
			continue
		}
		for _, c := range certs {
			if nb, err := b.AddIntermediate(c, now); err == nil {
				b = nb
			} else {
				s.log.Debug("skip a published intermediate CA", "subject", c.Subject.CommonName, "err", err)
			}
		}
	}
	if bytes.Equal(b.PEM(), local.PEM()) {
		return nil
	}
	if err := pki.WriteFileAtomic(filepath.Join(d.Path, pki.BundleFile), b.PEM(), 0o644); err != nil {
		return err
	}
	for _, c := range creds {
		if err := c.SetBundle(b); err != nil {
			return fmt.Errorf("use the new trust bundle: %w", err)
		}
	}
	s.log.Info("trust bundle updated from the store", "intermediates", len(b.Intermediates()))
	return nil
}

// ownIntermediates is this server's issuing CA, and the one it replaces
// while an intermediate rotation runs, as PEM; nothing for a server
// without a CA of its own (its certificates copied from the CA machine).
func ownIntermediates(d pki.Dir) ([]byte, error) {
	var out []byte
	for _, name := range []string{pki.IntermediateCertFile, pki.OldIntermediateCertFile} {
		data, err := os.ReadFile(filepath.Join(d.Path, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, data...)
	}
	return out, nil
}

func values(r *clientv3.GetResponse) [][]byte {
	out := make([][]byte, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		out = append(out, kv.Value)
	}
	return out
}
