package dns

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/internal/testnet"
	"nexus.dev/nexus/internal/testutil"
)

// TestGlibcResolverFindsServices resolves names as a container does: glibc
// (getent) in a network namespace of its own, with the /etc/resolv.conf of
// ResolvConf bind-mounted in a mount namespace of its own, asking the
// server on that namespace's addresses at port 53. Short names go through
// the search list; an outside name is forwarded.
func TestGlibcResolverFindsServices(t *testing.T) {
	testutil.RequireProgram(t, "getent", "libc-bin")
	testutil.RequireProgram(t, "unshare", "util-linux")
	host := testnet.New(t, testnet.Options{Hosts: 1}).Hosts[0]
	up := startUpstream(t, answerA("192.0.2.20", 60))
	records := clusterRecords()
	s, err := New(Config{
		Listen:    []netip.AddrPort{netip.AddrPortFrom(host.IPv6, 53), netip.AddrPortFrom(host.IPv4, 53)},
		Upstreams: []netip.AddrPort{up.addr},
		Log:       discardLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(records); err != nil {
		t.Fatal(err)
	}
	// The sockets are made in the host's namespace; the forwarder's stay
	// in this process's, where the upstream is (as the agent's server
	// runs in the node's namespace, not the containers').
	if err := host.Do(s.Start); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, ResolvConf("default", []netip.Addr{host.IPv6, host.IPv4}, ""), 0o644); err != nil {
		t.Fatal(err)
	}
	getent := func(db, name string) []string {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := host.Command(ctx, "unshare", "--mount", "--propagation", "private", "sh", "-c",
			`mount --bind "$1" /etc/resolv.conf && exec getent "$2" "$3"`, "sh", conf, db, name).CombinedOutput()
		if err != nil {
			t.Errorf("getent %s %s: %v: %s", db, name, err, out)
			return nil
		}
		var addrs []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) > 0 && !slices.Contains(addrs, f[0]) {
				addrs = append(addrs, f[0])
			}
		}
		slices.Sort(addrs)
		return addrs
	}
	tests := []struct {
		db, name string
		want     []string
	}{
		{"ahostsv4", "web", []string{"10.96.0.10"}},
		{"ahostsv6", "web", []string{"fd00:96::10"}},
		{"ahostsv4", "web.default.svc", []string{"10.96.0.10"}},
		{"ahostsv4", "db.data", []string{"10.1.0.2", "10.1.0.3"}},
		{"ahostsv6", "web-1.default.instance", []string{"fd00:1::7"}},
		{"ahostsv4", "example.org", []string{"192.0.2.20"}},
	}
	for _, tc := range tests {
		if got := getent(tc.db, tc.name); !slices.Equal(got, tc.want) {
			t.Errorf("getent %s %s: %q, want %q", tc.db, tc.name, got, tc.want)
		}
	}
}
