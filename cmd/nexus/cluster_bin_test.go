package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/store/embed"
)

// TestServerCluster forms a cluster of three servers from the CLI as a
// user would (nexus server, nexus token create --role server, two nexus
// server --join), each in its own network namespace: the store ends with
// three voting members, a write through the third server's API is read
// through the first's, every server lists the others, bad joins are
// refused naming the check that failed with nothing joined, and the third
// server leaves again.
func TestServerCluster(t *testing.T) {
	c := newClusterNet(t, 4, 2*time.Minute)
	nw, nexus := c.nw, c.nexus

	s1 := c.server(0, "s1")
	tok := c.token(s1, "server", 2)
	ip1 := nw.Hosts[0].IPv6.String()
	// --join takes a bare host (port 7380 by default) or host:port.
	join2 := []string{"--join", ip1, "--token", tok.Token, "--ca-pin", tok.CAPin}
	s2 := c.server(1, "s2", join2...)
	s3 := c.server(2, "s3", "--join", net.JoinHostPort(ip1, "7380"), "--token", tok.Token, "--ca-pin", tok.CAPin)

	store := storeClientOf(t, s1.dir)
	waitMembers(t, store, map[string]bool{"s1": true, "s2": true, "s3": true})

	// kill -9 and a restart with the same command line (its --join and
	// used-up token included): s2 comes back as the member it was.
	s2.kill9()
	s2.start()
	waitMembers(t, store, map[string]bool{"s1": true, "s2": true, "s3": true})

	// A write through s3's API is read through s1's.
	manifest := filepath.Join(t.TempDir(), "web.yaml")
	if err := os.WriteFile(manifest, []byte("kind: Workload\nmetadata: {name: web}\nspec:\n  replicas: 2\n  template: {image: nexus.local/hello}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := nexus(s3.host, "--config", filepath.Join(s3.dir, "admin.conf"), "apply", "-f", manifest); err != nil || !strings.Contains(out, "workload/web created") {
		t.Fatalf("apply through s3: %v\n%s", err, out)
	}
	conf1 := filepath.Join(s1.dir, "admin.conf")
	if out, err := nexus(s1.host, "--config", conf1, "get", "workload", "web", "-o", "json"); err != nil || !strings.Contains(out, `"replicas": 2`) {
		t.Fatalf("read through s1: %v\n%s", err, out)
	}
	// Every server publishes itself; all three are voters.
	servers := waitServers(t, func() (string, error) {
		return nexus(s1.host, "--config", conf1, "get", "servers", "-o", "json")
	}, []string{"s1", "s2", "s3"})
	for _, s := range servers {
		if s.Status.StoreMember.Learner || s.Status.APIURL == "" || s.Status.PeerAddress == "" {
			t.Errorf("server %s: %+v", s.Name, s.Status)
		}
	}
	if out, err := nexus(s2.host, "--config", filepath.Join(s2.dir, "admin.conf"), "get", "servers"); err != nil || !strings.Contains(out, "voter") {
		t.Fatalf("get servers through s2: %v\n%s", err, out)
	}

	// Bad joins: refused with the failed check named, nothing joined.
	tok2 := c.token(s1, "server", 1)
	h4 := nw.Hosts[3]
	ip4 := h4.IPv6.String()
	badJoinAt := func(at, name, token, pin, want string) {
		t.Helper()
		out, err := nexus(h4, "--data-dir", t.TempDir(), "server", "--name", name, "--api-addr", net.JoinHostPort(ip4, "7443"),
			"--store-peer-addr", net.JoinHostPort(ip4, "7380"), "--join", at, "--token", token, "--ca-pin", pin)
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("join as %s: %v, want %q in:\n%s", name, err, want, out)
		}
	}
	badJoin := func(name, token, pin, want string) { t.Helper(); badJoinAt(ip1, name, token, pin, want) }
	badJoin("s4", tok.Token, tok.CAPin, "join token has no uses left")
	badJoin("s4", tok2.Token, "sha256:"+strings.Repeat("00", 32), "server is not trusted: CA pin mismatch")
	badJoin("s2", tok2.Token, tok2.CAPin, `server "s2" is already a voting member of the store`)
	badJoin("s4", "nxt1.000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", tok2.CAPin, "unknown join token")
	waitMembers(t, store, map[string]bool{"s1": true, "s2": true, "s3": true})
	// The refused name check left the token's use.
	if out, err := nexus(nil, "--data-dir", s1.dir, "token", "list", "-o", "json"); err != nil || !strings.Contains(out, `"usesLeft": 1`) {
		t.Fatalf("the refused joins used the token: %v\n%s", err, out)
	}

	// s3 leaves: it stops on its own, the store has two members, and the
	// others forget its Server object.
	if out, err := nexus(nil, "--data-dir", s3.dir, "server", "leave"); err != nil || !strings.Contains(out, "Removed server s3") {
		t.Fatalf("server leave: %v\n%s", err, out)
	}
	if err, exited := s3.wait(20 * time.Second); !exited {
		t.Fatal("s3 did not stop within 20 s of leaving")
	} else if err != nil {
		t.Fatalf("s3 after leaving: %v", err)
	}
	waitMembers(t, store, map[string]bool{"s1": true, "s2": true})
	// A join through the server that left finds nothing there.
	ip3 := nw.Hosts[2].IPv6.String()
	badJoinAt(ip3, "s4", tok2.Token, tok2.CAPin, "join "+net.JoinHostPort(ip3, "7380")+": dial nexus-join")
	waitMembers(t, store, map[string]bool{"s1": true, "s2": true})
	waitServers(t, func() (string, error) {
		return nexus(s2.host, "--config", filepath.Join(s2.dir, "admin.conf"), "get", "servers", "-o", "json")
	}, []string{"s1", "s2"})
	if out, err := nexus(s1.host, "--config", conf1, "get", "workload", "web"); err != nil {
		t.Fatalf("the cluster after s3 left: %v\n%s", err, out)
	}
}

// storeClientOf is a client of the store through a server's socket.
func storeClientOf(t testing.TB, dataDir string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + filepath.Join(dataDir, "store.sock")},
		DialTimeout: 5 * time.Second, Logger: embed.QuietClientLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// waitMembers waits until the store's members are exactly the named ones,
// all voting.
func waitMembers(t testing.TB, cli *clientv3.Client, want map[string]bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := cli.MemberList(ctx)
		cancel()
		var got []string
		voters := 0
		if err == nil {
			for _, m := range resp.Members {
				got = append(got, fmt.Sprintf("%s(learner=%v)", m.Name, m.IsLearner))
				if want[m.Name] && !m.IsLearner {
					voters++
				}
			}
			if voters == len(want) && len(resp.Members) == len(want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("store members %v (%v), want voters %v", got, err, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitServers waits until get lists exactly the named Server objects.
func waitServers(t *testing.T, get func() (string, error), want []string) []types.Server {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := get()
		var list struct {
			Items []types.Server `json:"items"`
		}
		var names []string
		if err == nil && json.Unmarshal([]byte(out), &list) == nil {
			for _, s := range list.Items {
				if !s.Status.StoreMember.Learner {
					names = append(names, s.Name)
				}
			}
			slices.Sort(names)
			if slices.Equal(names, want) && len(list.Items) == len(want) {
				return list.Items
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("servers %v (%v), want %v:\n%s", names, err, want, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
