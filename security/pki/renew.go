package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// RenewJitter is the share of a certificate's lifetime over which renewals
// are spread after half-life, so that a cluster's nodes, all issued at
// about the same time, do not all renew at the same moment.
const RenewJitter = 0.1

// RenewAt is the renewal policy: at half-life plus jitter (in [0, 1]) times
// RenewJitter of the lifetime, i.e. between 50% and 60% of the way from
// notBefore to notAfter. Renewing at half-life leaves the other half of the
// lifetime to retry through a CA outage.
func RenewAt(notBefore, notAfter time.Time, jitter float64) time.Time {
	life := notAfter.Sub(notBefore)
	if life <= 0 {
		return notBefore
	}
	if !(jitter > 0) { // also NaN
		jitter = 0
	}
	jitter = min(jitter, 1)
	return notBefore.Add(life/2 + time.Duration(float64(life)*RenewJitter*jitter))
}

// RenewFunc is the CSR round trip: it sends a PEM CSR to the CA (locally or
// over the network) and returns the issued chain, leaf first.
type RenewFunc func(ctx context.Context, csrPEM []byte) ([]*x509.Certificate, error)

// RenewerConfig configures NewRenewer.
type RenewerConfig struct {
	Credentials *Credentials // whose certificate to renew
	Renew       RenewFunc
	Clock       Clock          // default SystemClock
	Jitter      func() float64 // in [0, 1); default math/rand
	// RetryInterval is the first wait after a failed renewal; it doubles
	// up to MaxRetryInterval. Defaults 10 s and 5 min.
	RetryInterval, MaxRetryInterval time.Duration
	// Renewed, if set, is called after each renewal, e.g. to write the new
	// certificate and key to disk. An error fails the renewal (RenewNow
	// returns it wrapping ErrNotSaved, Run retries) although the new
	// certificate is already in use: a copy on disk that stays behind would
	// be expired at the next start.
	Renewed func(chain []*x509.Certificate, key *ecdsa.PrivateKey) error
	Logger  *slog.Logger // default slog.Default()
}

// ErrNotSaved means a renewal went through and is in use, but saving it
// (RenewerConfig.Renewed) failed.
var ErrNotSaved = errors.New("the renewed certificate was not saved")

// Renewer keeps an endpoint's certificate fresh: it renews at RenewAt with a
// new key each time and swaps it into the Credentials.
type Renewer struct {
	cfg     RenewerConfig
	renewed chan struct{} // kicks Run to recompute after RenewNow
}

// NewRenewer checks the configuration and returns a Renewer; start it with Run.
func NewRenewer(cfg RenewerConfig) (*Renewer, error) {
	if cfg.Credentials == nil || cfg.Renew == nil {
		return nil, errors.New("renewer: Credentials and Renew are required")
	}
	cfg.Clock = clockOr(cfg.Clock)
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Float64
	}
	cfg.RetryInterval = durationOr(cfg.RetryInterval, 10*time.Second)
	cfg.MaxRetryInterval = durationOr(cfg.MaxRetryInterval, 5*time.Minute)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Renewer{cfg: cfg, renewed: make(chan struct{}, 1)}, nil
}

// Run renews the certificate whenever its renewal time comes, retrying with
// backoff on failure, until ctx is done.
func (r *Renewer) Run(ctx context.Context) error {
	retry := time.Duration(0)
	for {
		leaf := r.cfg.Credentials.Leaf()
		at := RenewAt(leaf.NotBefore, leaf.NotAfter, r.cfg.Jitter())
		now := r.cfg.Clock.Now()
		if retry > 0 {
			at = now.Add(retry)
		}
		if d := at.Sub(now); d > 0 {
			t := r.cfg.Clock.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-r.renewed:
				t.Stop()
				retry = 0
				continue
			case <-t.C():
			}
		}
		err := r.RenewNow(ctx)
		select { // a kick RenewNow just sent is for us; drop it
		case <-r.renewed:
		default:
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			retry = min(max(2*retry, r.cfg.RetryInterval), r.cfg.MaxRetryInterval)
			r.cfg.Logger.Warn("certificate renewal failed", "id", r.cfg.Credentials.Identity(), "expires", leaf.NotAfter, "retry_in", retry, "err", err)
			continue
		}
		retry = 0
	}
}

// RenewNow renews once: a new key, a CSR for the same identity, the round
// trip, an atomic swap so the next handshake uses the new certificate, and
// the save (RenewerConfig.Renewed), whose failure is returned wrapping
// ErrNotSaved.
func (r *Renewer) RenewNow(ctx context.Context) error {
	creds := r.cfg.Credentials
	id := creds.Identity()
	key, err := GenerateKey()
	if err != nil {
		return fmt.Errorf("renew %s: %w", id, err)
	}
	csr, err := CreateCSR(key, id)
	if err != nil {
		return fmt.Errorf("renew %s: %w", id, err)
	}
	chain, err := r.cfg.Renew(ctx, csr)
	if err != nil {
		return fmt.Errorf("renew %s: %w", id, err)
	}
	if len(chain) == 0 {
		return fmt.Errorf("renew %s: the CA returned no certificate", id)
	}
	got, err := LeafIdentity(chain[0])
	if err != nil {
		return fmt.Errorf("renew %s: %w", id, err)
	}
	if err := RequireIdentity(got, id); err != nil {
		return fmt.Errorf("renew %s: the CA issued a certificate for someone else: %w", id, err)
	}
	if err := creds.SetCertificate(chain, key); err != nil {
		return fmt.Errorf("renew %s: %w", id, err)
	}
	select {
	case r.renewed <- struct{}{}:
	default:
	}
	if r.cfg.Renewed != nil {
		if err := r.cfg.Renewed(chain, key); err != nil {
			return fmt.Errorf("renew %s: %w: %w", id, ErrNotSaved, err)
		}
	}
	r.cfg.Logger.Info("certificate renewed", "id", id, "serial", SerialString(chain[0]), "expires", chain[0].NotAfter)
	return nil
}
