package token

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nexus.dev/nexus/internal/fsutil"
)

type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestStore(t *testing.T) (*Store, *manualClock, string) {
	clock := &manualClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "tokens.json")
	return NewStore(StoreConfig{Path: path, Now: clock.Now}), clock, path
}

func TestParse(t *testing.T) {
	secret := base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0xab}, 32))
	tests := []struct {
		in   string
		want string // error substring; "" = ok
	}{
		{"nxt1.0123456789ab." + secret, ""},
		{" nxt1.0123456789ab." + secret + "\n", ""},
		{"", "expected nxt1"},
		{"nxt2.0123456789ab." + secret, "expected nxt1"},
		{"nxt1.0123456789ab", "expected nxt1"},
		{"nxt1.0123456789ab." + secret + ".x", "expected nxt1"},
		{"nxt1.0123456789AB." + secret, "lower-case hex"},
		{"nxt1.0123456789." + secret, "lower-case hex"},
		{"nxt1.0123456789zz." + secret, "lower-case hex"},
		{"nxt1.0123456789ab." + secret[:40], "32 bytes"},
		{"nxt1.0123456789ab." + secret + "==", "32 bytes"},
		{"nxt1.0123456789ab." + strings.Replace(secret, "q", "+", 1), "32 bytes"},
		{"nxt1.0123456789ab." + strings.Repeat("A", 200), "too long"},
	}
	for _, tt := range tests {
		tok, err := Parse(tt.in)
		if tt.want == "" {
			if err != nil || tok.ID != "0123456789ab" || tok.String() != strings.TrimSpace(tt.in) {
				t.Errorf("Parse(%q) = %+v, %v", tt.in, tok, err)
			}
			continue
		}
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q): err = %v, want %q", tt.in, err, tt.want)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("nxt1.0123456789ab." + base64.RawURLEncoding.EncodeToString(make([]byte, 32)))
	f.Add("nxt1..")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(tok.String())
		if err != nil || again != tok {
			t.Fatalf("accepted %q but its canonical form %q does not round-trip: %v", s, tok.String(), err)
		}
	})
}

func TestConsume(t *testing.T) {
	s, clock, _ := newTestStore(t)
	tok, rec, err := s.Create(RoleAgent, time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Role != RoleAgent || rec.UsesLeft != 2 || !rec.Expires.Equal(clock.Now().Add(time.Hour)) {
		t.Fatalf("record %+v", rec)
	}
	other, _, _ := s.Create(RoleServer, time.Hour, 1)
	wrongSecret := tok
	wrongSecret.Secret[0] ^= 1
	unknown := tok
	unknown.ID = "ffffffffffff"

	steps := []struct {
		name    string
		token   string
		advance time.Duration
		want    error
		role    Role
		left    int
	}{
		{"first use", tok.String(), 0, nil, RoleAgent, 1},
		{"wrong secret", wrongSecret.String(), 0, ErrWrongSecret, "", 0},
		{"unknown id", unknown.String(), 0, ErrUnknown, "", 0},
		{"malformed", "nxt1.nope", 0, ErrMalformed, "", 0},
		{"second use", tok.String(), 0, nil, RoleAgent, 0},
		{"reused", tok.String(), 0, ErrUsedUp, "", 0},
		{"server token just before expiry", other.String(), time.Hour - time.Nanosecond, nil, RoleServer, 0},
	}
	for _, st := range steps {
		clock.Advance(st.advance)
		got, err := s.Consume(st.token)
		if st.want != nil {
			if !errors.Is(err, st.want) {
				t.Fatalf("%s: err = %v, want %v", st.name, err, st.want)
			}
			continue
		}
		if err != nil || got.Role != st.role || got.UsesLeft != st.left {
			t.Fatalf("%s: %+v, %v", st.name, got, err)
		}
	}

	expiring, _, _ := s.Create(RoleAgent, time.Minute, 5)
	clock.Advance(time.Minute)
	if _, err := s.Consume(expiring.String()); !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "nexus token create") {
		t.Fatalf("expired: %v", err)
	}

	if err := s.Revoke(other.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Consume(other.String()); !errors.Is(err, ErrUnknown) {
		t.Fatalf("revoked: %v", err)
	}
	if err := s.Revoke(other.ID); !errors.Is(err, ErrUnknown) {
		t.Fatalf("revoke twice: %v", err)
	}
}

func TestCreateValidates(t *testing.T) {
	s, _, _ := newTestStore(t)
	tests := []struct {
		role Role
		ttl  time.Duration
		uses int
		want string
	}{
		{"admin", time.Hour, 1, "unknown role"},
		{RoleAgent, 0, 1, "lifetime"},
		{RoleAgent, -time.Hour, 1, "lifetime"},
		{RoleAgent, MaxTTL + 1, 1, "lifetime"},
		{RoleAgent, time.Hour, 0, "uses"},
		{RoleAgent, time.Hour, MaxUses + 1, "uses"},
	}
	for _, tt := range tests {
		if _, _, err := s.Create(tt.role, tt.ttl, tt.uses); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Create(%q, %s, %d): %v", tt.role, tt.ttl, tt.uses, err)
		}
	}
}

func TestConcurrentConsume(t *testing.T) {
	for _, uses := range []int{1, 3} {
		s, _, path := newTestStore(t)
		tok, _, err := s.Create(RoleAgent, time.Hour, uses)
		if err != nil {
			t.Fatal(err)
		}
		// Two Store values on one file: the flock, not only the mutex, must hold.
		s2 := NewStore(StoreConfig{Path: path, Now: s.now})
		var ok, usedUp atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st := s
				if i%2 == 1 {
					st = s2
				}
				_, err := st.Consume(tok.String())
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ErrUsedUp):
					usedUp.Add(1)
				default:
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if int(ok.Load()) != uses || int(usedUp.Load()) != 16-uses {
			t.Errorf("uses=%d: %d succeeded, %d used up", uses, ok.Load(), usedUp.Load())
		}
	}
}

func TestStoredHashed(t *testing.T) {
	s, _, path := newTestStore(t)
	tok, _, err := s.Create(RoleServer, time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{
		tok.String(),
		base64.RawURLEncoding.EncodeToString(tok.Secret[:]),
		base64.StdEncoding.EncodeToString(tok.Secret[:]),
		hex.EncodeToString(tok.Secret[:]),
	} {
		if bytes.Contains(data, []byte(form)) {
			t.Fatalf("token file contains the secret (%s):\n%s", form, data)
		}
	}
	if !bytes.Contains(data, []byte(hashSecret(tok.Secret))) {
		t.Fatalf("token file lacks the hash:\n%s", data)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %04o", st.Mode().Perm())
	}
	recs, err := s.List()
	if err != nil || len(recs) != 1 || recs[0].ID != tok.ID {
		t.Fatalf("List = %+v, %v", recs, err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(); err == nil || !strings.Contains(err.Error(), "remove it") {
		t.Fatalf("damaged store: %v", err)
	}
}

func TestStoreRefusesEmptyPath(t *testing.T) {
	wd, _ := os.Getwd()
	before, _ := os.ReadDir(wd)
	s := NewStore(StoreConfig{})
	if _, _, err := s.Create(RoleAgent, time.Hour, 1); err == nil || !strings.Contains(err.Error(), "Path is empty") {
		t.Fatalf("Create with no path: %v", err)
	}
	if _, err := s.List(); err == nil {
		t.Fatal("List with no path succeeded")
	}
	if after, _ := os.ReadDir(wd); len(after) != len(before) {
		t.Fatal("a store with no path wrote into the current directory")
	}
}

// The store file is read with a bound, and is never written past it.
func TestStoreSizeLimit(t *testing.T) {
	s, _, path := newTestStore(t)
	s.maxSize = 64 << 10 // the real 16 MiB takes a minute under -race
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, s.maxSize+1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(); !errors.Is(err, fsutil.ErrTooLarge) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "64 KiB") {
		t.Fatalf("List of a store past the limit: %v, want ErrTooLarge naming %s", err, path)
	}

	// A store just under the limit: one more token would pass it.
	rec := func(i int) Record {
		return Record{ID: fmt.Sprintf("%012x", i), Role: RoleAgent, SecretSHA256: strings.Repeat("0", 64), UsesLeft: 1}
	}
	one, _ := json.MarshalIndent(file{Version: 1, Tokens: []Record{rec(0)}}, "", "  ")
	two, _ := json.MarshalIndent(file{Version: 1, Tokens: []Record{rec(0), rec(1)}}, "", "  ")
	per := len(two) - len(one)
	recs := make([]Record, (int(s.maxSize)-1-len(one))/per+1)
	for i := range recs {
		recs[i] = rec(i)
	}
	data, _ := json.MarshalIndent(file{Version: 1, Tokens: recs}, "", "  ")
	if int64(len(data)+1) > s.maxSize || int64(len(data)+1+per) <= s.maxSize {
		t.Fatalf("test store is %d bytes, want just under %d", len(data), s.maxSize)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Create(RoleAgent, time.Hour, 1); err == nil || !strings.Contains(err.Error(), "revoke tokens") {
		t.Fatalf("Create past the limit: %v, want a refusal saying what to do", err)
	}
	if got, _ := os.ReadFile(path); len(got) != len(data) {
		t.Fatal("the refused Create changed the store")
	}
}
