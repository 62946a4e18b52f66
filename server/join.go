package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/security/join"
	"nexus.dev/nexus/security/pki"
	"nexus.dev/nexus/security/token"
	"nexus.dev/nexus/store/raftnode"
)

// JoinConfig is how a new server joins an existing cluster.
type JoinConfig struct {
	// Addr is a server's peer address (host or host:port; port 7380 by
	// default), where its join service answers.
	Addr string
	// Token is a join token for a server (nexus token create --role server).
	Token string
	// CAPin is the root CA's pin printed with the token.
	CAPin string
}

// SecretsKeyFile is the keyring that seals Secrets at rest, in the data
// directory; every server of a cluster has the same one.
const SecretsKeyFile = "secrets.key"

// DefaultPeerPort is where the store's members and the join service
// listen unless told otherwise.
const DefaultPeerPort = 7380

// JoinedFile records, in the data directory, that this server joined a
// cluster: the store members it was given and the revision it must reach
// before it asks to vote. Its presence makes the store member start as a
// joiner (never a new cluster of its own) and makes --join a no-op on
// later starts.
const JoinedFile = "joined.json"

// joined is JoinedFile's content.
type joined struct {
	Members  []join.Member `json:"members"`
	Revision int64         `json:"revision"`
}

// readJoined reads JoinedFile; nil when this server did not join (it
// created the cluster, or has not joined yet).
func readJoined(dataDir string) (*joined, error) {
	path := filepath.Join(dataDir, JoinedFile)
	data, err := fsutil.ReadFileLimit(path, 1<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var j joined
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("%s is damaged (%v): this server cannot tell which cluster it joined; remove the data directory and join again", path, err)
	}
	return &j, nil
}

// peers converts the recorded members for the store member's start.
func (j *joined) peers() []raftnode.Peer {
	out := make([]raftnode.Peer, 0, len(j.Members))
	for _, m := range j.Members {
		out = append(out, raftnode.Peer{ID: m.ID, Name: m.Name, Addr: m.PeerAddr})
	}
	return out
}

// joinCluster runs the join flow for a new server and writes what it got
// into the data directory: the PKI (the pinned root's certificate, this
// server's own intermediate CA and key, the trust bundle, the revocation
// list, its server certificate), the secrets keyring, and JoinedFile last,
// so that a join interrupted before it finished leaves no JoinedFile and
// Start refuses the half-written directory instead of making a cluster
// of its own.
func joinCluster(ctx context.Context, cfg *Config) error {
	d := pki.Dir{Path: filepath.Join(cfg.DataDir, "pki")}
	if entries, err := os.ReadDir(d.Path); err == nil && len(entries) > 0 {
		return fmt.Errorf("--join: %s already holds a PKI but %s has no record of a join: this data directory belongs to another cluster, or an earlier join stopped half-way; use an empty --data-dir", d.Path, cfg.DataDir)
	}
	peer := cfg.peerAdvertise()
	if err := join.CheckPeerAddr(peer); err != nil {
		return fmt.Errorf("--join: %w (set --store-peer-addr or --advertise)", err)
	}
	if isLoopback(peer) {
		return fmt.Errorf("--join: this server's store peer address %s is loopback, which the other servers cannot reach: start it with --store-peer-addr HOST:%d (HOST: an address of this machine the others reach)", peer, DefaultPeerPort)
	}
	addr := cfg.Join.Addr
	if !hasPort(addr) {
		addr = joinHostPort(addr, DefaultPeerPort)
	}
	jctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	res, err := join.Join(jctx, join.Config{Addr: addr, Token: cfg.Join.Token, Pin: cfg.Join.CAPin, Name: cfg.Name,
		Role: token.RoleServer, PeerAddr: peer})
	if err != nil {
		return err
	}
	g := res.Server
	if err := os.MkdirAll(d.Path, 0o700); err != nil {
		return err
	}
	interKey, err := pki.MarshalKey(g.IntermediateKey, nil)
	if err != nil {
		return err
	}
	nodeKey, err := pki.MarshalKey(res.Key, nil)
	if err != nil {
		return err
	}
	files := []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{filepath.Join(d.Path, pki.RootCertFile), pki.EncodeCertificates(g.Root), 0o644},
		{filepath.Join(d.Path, pki.IntermediateKeyFile), interKey, 0o600},
		{filepath.Join(d.Path, pki.IntermediateCertFile), pki.EncodeCertificates(g.Intermediate), 0o644},
		{filepath.Join(d.Path, pki.BundleFile), res.Bundle.PEM(), 0o644},
		{filepath.Join(d.Path, pki.RevocationsFile), g.Revocations, 0o644},
		{filepath.Join(d.Path, pki.NodeKeyFile), nodeKey, 0o600},
		{filepath.Join(d.Path, pki.NodeCertFile), pki.EncodeCertificates(res.Chain...), 0o644},
		{filepath.Join(cfg.DataDir, SecretsKeyFile), g.SecretsKey, 0o600},
	}
	for _, f := range files {
		if err := pki.WriteFileAtomic(f.path, f.data, f.perm); err != nil {
			return fmt.Errorf("--join: save what the cluster granted: %w", err)
		}
	}
	data, err := json.MarshalIndent(joined{Members: g.Members, Revision: g.Revision}, "", "  ")
	if err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(filepath.Join(cfg.DataDir, JoinedFile), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("--join: %w", err)
	}
	cfg.Logger.Info("joined the cluster", "server", cfg.Name, "via", addr, "identity", res.ID.String(), "members", len(g.Members), "servers", res.Servers)
	return nil
}
