// Package token implements join tokens: short-lived, use-limited secrets an
// operator hands to a new machine so a server will issue it its first
// certificate.
//
// A token reads nxt1.<id>.<secret>: id is 12 hex digits used to look the
// token up (and safe to show), secret is 32 random bytes in unpadded
// base64url. The cluster's replicated store keeps only SHA-256(secret) —
// the secret is 256 random bits, so a fast hash is enough: there is nothing
// to brute-force — and compares in constant time. Because the records are
// in the store, any server can create, list, revoke and consume a token. The joiner also gets the root CA's pin
// (pki.Pin) with the token, and refuses a server whose CA does not match.
package token

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Prefix marks the token format version.
const Prefix = "nxt1"

// Limits on what Create accepts.
const (
	MaxTTL  = 7 * 24 * time.Hour
	MaxUses = 1000
)

const (
	idLen     = 6  // random bytes in the id
	secretLen = 32 // random bytes in the secret
	maxLen    = 128
)

// Errors Consume and Parse can end in; each says which check failed.
var (
	ErrMalformed   = errors.New("malformed join token")
	ErrUnknown     = errors.New("unknown join token (revoked, or never created)")
	ErrWrongSecret = errors.New("join token secret does not match")
	ErrExpired     = errors.New("join token expired")
	ErrUsedUp      = errors.New("join token has no uses left")
	ErrWrongRole   = errors.New("join token is for another role")
)

// Role is what a machine joining with the token becomes.
type Role string

const (
	RoleAgent  Role = "agent"
	RoleServer Role = "server"
)

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAgent, RoleServer:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q: use agent or server", s)
}

// Token is a parsed join token.
type Token struct {
	ID     string
	Secret [secretLen]byte
}

// String formats the token as nxt1.<id>.<secret>.
func (t Token) String() string {
	return Prefix + "." + t.ID + "." + base64.RawURLEncoding.EncodeToString(t.Secret[:])
}

// Parse reads a token string and checks its form only; Store.Consume checks
// it against the store.
func Parse(s string) (Token, error) {
	if len(s) > maxLen {
		return Token{}, fmt.Errorf("%w: too long", ErrMalformed)
	}
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 3 || parts[0] != Prefix {
		return Token{}, fmt.Errorf("%w: expected %s.<id>.<secret>", ErrMalformed, Prefix)
	}
	var t Token
	if !validID(parts[1]) {
		return Token{}, fmt.Errorf("%w: id must be %d lower-case hex digits", ErrMalformed, 2*idLen)
	}
	t.ID = parts[1]
	secret, err := base64.RawURLEncoding.Strict().DecodeString(parts[2])
	if err != nil || len(secret) != secretLen {
		return Token{}, fmt.Errorf("%w: secret must be %d bytes of unpadded base64url", ErrMalformed, secretLen)
	}
	copy(t.Secret[:], secret)
	return t, nil
}

// Record is what the store keeps about a token: never the secret.
type Record struct {
	ID           string    `json:"id"`
	Role         Role      `json:"role"`
	SecretSHA256 string    `json:"secretSha256"`
	Created      time.Time `json:"created"`
	Expires      time.Time `json:"expires"`
	UsesLeft     int       `json:"usesLeft"`
}

// Expired reports whether the token may no longer be used at now.
func (r Record) Expired(now time.Time) bool { return !now.Before(r.Expires) }

// DefaultPrefix is where the store keeps token records, one key per token
// (<prefix><id>). It is outside the API's object keys, so no API request
// reads it.
const DefaultPrefix = "/nexus/_jointokens/"

// MaxTokens bounds how many records the store keeps (valid, expired or
// used up), so that a loop creating tokens cannot fill the store.
const MaxTokens = 10000

// maxCASAttempts bounds the compare-and-swap retries of one change: each
// retry means another change of the same token won, so a handful is plenty.
const maxCASAttempts = 100

// Store keeps token records in the replicated store, so that every server
// can create, list, revoke and consume the same tokens. Each change is a
// compare-and-swap on the token's key: N concurrent Consumes of a token
// with N uses left, at one server or at several, all succeed and the next
// one fails.
type Store struct {
	cli    *clientv3.Client
	prefix string
	now    func() time.Time
	max    int // MaxTokens; smaller in tests
}

// StoreConfig configures NewStore.
type StoreConfig struct {
	Client *clientv3.Client // the cluster's store (etcd v3 API)
	Prefix string           // default DefaultPrefix
	Now    func() time.Time // default time.Now
}

// NewStore returns the token store on cfg.Client.
func NewStore(cfg StoreConfig) *Store {
	s := &Store{cli: cfg.Client, prefix: cfg.Prefix, now: cfg.Now, max: MaxTokens}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

func (s *Store) key(id string) string { return s.prefix + id }

// CheckCreate checks what Create is asked for, so that a command can
// refuse bad input before it reaches for the store.
func CheckCreate(role Role, ttl time.Duration, uses int) error {
	if _, err := ParseRole(string(role)); err != nil {
		return err
	}
	if ttl <= 0 || ttl > MaxTTL {
		return fmt.Errorf("token lifetime %s: use more than 0 and at most %s", ttl, MaxTTL)
	}
	if uses < 1 || uses > MaxUses {
		return fmt.Errorf("token uses %d: use 1 to %d", uses, MaxUses)
	}
	return nil
}

// Create makes a token for role, valid for ttl and uses joins, and stores
// its record. The returned Token is the only place the secret exists.
func (s *Store) Create(ctx context.Context, role Role, ttl time.Duration, uses int) (Token, Record, error) {
	if err := CheckCreate(role, ttl, uses); err != nil {
		return Token{}, Record{}, err
	}
	if err := s.ready(); err != nil {
		return Token{}, Record{}, err
	}
	n, err := s.cli.Get(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return Token{}, Record{}, fmt.Errorf("token store: count tokens: %w", err)
	}
	if n.Count >= int64(s.max) {
		return Token{}, Record{}, fmt.Errorf("the token store holds %d tokens, its limit: revoke tokens that are expired or used up (nexus token list, nexus token revoke)", n.Count)
	}
	for range maxCASAttempts {
		var t Token
		id := make([]byte, idLen)
		if _, err := rand.Read(id); err != nil {
			return Token{}, Record{}, err
		}
		if _, err := rand.Read(t.Secret[:]); err != nil {
			return Token{}, Record{}, err
		}
		t.ID = hex.EncodeToString(id)
		now := s.now()
		rec := Record{ID: t.ID, Role: role, SecretSHA256: hashSecret(t.Secret), Created: now.UTC(), Expires: now.Add(ttl).UTC(), UsesLeft: uses}
		data, err := json.Marshal(rec)
		if err != nil {
			return Token{}, Record{}, err
		}
		// Create only: a colliding id (1 in 2^48) draws another.
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(s.key(t.ID)), "=", 0)).
			Then(clientv3.OpPut(s.key(t.ID), string(data))).Commit()
		if err != nil {
			return Token{}, Record{}, fmt.Errorf("token store: %w", err)
		}
		if resp.Succeeded {
			return t, rec, nil
		}
	}
	return Token{}, Record{}, errors.New("token store: no free token id after many tries")
}

// Consume checks a presented token (form, id, secret, role, expiry, uses)
// and, if it passes, uses it up by one. role is what the joiner asks to
// become; a token for another role is refused and keeps its uses. It
// returns the record. Concurrent calls with a token of N uses succeed at
// most N times.
func (s *Store) Consume(ctx context.Context, raw string, role Role) (Record, error) {
	t, err := Parse(raw)
	if err != nil {
		return Record{}, err
	}
	return s.change(ctx, t.ID, func(r *Record) error {
		want, err := hex.DecodeString(r.SecretSHA256)
		got := sha256.Sum256(t.Secret[:])
		if err != nil || subtle.ConstantTimeCompare(got[:], want) != 1 {
			return fmt.Errorf("%w: id %s", ErrWrongSecret, t.ID)
		}
		if r.Role != role {
			return fmt.Errorf("%w: id %s is for a machine joining as %s, not as %s: create one with nexus token create --role %s", ErrWrongRole, t.ID, r.Role, role, role)
		}
		if now := s.now(); r.Expired(now) {
			return fmt.Errorf("%w: id %s expired at %s: create a new one (nexus token create)", ErrExpired, t.ID, r.Expires.Format(time.RFC3339))
		}
		if r.UsesLeft <= 0 {
			return fmt.Errorf("%w: id %s: create a new one (nexus token create)", ErrUsedUp, t.ID)
		}
		r.UsesLeft--
		return nil
	})
}

// Refund gives back one use of a token whose join failed after Consume
// (the cluster could not admit the machine), so the operator can retry
// with the same token. A token revoked meanwhile stays revoked.
func (s *Store) Refund(ctx context.Context, id string) error {
	_, err := s.change(ctx, id, func(r *Record) error {
		r.UsesLeft++
		return nil
	})
	return err
}

// change applies fn to the stored record of id with a compare-and-swap,
// retrying when another change won, and returns the record as written.
func (s *Store) change(ctx context.Context, id string, fn func(*Record) error) (Record, error) {
	if err := s.ready(); err != nil {
		return Record{}, err
	}
	for range maxCASAttempts {
		resp, err := s.cli.Get(ctx, s.key(id))
		if err != nil {
			return Record{}, fmt.Errorf("token store: %w", err)
		}
		if len(resp.Kvs) == 0 {
			return Record{}, fmt.Errorf("%w: id %s", ErrUnknown, id)
		}
		kv := resp.Kvs[0]
		var r Record
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return Record{}, fmt.Errorf("token store: the record of id %s is damaged (%v): revoke it (nexus token revoke %s)", id, err, id)
		}
		if err := fn(&r); err != nil {
			return Record{}, err
		}
		data, err := json.Marshal(r)
		if err != nil {
			return Record{}, err
		}
		tx, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.key(id)), "=", kv.ModRevision)).
			Then(clientv3.OpPut(s.key(id), string(data))).Commit()
		if err != nil {
			return Record{}, fmt.Errorf("token store: %w", err)
		}
		if tx.Succeeded {
			return r, nil
		}
	}
	return Record{}, fmt.Errorf("token store: id %s changed under %d attempts in a row; retry", id, maxCASAttempts)
}

// List returns every stored record, oldest first.
func (s *Store) List(ctx context.Context) ([]Record, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("token store: %w", err)
	}
	recs := make([]Record, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r Record
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			id := strings.TrimPrefix(string(kv.Key), s.prefix)
			return nil, fmt.Errorf("token store: the record of id %s is damaged (%v): revoke it (nexus token revoke %s)", id, err, id)
		}
		recs = append(recs, r)
	}
	slices.SortStableFunc(recs, func(a, b Record) int { return a.Created.Compare(b.Created) })
	return recs, nil
}

// Revoke deletes a token so it can no longer be used.
func (s *Store) Revoke(ctx context.Context, id string) error {
	if err := s.ready(); err != nil {
		return err
	}
	if !validID(id) {
		return fmt.Errorf("%w: id %q is not %d lower-case hex digits (see nexus token list)", ErrUnknown, id, 2*idLen)
	}
	resp, err := s.cli.Delete(ctx, s.key(id))
	if err != nil {
		return fmt.Errorf("token store: %w", err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("%w: id %q (see nexus token list)", ErrUnknown, id)
	}
	return nil
}

// ready refuses a Store made without a client.
func (s *Store) ready() error {
	if s.cli == nil {
		return errors.New("token store: no store client (StoreConfig.Client is nil)")
	}
	return nil
}

// validID reports whether id has the form of a token id.
func validID(id string) bool {
	if len(id) != 2*idLen || strings.ToLower(id) != id {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

func hashSecret(secret [secretLen]byte) string {
	sum := sha256.Sum256(secret[:])
	return hex.EncodeToString(sum[:])
}
