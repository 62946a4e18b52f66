package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/storage"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/join"
	"nexus.dev/nexus/security/pki"
	"nexus.dev/nexus/security/token"
	"nexus.dev/nexus/store/raftnode"
	storeserver "nexus.dev/nexus/store/server"
	"nexus.dev/nexus/transport"
)

// joinService is the join service on the store's peer listener. It
// answers "server is starting" until the API is up: its token store and
// server list need the store client, which exists only once the member
// it is served beside has started.
func (s *Server) joinService() transport.Service {
	return transport.Service{Anonymous: true, Handler: transport.HandlerFunc(func(ctx context.Context, peer identity.ID, method string, req []byte) ([]byte, error) {
		js := s.join.Load()
		if js == nil {
			return nil, &transport.RemoteError{Code: 503, Message: "server " + s.cfg.Name + " is starting: retry in a few seconds"}
		}
		return js.Service().Handler.Serve(ctx, peer, method, req)
	})}
}

// startJoinService makes the join service answer: agents get a node
// certificate from this server's intermediate CA, servers are admitted by
// admitter (only with the embedded store).
func (s *Server) startJoinService() {
	d := pki.Dir{Path: filepath.Join(s.cfg.DataDir, "pki")}
	js := &join.Server{Cluster: s.cfg.Cluster, Tokens: token.NewStore(token.StoreConfig{Client: s.client}),
		Issuer: func() (*pki.Issuer, error) { return d.Issuer(0) }, Bundle: d.Bundle,
		Servers: s.serverURLs}
	if s.member != nil {
		js.Admit = admitter{s}
	}
	s.join.Store(js)
}

// serverURLs lists the API URLs of the cluster's servers, from their
// Server objects.
func (s *Server) serverURLs(ctx context.Context) []string {
	list, err := s.api.Store().List(ctx, serverResource(), "", storage.ListOptions{})
	if err != nil {
		s.log.Warn("list the servers for a joiner", "err", err)
		return nil
	}
	var urls []string
	for _, o := range list.Items {
		if u := o.(*types.Server).Status.APIURL; u != "" {
			urls = append(urls, u)
		}
	}
	slices.Sort(urls)
	return urls
}

// admitter takes joining servers into the cluster (join.Admitter).
type admitter struct{ s *Server }

func (a admitter) node() *raftnode.Node { return a.s.member.Server().Node() }

// CheckServer refuses a joiner the cluster cannot take, before its token
// is used: this server must be a voting member reachable by the joiner,
// able to sign an intermediate CA (it holds the root key), and the name
// and peer address must not belong to another member. A learner of the
// same name and address is a join that was interrupted after admission:
// it is admitted again.
func (a admitter) CheckServer(_ context.Context, name, peerAddr string) error {
	members := a.node().Members()
	self := slices.IndexFunc(members, func(m raftnode.Member) bool { return m.ID == a.node().ID() })
	switch {
	case self < 0:
		return fmt.Errorf("server %s is not a member of the store (it was removed): join through another server", a.s.cfg.Name)
	case members[self].Learner:
		return fmt.Errorf("server %s is still a learner of the store, catching up: join through a voting server, or retry in a minute", a.s.cfg.Name)
	case isLoopback(members[self].Addr):
		return fmt.Errorf("server %s's store member is recorded at %s, loopback, which other machines cannot reach: a cluster's first server must be started with --store-peer-addr set to an address the others reach", a.s.cfg.Name, members[self].Addr)
	}
	for _, m := range members {
		if m.Name == name && !(m.Learner && m.Addr == peerAddr) {
			role := "voting member"
			if m.Learner {
				role = "learner"
			}
			return fmt.Errorf("server %q is already a %s of the store (peer %s): pick another --name, or remove it first (nexus server remove %s)", name, role, m.Addr, name)
		}
		if m.Addr == peerAddr && m.Name != name {
			return fmt.Errorf("store peer address %s is already member %s's: give this server its own --store-peer-addr", peerAddr, m.Name)
		}
	}
	if _, err := a.s.pkiDir().Root(nil); err != nil {
		return fmt.Errorf("server %s cannot sign an intermediate CA for a new server (%v): join servers through the server that holds %s (the cluster's first server)", a.s.cfg.Name, err, pki.RootKeyFile)
	}
	return nil
}

// AdmitServer signs the joiner's intermediate CA with the root, publishes
// it so every server trusts it, and adds the joiner to the store as a
// learner. If adding fails the intermediate is withdrawn again.
func (a admitter) AdmitServer(ctx context.Context, name, peerAddr string, csr []byte) (*join.ServerGrant, error) {
	d := a.s.pkiDir()
	root, err := d.Root(nil)
	if err != nil {
		return nil, err
	}
	inter, err := root.SignIntermediate(csr, 0, nil)
	if err != nil {
		return nil, err
	}
	revocations, err := fsutil.ReadFileLimit(filepath.Join(d.Path, pki.RevocationsFile), 16<<20)
	if err != nil {
		return nil, err
	}
	secrets, err := fsutil.ReadFileLimit(filepath.Join(a.s.cfg.DataDir, SecretsKeyFile), 1<<20)
	if err != nil {
		return nil, err
	}
	key := intermediatesPrefix + name
	if _, err := a.s.client.Put(ctx, key, string(pki.EncodeCertificates(inter))); err != nil {
		return nil, fmt.Errorf("publish its intermediate CA: %w", err)
	}
	p := raftnode.Peer{ID: storeserver.MemberID(name), Name: name, Addr: peerAddr}
	if !slices.ContainsFunc(a.node().Members(), func(m raftnode.Member) bool { return m.ID == p.ID }) {
		if err := a.node().AddLearner(ctx, p); err != nil {
			if _, derr := a.s.client.Delete(context.WithoutCancel(ctx), key); derr != nil {
				a.s.log.Warn("withdraw the intermediate CA of a server that did not join", "server", name, "err", derr)
			}
			return nil, fmt.Errorf("add it to the store as a learner: %w", err)
		}
	}
	rev, err := a.s.client.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	var members []join.Member
	for _, m := range a.node().Members() {
		members = append(members, join.Member{Name: m.Name, ID: m.ID, PeerAddr: m.Addr, Learner: m.Learner})
	}
	a.s.log.Info("admitted a server as a learner of the store", "server", name, "peer", peerAddr)
	return &join.ServerGrant{Intermediate: pki.EncodeCertificates(inter), Revocations: revocations, SecretsKey: secrets,
		Members: members, Revision: rev.Header.Revision}, nil
}

// pkiDir is the server's PKI directory.
func (s *Server) pkiDir() pki.Dir { return pki.Dir{Path: filepath.Join(s.cfg.DataDir, "pki")} }

// ErrQuorum means removing a server would leave the store without a
// quorum of live voting members.
var ErrQuorum = errors.New("removing it would leave the store without a quorum")

// RemoveConfig says which server to take out of the cluster.
type RemoveConfig struct {
	// Client is a client of the cluster's store (a server's socket).
	Client *clientv3.Client
	// Name is the server to remove.
	Name string
	// Force removes it even when the voting members left, counting only
	// those that heartbeat, would be fewer than a quorum.
	Force bool
}

// RemoveServer takes a server out of the store's membership. It refuses,
// unless forced, when the voting members left would not form a quorum of
// live ones (a Server heartbeat within ServerStaleAfter), since the store
// would then stop taking writes; and always when it is the last voting
// member. The removed server stops on its own once it learns of it, and
// the others delete its Server object.
func RemoveServer(ctx context.Context, cfg RemoveConfig) error {
	resp, err := cfg.Client.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("list the store's members: %w", err)
	}
	var target uint64
	var learner bool
	var voters []string
	for _, m := range resp.Members {
		if m.Name == cfg.Name {
			target, learner = m.ID, m.IsLearner
			continue
		}
		if !m.IsLearner {
			voters = append(voters, m.Name)
		}
	}
	if target == 0 {
		names := make([]string, 0, len(resp.Members))
		for _, m := range resp.Members {
			names = append(names, m.Name)
		}
		return fmt.Errorf("server %q is not a member of the store (members: %v)", cfg.Name, names)
	}
	if !learner {
		live, err := liveServers(ctx, cfg.Client)
		if err != nil {
			return err
		}
		if err := checkQuorum(cfg.Name, voters, live, cfg.Force); err != nil {
			return err
		}
	}
	if _, err := cfg.Client.MemberRemove(ctx, target); err != nil {
		return fmt.Errorf("remove server %s (member %x) from the store: %w", cfg.Name, target, err)
	}
	return nil
}

// checkQuorum decides whether voting member name may go, leaving voters:
// never the last one, and, unless forced, only while a quorum of those
// left is live.
func checkQuorum(name string, voters []string, live map[string]bool, force bool) error {
	if len(voters) == 0 {
		return fmt.Errorf("%w: server %s is the store's last voting member; to retire the cluster, stop it instead", ErrQuorum, name)
	}
	var up []string
	for _, v := range voters {
		if live[v] {
			up = append(up, v)
		}
	}
	if quorum := len(voters)/2 + 1; len(up) < quorum && !force {
		return fmt.Errorf("%w: without %s the store has %d voting members %v, of which %d are up %v, and it needs %d to take writes: bring the others back first, or pass --force",
			ErrQuorum, name, len(voters), voters, len(up), up, quorum)
	}
	return nil
}

// liveServers are the servers whose Server object had a heartbeat within
// ServerStaleAfter.
func liveServers(ctx context.Context, cli *clientv3.Client) (map[string]bool, error) {
	st := storage.New(storage.Config{Client: cli})
	list, err := st.List(ctx, serverResource(), "", storage.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("read the servers' heartbeats: %w", err)
	}
	live := map[string]bool{}
	for _, o := range list.Items {
		srv := o.(*types.Server)
		if time.Since(srv.Status.LastHeartbeat) < ServerStaleAfter {
			live[srv.Name] = true
		}
	}
	return live, nil
}
