// Package token implements join tokens: short-lived, use-limited secrets an
// operator hands to a new machine so a server will issue it its first
// certificate.
//
// A token reads nxt1.<id>.<secret>: id is 12 hex digits used to look the
// token up (and safe to show), secret is 32 random bytes in unpadded
// base64url. The store keeps only SHA-256(secret) — the secret is 256 random
// bits, so a fast hash is enough: there is nothing to brute-force — and
// compares in constant time. The joiner also gets the root CA's pin
// (pki.Pin) with the token, and refuses a server whose CA does not match.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/security/pki"
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
	// maxStoreSize bounds the store file: a record is about 250 bytes of
	// JSON, so this holds some 60 000 tokens.
	maxStoreSize = 16 << 20
)

// Errors Consume and Parse can end in; each says which check failed.
var (
	ErrMalformed   = errors.New("malformed join token")
	ErrUnknown     = errors.New("unknown join token (revoked, or never created)")
	ErrWrongSecret = errors.New("join token secret does not match")
	ErrExpired     = errors.New("join token expired")
	ErrUsedUp      = errors.New("join token has no uses left")
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
	if len(parts[1]) != 2*idLen || strings.ToLower(parts[1]) != parts[1] {
		return Token{}, fmt.Errorf("%w: id must be %d lower-case hex digits", ErrMalformed, 2*idLen)
	}
	if _, err := hex.DecodeString(parts[1]); err != nil {
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

type file struct {
	Version int      `json:"version"`
	Tokens  []Record `json:"tokens"`
}

// Store is the token store: a JSON file (mode 0600) rewritten atomically on
// every change. A mutex and an flock on <path>.lock make Consume atomic
// within and across processes.
type Store struct {
	path    string
	now     func() time.Time
	maxSize int64 // maxStoreSize; smaller in tests
	mu      sync.Mutex
}

// StoreConfig configures NewStore.
type StoreConfig struct {
	Path string           // e.g. <data-dir>/tokens.json
	Now  func() time.Time // default time.Now
}

// NewStore returns the store at cfg.Path; the file is created on first write.
func NewStore(cfg StoreConfig) *Store {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Store{path: cfg.Path, now: now, maxSize: maxStoreSize}
}

// Create makes a token for role, valid for ttl and uses joins, and stores
// its record. The returned Token is the only place the secret exists.
func (s *Store) Create(role Role, ttl time.Duration, uses int) (Token, Record, error) {
	if _, err := ParseRole(string(role)); err != nil {
		return Token{}, Record{}, err
	}
	if ttl <= 0 || ttl > MaxTTL {
		return Token{}, Record{}, fmt.Errorf("token lifetime %s: use more than 0 and at most %s", ttl, MaxTTL)
	}
	if uses < 1 || uses > MaxUses {
		return Token{}, Record{}, fmt.Errorf("token uses %d: use 1 to %d", uses, MaxUses)
	}
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
	err := s.update(func(f *file) error {
		f.Tokens = append(f.Tokens, rec)
		return nil
	})
	if err != nil {
		return Token{}, Record{}, err
	}
	return t, rec, nil
}

// Consume checks a presented token (form, id, secret, expiry, uses) and,
// if it passes, uses it up by one. It returns the record, whose Role says
// what the joiner may become. Concurrent calls with a token of N uses
// succeed at most N times.
func (s *Store) Consume(raw string) (Record, error) {
	t, err := Parse(raw)
	if err != nil {
		return Record{}, err
	}
	var out Record
	err = s.update(func(f *file) error {
		i := slices.IndexFunc(f.Tokens, func(r Record) bool { return r.ID == t.ID })
		if i < 0 {
			return fmt.Errorf("%w: id %s", ErrUnknown, t.ID)
		}
		r := &f.Tokens[i]
		want, err := hex.DecodeString(r.SecretSHA256)
		got := sha256.Sum256(t.Secret[:])
		if err != nil || subtle.ConstantTimeCompare(got[:], want) != 1 {
			return fmt.Errorf("%w: id %s", ErrWrongSecret, t.ID)
		}
		if now := s.now(); r.Expired(now) {
			return fmt.Errorf("%w: id %s expired at %s: create a new one (nexus token create)", ErrExpired, t.ID, r.Expires.Format(time.RFC3339))
		}
		if r.UsesLeft <= 0 {
			return fmt.Errorf("%w: id %s: create a new one (nexus token create)", ErrUsedUp, t.ID)
		}
		r.UsesLeft--
		out = *r
		return nil
	})
	return out, err
}

// List returns every stored record, oldest first.
func (s *Store) List() ([]Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.load()
	if err != nil {
		return nil, err
	}
	return f.Tokens, nil
}

// Revoke deletes a token so it can no longer be used.
func (s *Store) Revoke(id string) error {
	return s.update(func(f *file) error {
		n := len(f.Tokens)
		f.Tokens = slices.DeleteFunc(f.Tokens, func(r Record) bool { return r.ID == id })
		if len(f.Tokens) == n {
			return fmt.Errorf("%w: id %q (see nexus token list)", ErrUnknown, id)
		}
		return nil
	})
}

// update runs fn on the loaded file under both locks and saves the result
// if fn succeeds.
func (s *Store) update(fn func(*file) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.flock()
	if err != nil {
		return err
	}
	defer unlock()
	f, err := s.load()
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		return err
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if int64(len(data))+1 > s.maxSize {
		return fmt.Errorf("token store %s would grow past %s: revoke tokens that are expired or used up (nexus token list, nexus token revoke)", s.path, fsutil.FormatSize(s.maxSize))
	}
	if err := pki.WriteFileAtomic(s.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("token store: %w", err)
	}
	return nil
}

func (s *Store) flock() (func(), error) {
	if s.path == "" {
		return nil, errNoPath
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return nil, fmt.Errorf("token store: %w", err)
	}
	lf, err := os.OpenFile(s.path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("token store: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		lf.Close()
		return nil, fmt.Errorf("token store: lock: %w", err)
	}
	return func() { lf.Close() }, nil // closing releases the lock
}

// errNoPath refuses a store without a file: it would be written in the
// current directory.
var errNoPath = errors.New("token store: no file given (StoreConfig.Path is empty)")

func (s *Store) load() (*file, error) {
	if s.path == "" {
		return nil, errNoPath
	}
	data, err := fsutil.ReadFileLimit(s.path, s.maxSize)
	if errors.Is(err, fs.ErrNotExist) {
		return &file{Version: 1}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("token store: %w", err)
	}
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("token store %s is damaged (%v): remove it to start with no tokens", s.path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("token store %s: version %d, this binary reads version 1", s.path, f.Version)
	}
	return &f, nil
}

func hashSecret(secret [secretLen]byte) string {
	sum := sha256.Sum256(secret[:])
	return hex.EncodeToString(sum[:])
}
