package profiles

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestServeLoopback: the profiles are served on a loopback address, and
// any other is refused, since they need no authentication.
func TestServeLoopback(t *testing.T) {
	for _, tt := range []struct{ addr, want string }{
		{"0.0.0.0:6060", "must be a loopback address"},
		{":6060", "must be a loopback address"},
		{"192.0.2.1:6060", "must be a loopback address"},
		{"example.com:6060", "must be a loopback address"},
		{"127.0.0.1", "want host:port"},
	} {
		if _, _, err := ServeLoopback(tt.addr); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ServeLoopback(%q) = %v, want an error saying %q", tt.addr, err, tt.want)
		}
	}
	url, stop, err := ServeLoopback("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string, error) {
		resp, err := http.Get(url + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	code, body, err := get("goroutine?debug=1")
	if err != nil || code != http.StatusOK || !strings.Contains(body, "goroutine profile") {
		t.Fatalf("GET %sgoroutine?debug=1: %d %v\n%.200s", url, code, err, body)
	}
	stop()
	if _, _, err := get(""); err == nil {
		t.Fatalf("GET %s answered after stop", url)
	}
}
