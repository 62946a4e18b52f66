package networking

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"nexus.dev/nexus/internal/proc"
)

var testNode = testCluster.node(3) // fd00:6e78:7400:3::/64, 10.71.3.0/24

const goodState = `{"version":1,
 "prefixes":{"ipv6":"fd00:6e78:7400:3::/64","ipv4":"10.71.3.0/24"},
 "containers":{
  "c1":{"ipv6":"fd00:6e78:7400:3::2","ipv4":"10.71.3.2","netns":"/proc/10/ns/net","ports":[{"port":80,"hostPort":8080,"protocol":"TCP"}]},
  "c2":{"ipv6":"fd00:6e78:7400:3::4","ipv4":"10.71.3.4","netns":"/run/netns/c2"}}}`

func TestDecodeState(t *testing.T) {
	st, err := decodeState([]byte(goodState))
	if err != nil {
		t.Fatal(err)
	}
	// The lowest free pair is next, between the two in use.
	v6, v4, err := st.allocate()
	if err != nil || v4.String() != "10.71.3.3" || v6.String() != "fd00:6e78:7400:3::3" {
		t.Fatalf("allocate: %s %s %v; want the free .3 and ::3", v4, v6, err)
	}
	for _, tc := range []struct{ name, from, to, want string }{
		{"version", `"version":1`, `"version":2`, "version 2"},
		{"unknown field", `"version":1`, `"version":1,"extra":1`, "unknown field"},
		{"outside prefix", `"ipv4":"10.71.3.4"`, `"ipv4":"10.71.4.4"`, "not a container address of 10.71.3.0/24"},
		{"gateway", `"ipv4":"10.71.3.4"`, `"ipv4":"10.71.3.1"`, "not a container address"},
		{"families disagree", `"ipv6":"fd00:6e78:7400:3::4"`, `"ipv6":"fd00:6e78:7400:3::5"`, "does not match"},
		{"address twice", `"ipv6":"fd00:6e78:7400:3::4","ipv4":"10.71.3.4"`, `"ipv6":"fd00:6e78:7400:3::2","ipv4":"10.71.3.2"`, "both have 10.71.3.2"},
		{"relative netns", `"/run/netns/c2"`, `"c2"`, "absolute path"},
		{"host port twice", `"netns":"/run/netns/c2"}`, `"netns":"/run/netns/c2","ports":[{"port":1,"hostPort":8080,"protocol":"TCP"}]}`, "both publish host port 8080/TCP"},
		{"bad port", `"port":80`, `"port":0`, "port 0"},
		{"bad id", `"c2":`, `"c 2":`, "container id"},
		{"bad prefix", `"ipv4":"10.71.3.0/24"`, `"ipv4":"10.71.3.0/30"`, "node IPv4 prefix"},
		{"trailing data", `}}}`, `}}}{}`, "trailing data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(goodState, tc.from, tc.to, 1)
			if bad == goodState {
				t.Fatalf("the case changes nothing: %q not in the state", tc.from)
			}
			if _, err := decodeState([]byte(bad)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("decodeState: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadState(t *testing.T) {
	dir := t.TempDir()
	st, err := loadState(dir, testNode)
	if err != nil || len(st.Containers) != 0 {
		t.Fatalf("a missing file: %+v, %v; want an empty state", st, err)
	}
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(goodState), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, err = loadState(dir, testNode); err != nil || len(st.Containers) != 2 {
		t.Fatalf("loadState: %+v, %v", st, err)
	}
	if err := st.save(dir); err != nil {
		t.Fatal(err)
	}
	again, err := loadState(dir, testNode)
	if err != nil || len(again.Containers) != 2 {
		t.Fatalf("after a save: %+v, %v", again, err)
	}
	if a, b := again.Containers["c1"], st.Containers["c1"]; a.IPv4 != b.IPv4 || a.IPv6 != b.IPv6 || a.NetNS != b.NetNS || !slices.Equal(a.Ports, b.Ports) {
		t.Fatalf("c1 after a save: %+v, want %+v", a, b)
	}
	// Prefixes that changed under the file are an error, not a reset.
	if _, err := loadState(dir, testCluster.node(4)); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "10.71.4.0/24") {
		t.Fatalf("loadState with other prefixes: %v, want ErrCorrupt naming the new prefix", err)
	}
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadState(dir, testNode); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), StateFile) {
		t.Fatalf("a truncated file: %v, want ErrCorrupt naming it", err)
	}
	// A file of an earlier boot (torn or whole) describes namespaces and
	// links that went with the machine: it is dropped, not read.
	if err := os.WriteFile(filepath.Join(dir, BootFile), []byte("an-earlier-boot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, err := loadState(dir, testNode); err != nil || len(st.Containers) != 0 {
		t.Fatalf("a torn file of an earlier boot: %+v, %v; want an empty state", st, err)
	}
	if _, err := os.Stat(filepath.Join(dir, StateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the earlier boot's state file is still there: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, BootFile)); strings.TrimSpace(string(b)) != proc.BootID() {
		t.Fatalf("boot marker %q, want this boot's %q", b, proc.BootID())
	}
}

func TestAllocateExhausted(t *testing.T) {
	small := NodePrefixes{IPv6: testNode.IPv6, IPv4: mustPrefix(t, "10.71.3.0/28")}
	st := newState(small)
	for i := range small.hosts() - 3 {
		v6, v4, err := st.allocate()
		if err != nil {
			t.Fatalf("address %d of %d: %v", i+1, small.hosts()-3, err)
		}
		st.Containers[v4.String()] = &containerState{IPv6: v6, IPv4: v4}
	}
	if _, _, err := st.allocate(); !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "10.71.3.0/28") {
		t.Fatalf("allocate in a full /28: %v, want ErrExhausted naming it", err)
	}
}

func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(goodState))
	f.Add([]byte(`{"version":1,"prefixes":{"ipv6":"fd00::/64","ipv4":"10.0.0.0/24"},"containers":{}}`))
	f.Add([]byte(`{"version":1,"prefixes":{"ipv6":"fd00::/64","ipv4":"10.0.0.0/24"},"containers":{"a":null}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeState(data)
		if err != nil {
			return
		}
		// An accepted state allocates inside its prefixes, never an
		// address in use, and survives a round trip unchanged.
		v6, v4, err := st.allocate()
		if err == nil {
			if !st.Prefixes.IPv4.Contains(v4) || !st.Prefixes.IPv6.Contains(v6) {
				t.Fatalf("allocated %s %s outside %+v", v4, v6, st.Prefixes)
			}
			for id, c := range st.Containers {
				if c.IPv4 == v4 || c.IPv6 == v6 {
					t.Fatalf("allocated %s, which %s has", v4, id)
				}
			}
		}
		out, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeState(out)
		if err != nil {
			t.Fatalf("re-decoding an accepted state: %v\n%s", err, out)
		}
		if len(again.Containers) != len(st.Containers) {
			t.Fatalf("round trip changed the containers: %d -> %d", len(st.Containers), len(again.Containers))
		}
	})
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := parsePrefix("test prefix", s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNewRejectsBadConfig(t *testing.T) {
	good := Config{Prefixes: testNode, Cluster: testCluster, DataDir: t.TempDir()}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"node IPv4 /30", func(c *Config) { c.Prefixes.IPv4 = mustPrefix(t, "10.71.3.0/30") }, "node IPv4 prefix 10.71.3.0/30"},
		{"node IPv6 /56", func(c *Config) { c.Prefixes.IPv6 = mustPrefix(t, "fd00:6e78:7400::/56") }, "want a /64"},
		{"node outside the cluster", func(c *Config) { c.Prefixes = NodePrefixes{IPv6: testNode.IPv6, IPv4: mustPrefix(t, "10.72.3.0/24")} }, "not inside the cluster's"},
		{"cluster incomplete", func(c *Config) { c.Cluster.IPv6 = netip.Prefix{} }, "lack a field"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "DataDir is empty"},
		{"bridge name with a slash", func(c *Config) { c.Bridge = "a/b" }, "bridge name \"a/b\""},
		{"bridge name too long", func(c *Config) { c.Bridge = "a-very-long-bridge" }, "at most 15 bytes"},
		{"MTU too small", func(c *Config) { c.MTU = 576 }, "MTU 576"},
		{"missing namespace", func(c *Config) { c.NetNSPath = "/run/netns/no-such-namespace" }, "no-such-namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			n, err := New(cfg)
			if err == nil {
				n.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
