// Package embedtest runs a one-member embedded store inside a test's
// process, for packages that keep their state in the store (join tokens,
// the join service) and are tested against the real thing rather than a
// fake: raft, MVCC and the etcd client API as a server runs them.
package embedtest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
	"nexus.dev/nexus/store/embed"
)

// Member starts a one-member store of cluster "embedtest" on a loopback
// peer port, stopped when the test ends, and returns it once it takes
// writes.
func Member(t testing.TB) *embed.Member {
	t.Helper()
	return start(t, nil)
}

// MemberOnSocket is Member that also serves etcd clients (gRPC) on a unix
// socket at path, as a server's store.sock does, for tests of commands
// that reach the store through it.
func MemberOnSocket(t testing.TB, path string) *embed.Member {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	return start(t, []net.Listener{l})
}

func start(t testing.TB, listeners []net.Listener) *embed.Member {
	t.Helper()
	creds := credentials(t, "embedtest", "m1")
	udp, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	peer := udp.LocalAddr().String()
	udp.Close()
	m, err := embed.Start(context.Background(), embed.Config{Name: "m1", DataDir: t.TempDir(), Credentials: creds, ListenPeer: peer, ClientListeners: listeners,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("start a store member: %v", err)
	}
	t.Cleanup(m.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := m.Client(ctx)
	defer cli.Close()
	for {
		_, err := cli.Put(ctx, "/embedtest/ready", "1")
		if err == nil {
			return m
		}
		if ctx.Err() != nil {
			t.Fatalf("the store member took no write within 30 s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Client starts a Member and returns an in-process client of it, closed
// when the test ends.
func Client(t testing.TB) *clientv3.Client {
	t.Helper()
	m := Member(t)
	ctx, cancel := context.WithCancel(context.Background())
	cli := m.Client(ctx)
	t.Cleanup(func() {
		cli.Close()
		cancel()
	})
	return cli
}

// credentials makes a throwaway CA and a server certificate for name.
func credentials(t testing.TB, cluster, name string) *pki.Credentials {
	t.Helper()
	root, err := pki.NewRoot(pki.RootConfig{Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := root.NewIssuer(pki.IssuerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := pki.NewBundle(root.Cert, issuer.Cert)
	if err != nil {
		t.Fatal(err)
	}
	id := identity.Server(cluster, name)
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := issuer.SignLeaf(csr, id, pki.LeafOptions{IPAddresses: []net.IP{net.IPv6loopback}})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := pki.NewCredentials(pki.CredentialsConfig{Chain: chain, Key: key, Bundle: bundle})
	if err != nil {
		t.Fatal(err)
	}
	return creds
}
