package embed

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSplitJoinAddr(t *testing.T) {
	for _, tc := range []struct {
		in, host, port string
		err            string
	}{
		{"10.0.0.1", "10.0.0.1", "7380", ""},
		{"10.0.0.1:7999", "10.0.0.1", "7999", ""},
		{"fd00::1", "fd00::1", "7380", ""},
		{"[fd00::1]:7380", "fd00::1", "7380", ""},
		{"server1.example.com", "server1.example.com", "7380", ""},
		{"server1.example.com:17380", "server1.example.com", "17380", ""},
		{"", "", "", "give a server's address"},
		{":7380", "", "", "no host"},
		{"10.0.0.1:http", "", "", "is not a port number"},
		{"10.0.0.1:70000", "", "", "is not a port number"},
		{"https://10.0.0.1", "", "", "not a URL"},
		{"a b", "", "", "give a server's address"},
	} {
		host, port, err := splitJoinAddr(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("splitJoinAddr(%q) = %q, %q, %v; want an error with %q", tc.in, host, port, err, tc.err)
			}
			continue
		}
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("splitJoinAddr(%q) = %q, %q, %v; want %q, %q", tc.in, host, port, err, tc.host, tc.port)
		}
	}
}

func FuzzSplitJoinAddr(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "[fd00::1]:7380", "server1.example.com:1", ":0", "[::]:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, port, err := splitJoinAddr(s)
		if err != nil {
			return
		}
		// What is accepted is an address a dialer takes.
		if host == "" || port == "" {
			t.Fatalf("splitJoinAddr(%q) = %q, %q", s, host, port)
		}
		if _, _, err := net.SplitHostPort(net.JoinHostPort(host, port)); err != nil {
			t.Fatalf("splitJoinAddr(%q) = %q, %q: %v", s, host, port, err)
		}
	})
}

func TestAdvertiseAddr(t *testing.T) {
	any := &net.TCPAddr{IP: net.IPv6unspecified, Port: 7444}
	for _, tc := range []struct {
		given  string
		listen *net.TCPAddr
		want   string
		err    string
	}{
		{"10.0.0.5", any, "10.0.0.5:7444", ""},
		{"[fd00::5]:9000", any, "[fd00::5]:9000", ""},
		{"fd00::5", any, "[fd00::5]:7444", ""},
		{"", &net.TCPAddr{IP: net.ParseIP("10.0.0.6"), Port: 7444}, "10.0.0.6:7444", ""},
		{"", any, "127.0.0.1:7444", ""}, // towards the server, on loopback
		{"0.0.0.0", any, "", "give this machine's IP address"},
		{"worker1", any, "", "give this machine's IP address"},
	} {
		got, err := advertiseAddr(tc.given, tc.listen, "https://127.0.0.1:7443")
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("advertiseAddr(%q, %v) = %q, %v; want an error with %q", tc.given, tc.listen, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("advertiseAddr(%q, %v) = %q, %v; want %q", tc.given, tc.listen, got, err, tc.want)
		}
	}
}

func TestReadState(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, stateFile)
	if st, err := readState(p); err != nil || len(st.Servers) != 0 {
		t.Fatalf("no file: %+v, %v", st, err)
	}
	for body, want := range map[string]string{
		`{"servers":["https://10.0.0.1:7443"]}`: "",
		`{"servers":["http://10.0.0.1:7443"]}`:  "is not an https:// URL",
		`{"servers":`:                           "remove it",
	} {
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := readState(p)
		if want == "" && (err != nil || len(st.Servers) != 1) || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %+v, %v; want %q", body, st, err, want)
		}
	}
}
