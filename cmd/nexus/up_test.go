package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestServeProfiles: --pprof-addr serves the Go profiles on a loopback
// address and refuses any other, since they need no authentication.
func TestServeProfiles(t *testing.T) {
	for _, tt := range []struct{ addr, want string }{
		{"0.0.0.0:6060", "must be a loopback address"},
		{"192.0.2.1:6060", "must be a loopback address"},
		{"example.com:6060", "must be a loopback address"},
		{"127.0.0.1", "want host:port"},
	} {
		if _, _, err := serveProfiles(tt.addr); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("serveProfiles(%q) = %v, want an error saying %q", tt.addr, err, tt.want)
		}
	}
	url, stop, err := serveProfiles("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get(url + "goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Fatalf("GET %sgoroutine: %s\n%.200s", url, resp.Status, body)
	}
}
