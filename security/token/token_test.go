package token

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/store/embed/embedtest"
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

// newTestStore returns a token store on a store member of its own.
func newTestStore(t *testing.T) (*Store, *manualClock, *clientv3.Client) {
	clock := &manualClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	cli := embedtest.Client(t)
	return NewStore(StoreConfig{Client: cli, Now: clock.Now}), clock, cli
}

var ctx = context.Background()

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
	tok, rec, err := s.Create(ctx, RoleAgent, time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Role != RoleAgent || rec.UsesLeft != 2 || !rec.Expires.Equal(clock.Now().Add(time.Hour)) {
		t.Fatalf("record %+v", rec)
	}
	other, _, _ := s.Create(ctx, RoleServer, time.Hour, 1)
	wrongSecret := tok
	wrongSecret.Secret[0] ^= 1
	unknown := tok
	unknown.ID = "ffffffffffff"

	steps := []struct {
		name    string
		token   string
		as      Role
		advance time.Duration
		want    error
		role    Role
		left    int
	}{
		{"first use", tok.String(), RoleAgent, 0, nil, RoleAgent, 1},
		{"wrong secret", wrongSecret.String(), RoleAgent, 0, ErrWrongSecret, "", 0},
		{"unknown id", unknown.String(), RoleAgent, 0, ErrUnknown, "", 0},
		{"malformed", "nxt1.nope", RoleAgent, 0, ErrMalformed, "", 0},
		// An agent token presented by a joining server keeps its use.
		{"wrong role", tok.String(), RoleServer, 0, ErrWrongRole, "", 0},
		{"second use", tok.String(), RoleAgent, 0, nil, RoleAgent, 0},
		{"reused", tok.String(), RoleAgent, 0, ErrUsedUp, "", 0},
		{"server token just before expiry", other.String(), RoleServer, time.Hour - time.Nanosecond, nil, RoleServer, 0},
	}
	for _, st := range steps {
		clock.Advance(st.advance)
		got, err := s.Consume(ctx, st.token, st.as)
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
	// A refunded use can be used again, once.
	if err := s.Refund(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Consume(ctx, tok.String(), RoleAgent); err != nil || got.UsesLeft != 0 {
		t.Fatalf("after a refund: %+v, %v", got, err)
	}
	if _, err := s.Consume(ctx, tok.String(), RoleAgent); !errors.Is(err, ErrUsedUp) {
		t.Fatalf("after the refunded use: %v", err)
	}

	expiring, _, _ := s.Create(ctx, RoleAgent, time.Minute, 5)
	clock.Advance(time.Minute)
	if _, err := s.Consume(ctx, expiring.String(), RoleAgent); !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "nexus token create") {
		t.Fatalf("expired: %v", err)
	}

	if err := s.Revoke(ctx, other.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Consume(ctx, other.String(), RoleServer); !errors.Is(err, ErrUnknown) {
		t.Fatalf("revoked: %v", err)
	}
	if err := s.Revoke(ctx, other.ID); !errors.Is(err, ErrUnknown) {
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
		if _, _, err := s.Create(ctx, tt.role, tt.ttl, tt.uses); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Create(%q, %s, %d): %v", tt.role, tt.ttl, tt.uses, err)
		}
	}
}

func TestConcurrentConsume(t *testing.T) {
	s, _, cli := newTestStore(t)
	for _, uses := range []int{1, 3} {
		tok, _, err := s.Create(ctx, RoleAgent, time.Hour, uses)
		if err != nil {
			t.Fatal(err)
		}
		// Two Store values, as two servers have: the compare-and-swap in
		// the store, not anything in one Store, must hold.
		s2 := NewStore(StoreConfig{Client: cli, Now: s.now})
		var ok, usedUp atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				st := s
				if i%2 == 1 {
					st = s2
				}
				_, err := st.Consume(ctx, tok.String(), RoleAgent)
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ErrUsedUp):
					usedUp.Add(1)
				default:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if int(ok.Load()) != uses || int(usedUp.Load()) != 16-uses {
			t.Errorf("uses=%d: %d succeeded, %d used up", uses, ok.Load(), usedUp.Load())
		}
	}
}

func TestStoredHashed(t *testing.T) {
	s, _, cli := newTestStore(t)
	tok, _, err := s.Create(ctx, RoleServer, time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, DefaultPrefix, clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != DefaultPrefix+tok.ID {
		t.Fatalf("stored: %v, %v", resp, err)
	}
	data := resp.Kvs[0].Value
	for _, form := range []string{
		tok.String(),
		base64.RawURLEncoding.EncodeToString(tok.Secret[:]),
		base64.StdEncoding.EncodeToString(tok.Secret[:]),
		hex.EncodeToString(tok.Secret[:]),
	} {
		if bytes.Contains(data, []byte(form)) {
			t.Fatalf("the stored record contains the secret (%s):\n%s", form, data)
		}
	}
	if !bytes.Contains(data, []byte(hashSecret(tok.Secret))) {
		t.Fatalf("the stored record lacks the hash:\n%s", data)
	}
	recs, err := s.List(ctx)
	if err != nil || len(recs) != 1 || recs[0].ID != tok.ID {
		t.Fatalf("List = %+v, %v", recs, err)
	}
	if _, err := cli.Put(ctx, DefaultPrefix+tok.ID, "{"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(ctx); err == nil || !strings.Contains(err.Error(), "nexus token revoke "+tok.ID) {
		t.Fatalf("damaged record: %v", err)
	}
	if err := s.Revoke(ctx, tok.ID); err != nil {
		t.Fatalf("revoke a damaged record: %v", err)
	}
	if err := s.Revoke(ctx, "../x"); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "hex digits") {
		t.Fatalf("revoke a malformed id: %v", err)
	}
}

func TestStoreRefusesNoClient(t *testing.T) {
	s := NewStore(StoreConfig{})
	if _, _, err := s.Create(ctx, RoleAgent, time.Hour, 1); err == nil || !strings.Contains(err.Error(), "Client is nil") {
		t.Fatalf("Create with no client: %v", err)
	}
	if _, err := s.List(ctx); err == nil {
		t.Fatal("List with no client succeeded")
	}
}

// The store holds at most max tokens; Create past it says what to do.
func TestStoreLimit(t *testing.T) {
	s, _, _ := newTestStore(t)
	s.max = 3
	for i := range s.max {
		if _, _, err := s.Create(ctx, RoleAgent, time.Hour, 1); err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
	}
	if _, _, err := s.Create(ctx, RoleAgent, time.Hour, 1); err == nil || !strings.Contains(err.Error(), "revoke tokens") {
		t.Fatalf("Create past the limit: %v, want a refusal saying what to do", err)
	}
	if recs, _ := s.List(ctx); len(recs) != s.max {
		t.Fatalf("the refused Create changed the store: %d tokens", len(recs))
	}
}
