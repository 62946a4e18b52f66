package pki

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"time"

	"nexus.dev/nexus/internal/fsutil"
)

// Keeper keeps a running process's credentials current from files, for as
// long as it runs: leaves live 24 hours, so without it a server would refuse
// (and be refused by) every new connection a day after it started.
//
//   - With Issue set (the machine holds the issuing CA), it renews the
//     certificate at its renewal time (half-life plus a jitter from its
//     serial) with a new key, through a Renewer, and saves it to the files.
//   - Either way it reloads the certificate, the trust bundle and the
//     revocation list when their files change, so a certificate renewed
//     elsewhere and copied over, a rotated intermediate or a revocation
//     (nexus cert revoke) takes effect without a restart; Credentials then
//     re-checks live connections.
//
// The store member, the API server and the agent share it.
type Keeper struct {
	cfg     KeeperConfig
	stamps  map[string]fileStamp
	renewAt time.Time
	warned  time.Time
}

// KeeperConfig configures NewKeeper.
type KeeperConfig struct {
	Credentials *Credentials
	// CertFile (chain, leaf first) and KeyFile hold the certificate in use;
	// BundleFile the trust bundle; RevocationsFile (optional) the signed
	// revocation list.
	CertFile, KeyFile, BundleFile, RevocationsFile string
	// Issue, when set, signs a renewal's CSR: the local CA. Leaf options
	// (a serving certificate's names) are the caller's to apply.
	Issue RenewFunc
	// Interval between checks (default 30 s).
	Interval time.Duration
	Clock    Clock
	Logger   *slog.Logger
	// Warning is logged once an hour when the certificate is past its
	// renewal time and nobody renewed it (no Issue): what to do about it.
	Warning string
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) fileStamp {
	if path == "" {
		return fileStamp{}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}
}

// NewKeeper checks the configuration and returns a Keeper; start it with Run.
func NewKeeper(cfg KeeperConfig) (*Keeper, error) {
	if cfg.Credentials == nil || cfg.CertFile == "" || cfg.KeyFile == "" || cfg.BundleFile == "" {
		return nil, errors.New("keeper: Credentials, CertFile, KeyFile and BundleFile are required")
	}
	cfg.Clock = clockOr(cfg.Clock)
	cfg.Interval = durationOr(cfg.Interval, 30*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	k := &Keeper{cfg: cfg, stamps: map[string]fileStamp{}}
	for _, p := range k.files() {
		k.stamps[p] = stampOf(p)
	}
	k.schedule()
	return k, nil
}

func (k *Keeper) files() []string {
	fs := []string{k.cfg.CertFile, k.cfg.KeyFile, k.cfg.BundleFile}
	if k.cfg.RevocationsFile != "" {
		fs = append(fs, k.cfg.RevocationsFile)
	}
	return fs
}

// schedule sets the renewal time of the certificate in use: half-life plus
// a jitter derived from its serial, so certificates issued together spread
// out.
func (k *Keeper) schedule() {
	leaf := k.cfg.Credentials.Leaf()
	jitter := float64(new(big.Int).Mod(leaf.SerialNumber, big.NewInt(1000)).Int64()) / 1000
	k.renewAt = RenewAt(leaf.NotBefore, leaf.NotAfter, jitter)
}

// Run checks every Interval until ctx ends.
func (k *Keeper) Run(ctx context.Context) {
	t := time.NewTicker(k.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			k.Check(ctx)
		}
	}
}

// Check renews if it is time and the CA is here, then reloads changed
// files, then warns if the certificate is due and nobody renewed it.
func (k *Keeper) Check(ctx context.Context) {
	now := k.cfg.Clock.Now()
	if k.cfg.Issue != nil && !now.Before(k.renewAt) {
		if err := k.renew(ctx); err != nil {
			k.cfg.Logger.Warn("renewing the certificate from the local CA failed; retrying", "cert", k.cfg.CertFile, "err", err)
		}
	}
	changed := false
	for p, old := range k.stamps {
		if stampOf(p) != old {
			changed = true
		}
	}
	if changed {
		if err := k.reload(); err != nil {
			// Half-copied files look like this too: try again next time.
			k.cfg.Logger.Warn("credential files changed but cannot be used yet", "cert", k.cfg.CertFile, "err", err)
		}
	}
	if k.cfg.Issue == nil && !now.Before(k.renewAt) && now.Sub(k.warned) >= time.Hour {
		k.warned = now
		k.cfg.Logger.Warn("the certificate is past half its life and nobody renewed it: "+k.cfg.Warning,
			"cert", k.cfg.CertFile, "expires", k.cfg.Credentials.Leaf().NotAfter.UTC().Format(time.RFC3339))
	}
}

func (k *Keeper) renew(ctx context.Context) error {
	r, err := NewRenewer(RenewerConfig{
		Credentials: k.cfg.Credentials,
		Clock:       k.cfg.Clock,
		Renew:       k.cfg.Issue,
		Logger:      k.cfg.Logger,
		Renewed: func(chain []*x509.Certificate, key *ecdsa.PrivateKey) error {
			return writeChain(k.cfg.CertFile, k.cfg.KeyFile, chain, key)
		},
	})
	if err != nil {
		return err
	}
	if err := r.RenewNow(ctx); err != nil {
		return err
	}
	for _, p := range []string{k.cfg.CertFile, k.cfg.KeyFile} {
		k.stamps[p] = stampOf(p)
	}
	k.schedule()
	leaf := k.cfg.Credentials.Leaf()
	k.cfg.Logger.Info("certificate renewed", "id", k.cfg.Credentials.Identity(), "serial", SerialString(leaf), "expires", leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// reload reads the files and installs what changed: the bundle first (a new
// certificate may chain to a new intermediate), then the revocation list,
// then the certificate, which must keep this process's identity.
func (k *Keeper) reload() error {
	stamps := map[string]fileStamp{}
	for p := range k.stamps {
		stamps[p] = stampOf(p)
	}
	bundle, err := ReadBundleFile(k.cfg.BundleFile)
	if err != nil {
		return err
	}
	chain, err := ReadCertificatesFile(k.cfg.CertFile)
	if err != nil {
		return err
	}
	key, err := ReadKeyFile(k.cfg.KeyFile, nil)
	if err != nil {
		return err
	}
	id, err := LeafIdentity(chain[0])
	if err != nil {
		return fmt.Errorf("%s: %w", k.cfg.CertFile, err)
	}
	if want := k.cfg.Credentials.Identity(); id != want {
		return fmt.Errorf("%s is now for %s, not this process (%s): put back a certificate for %s", k.cfg.CertFile, id, want, want)
	}
	creds := k.cfg.Credentials
	if !bytes.Equal(bundle.PEM(), creds.Bundle().PEM()) {
		if err := creds.SetBundle(bundle); err != nil {
			return err
		}
	}
	if k.cfg.RevocationsFile != "" {
		data, err := fsutil.ReadFileLimit(k.cfg.RevocationsFile, maxRevocationListSize)
		if err != nil {
			return err
		}
		rl, err := ParseRevocationList(data, bundle, k.cfg.Clock.Now())
		if err != nil {
			return fmt.Errorf("%s: %w", k.cfg.RevocationsFile, err)
		}
		if rl.Number() != creds.Revocations().Number() {
			if err := creds.SetRevocations(rl); err != nil {
				return fmt.Errorf("%s: %w", k.cfg.RevocationsFile, err)
			}
			k.cfg.Logger.Info("revocation list reloaded", "number", rl.Number(), "revoked", len(rl.Serials()))
		}
	}
	if !chain[0].Equal(creds.Leaf()) {
		if err := creds.SetCertificate(chain, key); err != nil {
			return fmt.Errorf("%s: %w", k.cfg.CertFile, err)
		}
		k.cfg.Logger.Info("certificate reloaded", "cert", k.cfg.CertFile, "serial", SerialString(chain[0]), "expires", chain[0].NotAfter.UTC().Format(time.RFC3339))
	}
	k.stamps = stamps
	k.schedule()
	return nil
}

// Renews reports whether the keeper renews the certificate itself (the CA
// is local) rather than waiting for new files.
func (k *Keeper) Renews() bool { return k.cfg.Issue != nil }
