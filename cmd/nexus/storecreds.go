package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"nexus.dev/nexus/security/pki"
)

// peerCredsKeeper keeps a store member's peer certificate current for as
// long as the member runs. Leaves live 24 hours, so without it a member
// would refuse (and be refused by) every new peer connection a day after
// it started. Where the member's own data dir holds the cluster's issuing
// CA, it renews the certificate itself at half-life (new key, as every
// Nexus server does); either way it reloads the files when they change, so
// a certificate renewed elsewhere (nexus cert issue on the CA machine, then
// copied) takes effect without a restart.
type peerCredsKeeper struct {
	creds *pki.Credentials
	cert  string // certificate chain file, leaf first
	key   string
	ca    string // trust bundle
	// localCA renews the certificate when set: the files are the data
	// dir's node.crt/node.key and its intermediate key is present.
	localCA *pki.Dir
	log     *slog.Logger
	now     func() time.Time

	stamps  map[string]fileStamp
	renewAt time.Time
	warned  time.Time
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func newPeerCredsKeeper(creds *pki.Credentials, cert, key, ca string, dataDir string, log *slog.Logger) *peerCredsKeeper {
	k := &peerCredsKeeper{creds: creds, cert: cert, key: key, ca: ca, log: log, now: time.Now, stamps: map[string]fileStamp{}}
	d := pki.Dir{Path: filepath.Join(dataDir, "pki")}
	if cert == filepath.Join(d.Path, pki.NodeCertFile) && key == filepath.Join(d.Path, pki.NodeKeyFile) {
		if _, err := os.Stat(filepath.Join(d.Path, pki.IntermediateKeyFile)); err == nil {
			k.localCA = &d
		}
	}
	for _, p := range []string{cert, key, ca} {
		k.stamps[p] = stampOf(p)
	}
	k.schedule()
	return k
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}
}

// schedule sets the renewal time of the certificate in use: half-life plus
// a jitter derived from its serial, so members issued together spread out.
func (k *peerCredsKeeper) schedule() {
	leaf := k.creds.Leaf()
	jitter := float64(new(big.Int).Mod(leaf.SerialNumber, big.NewInt(1000)).Int64()) / 1000
	k.renewAt = pki.RenewAt(leaf.NotBefore, leaf.NotAfter, jitter)
}

// run checks every interval until ctx ends.
func (k *peerCredsKeeper) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			k.check(ctx)
		}
	}
}

// check renews if it is time and this member holds the CA, then reloads
// changed files, then warns if the certificate is due and nobody renewed it.
func (k *peerCredsKeeper) check(ctx context.Context) {
	now := k.now()
	if k.localCA != nil && !now.Before(k.renewAt) {
		if _, err := k.localCA.RenewNode(ctx, pki.DefaultLeafTTL); err != nil {
			k.log.Warn("renewing the peer certificate from the local CA failed; retrying", "err", err)
		}
	}
	changed := false
	for p, old := range k.stamps {
		if st := stampOf(p); st != old {
			changed = true
		}
	}
	if changed {
		if err := k.reload(); err != nil {
			// Half-copied files look like this too: try again next time.
			k.log.Warn("peer certificate files changed but cannot be used yet", "err", err)
		}
	}
	leaf := k.creds.Leaf()
	if k.localCA == nil && !now.Before(k.renewAt) && now.Sub(k.warned) >= time.Hour {
		k.warned = now
		k.log.Warn("the peer certificate is past half its life and nobody renewed it: issue a new one on the CA machine "+
			"(nexus cert issue --server NAME --out DIR) and copy it over these files; the member picks it up without a restart",
			"cert", k.cert, "expires", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
}

// reload reads the three files and installs what changed: the bundle first
// (a new certificate may chain to a new intermediate), then the certificate,
// which must keep this member's identity.
func (k *peerCredsKeeper) reload() error {
	stamps := map[string]fileStamp{}
	for p := range k.stamps {
		stamps[p] = stampOf(p)
	}
	chain, key, bundle, err := readPeerFiles(k.cert, k.key, k.ca)
	if err != nil {
		return err
	}
	id, err := pki.LeafIdentity(chain[0])
	if err != nil {
		return fmt.Errorf("peer certificate %s: %w", k.cert, err)
	}
	if want := k.creds.Identity(); id != want {
		return fmt.Errorf("peer certificate %s is now for %s, not this member (%s): put back a certificate for %s", k.cert, id, want, want)
	}
	if !bytes.Equal(bundle.PEM(), k.creds.Bundle().PEM()) {
		if err := k.creds.SetBundle(bundle); err != nil {
			return err
		}
	}
	if err := k.creds.SetCertificate(chain, key); err != nil {
		return fmt.Errorf("peer certificate %s: %w", k.cert, err)
	}
	k.stamps = stamps
	k.schedule()
	k.log.Info("peer certificate reloaded", "serial", pki.SerialString(chain[0]), "expires", chain[0].NotAfter.UTC().Format(time.RFC3339))
	return nil
}
