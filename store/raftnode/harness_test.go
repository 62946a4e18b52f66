package raftnode

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"nexus.dev/nexus/internal/testnet"
	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/transport"
	"nexus.dev/nexus/transport/transporttest"
)

const testCluster = "raft.test"

// logSM is the state machine of the tests: it appends every entry's data to
// a log. With a path it persists each applied entry, with its index, to an
// append-only file before returning, so AppliedIndex survives a restart the
// way a real store's does.
type logSM struct {
	mu       sync.Mutex
	path     string
	f        *os.File
	applied  uint64
	entries  []string
	restores int
}

func newLogSM(t testing.TB, path string) *logSM {
	sm := &logSM{path: path}
	if path == "" {
		return sm
	}
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			idx, data, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				continue
			}
			i, err := strconv.ParseUint(idx, 10, 64)
			if err != nil {
				t.Fatalf("state machine file %s: %v", path, err)
			}
			sm.applied = i
			if data != "-" { // "-" records a snapshot's applied index
				sm.entries = append(sm.entries, data)
			}
		}
		f.Close()
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	sm.f = f
	t.Cleanup(func() { sm.close() })
	return sm
}

func (sm *logSM) close() {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sm.f != nil {
		sm.f.Close()
		sm.f = nil
	}
}

func (sm *logSM) Apply(index uint64, data []byte) any {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.applied = index
	sm.entries = append(sm.entries, string(data))
	if sm.f != nil {
		fmt.Fprintf(sm.f, "%d %s\n", index, data)
	}
	return index
}

func (sm *logSM) AppliedIndex() uint64 {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.applied
}

type smSnapshot struct {
	Applied uint64   `json:"applied"`
	Entries []string `json:"entries"`
}

func (sm *logSM) Snapshot(w io.Writer) error {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return json.NewEncoder(w).Encode(smSnapshot{Applied: sm.applied, Entries: sm.entries})
}

func (sm *logSM) Restore(r io.Reader) error {
	var s smSnapshot
	if err := json.NewDecoder(r).Decode(&s); err != nil {
		return err
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.applied, sm.entries = s.Applied, s.Entries
	sm.restores++
	if sm.path == "" {
		return nil
	}
	var b strings.Builder
	for _, e := range s.Entries {
		fmt.Fprintf(&b, "0 %s\n", e)
	}
	fmt.Fprintf(&b, "%d -\n", s.Applied)
	tmp := sm.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, sm.path); err != nil {
		return err
	}
	if sm.f != nil {
		sm.f.Close()
	}
	f, err := os.OpenFile(sm.path, os.O_APPEND|os.O_WRONLY, 0o600)
	sm.f = f
	return err
}

func (sm *logSM) snapshot() []string {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return slices.Clone(sm.entries)
}

// member is one raft member of a test cluster with its own listener and
// dialer, optionally inside a testnet host.
type member struct {
	peer  Peer
	dir   string
	host  *testnet.Host
	sm    *logSM
	node  *Node
	l     *transport.Listener
	d     *transport.Dialer
	cfg   Config
	creds *transporttest.Credentials
}

type cluster struct {
	t       testing.TB
	ca      *transporttest.CA
	members map[uint64]*member
	persist bool
	tune    transport.Tuning
	base    Config
}

func testLogger() *slog.Logger {
	if os.Getenv("NEXUS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newCluster prepares n members on [::1] (or in hosts, when given) and
// starts them as a new cluster.
func newCluster(t testing.TB, n int, base Config, persist bool, hosts []*testnet.Host) *cluster {
	t.Helper()
	ca, err := transporttest.NewCA("raft test CA")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{
		t: t, ca: ca, members: map[uint64]*member{}, persist: persist, base: base,
		tune: transport.Tuning{KeepAlivePeriod: 200 * time.Millisecond, IdleTimeout: 2 * time.Second, HandshakeTimeout: time.Second},
	}
	var peers []Peer
	for i := range n {
		var h *testnet.Host
		if hosts != nil {
			h = hosts[i]
		}
		m := c.newMember(uint64(i+1), h)
		peers = append(peers, m.peer)
	}
	for _, p := range peers {
		c.start(c.members[p.ID], false, peers)
	}
	t.Cleanup(c.stopAll)
	return c
}

func (c *cluster) newMember(id uint64, h *testnet.Host) *member {
	name := fmt.Sprintf("m%d", id)
	var addr string
	if h != nil {
		addr = net.JoinHostPort(h.IPv6.String(), "7480")
	} else {
		addr = net.JoinHostPort("::1", strconv.Itoa(testutil.FreePort(c.t, "udp")))
	}
	cert, err := c.ca.IssueValid(identity.Server(testCluster, name))
	if err != nil {
		c.t.Fatal(err)
	}
	m := &member{
		peer:  Peer{ID: id, Name: name, Addr: addr},
		dir:   c.t.TempDir(),
		host:  h,
		creds: transporttest.NewCredentials(c.ca, cert),
	}
	c.members[id] = m
	return m
}

func (c *cluster) inHost(m *member, f func() error) error {
	if m.host == nil {
		return f()
	}
	return m.host.Do(f)
}

// start starts m's raft member, then its listener.
func (c *cluster) start(m *member, join bool, peers []Peer) {
	c.t.Helper()
	if m.node != nil {
		c.t.Fatalf("member %d already runs", m.peer.ID)
	}
	smPath := ""
	if c.persist {
		smPath = filepath.Join(m.dir, "sm.log")
	}
	m.sm = newLogSM(c.t, smPath)
	err := c.inHost(m, func() error {
		d, err := transport.NewDialer(transport.DialerConfig{Credentials: m.creds, Tuning: c.tune, Logger: testLogger(),
			Backoff: transport.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond, Jitter: 0.2}})
		if err != nil {
			return err
		}
		m.d = d
		cfg := c.base
		cfg.ID, cfg.Name, cfg.DataDir = m.peer.ID, m.peer.Name, filepath.Join(m.dir, "raft")
		cfg.Peers, cfg.Join = peers, join
		cfg.Transport = Transport{Dialer: d, Cluster: testCluster}
		cfg.StateMachine = m.sm
		cfg.Logger = testLogger()
		m.cfg = cfg
		node, err := Start(context.Background(), cfg)
		if err != nil {
			d.Close()
			return err
		}
		m.node = node
		l, err := transport.Listen(transport.ListenerConfig{
			Addr:        m.peer.Addr,
			Credentials: m.creds,
			Services:    map[string]transport.Service{ALPN: node.Service()},
			Authorize: func(peer identity.ID, service string) error {
				if service == ALPN {
					return AuthorizePeer(testCluster)(peer)
				}
				return fmt.Errorf("%w: no service %s", transport.ErrNotAuthorized, service)
			},
			Tuning: c.tune,
			Logger: testLogger(),
		})
		if err != nil {
			node.Stop()
			d.Close()
			return err
		}
		m.l = l
		go l.Serve(context.Background())
		return nil
	})
	if err != nil {
		c.t.Fatalf("start member %d: %v", m.peer.ID, err)
	}
}

// stop stops m abruptly: no leadership handoff, its connections cut.
func (c *cluster) stop(m *member) {
	if m.node == nil {
		return
	}
	m.node.Stop()
	m.l.Close()
	m.d.Close()
	m.sm.close()
	m.node, m.l, m.d = nil, nil, nil
}

func (c *cluster) stopAll() {
	for _, m := range c.members {
		c.stop(m)
	}
}

func (c *cluster) running() []*member {
	var ms []*member
	for id := uint64(1); id <= uint64(len(c.members))+10; id++ {
		if m := c.members[id]; m != nil && m.node != nil {
			ms = append(ms, m)
		}
	}
	return ms
}

// waitLeader waits until the running members (all of them, or those
// given) agree on a leader among them, and returns it.
func (c *cluster) waitLeader(timeout time.Duration, among ...*member) *member {
	c.t.Helper()
	if among == nil {
		among = c.running()
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		lead := among[0].node.Status().Leader
		agree := lead != 0
		for _, m := range among[1:] {
			if m.node.Status().Leader != lead {
				agree = false
			}
		}
		if agree {
			for _, m := range among {
				if m.peer.ID == lead {
					return m
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	var st []string
	for _, m := range among {
		st = append(st, fmt.Sprintf("%+v", m.node.Status()))
	}
	c.t.Fatalf("no leader agreed on within %v: %s", timeout, strings.Join(st, "; "))
	return nil
}

// waitConverged waits until every running member's state machine holds
// the same entries, at least want of them, and returns them.
func (c *cluster) waitConverged(timeout time.Duration, want int) []string {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ms := c.running()
		ref := ms[0].sm.snapshot()
		same := len(ref) >= want
		for _, m := range ms[1:] {
			if !slices.Equal(ref, m.sm.snapshot()) {
				same = false
			}
		}
		if same {
			return ref
		}
		if time.Now().After(deadline) {
			var st []string
			for _, m := range ms {
				st = append(st, fmt.Sprintf("member %d: %d entries, %+v", m.peer.ID, len(m.sm.snapshot()), m.node.Status()))
			}
			c.t.Fatalf("state machines did not converge on %d+ entries within %v: %s", want, timeout, strings.Join(st, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// propose proposes data through m, retrying while there is no leader.
func propose(ctx context.Context, m *member, data string) error {
	for {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := m.node.Propose(pctx, []byte(data))
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		if !errors.Is(err, ErrNoLeader) && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fastConfig is a raft configuration with a short clock for tests.
func fastConfig() Config {
	return Config{TickInterval: 20 * time.Millisecond, ElectionTicks: 10, HeartbeatTicks: 1}
}
