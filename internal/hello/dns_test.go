package hello

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestResolveThroughServeDNS: the resolve applet asks the test DNS
// responder over UDP: TXT answers the host name, A
// and AAAA the addresses of that family, -n tallies; a server that does
// not answer fails the lookup with a reason.
func TestResolveThroughServeDNS(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ServeDNS(ctx, pc, func() (string, error) { return "web-1", nil }, func() ([]Address, error) {
			return []Address{{Interface: "lo", Address: "127.0.0.1/8", Loopback: true},
				{Interface: "eth0", Address: "10.1.0.5/24"}, {Interface: "eth0", Address: "fd00::5/64"}, {Interface: "eth0", Address: "fe80::1/64"}}, nil
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeDNS: %v", err)
		}
	}()
	server := pc.LocalAddr().String()
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := Resolve(args, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	for _, tc := range []struct{ typ, want string }{
		{"TXT", "web-1\n"}, {"A", "10.1.0.5\n"}, {"AAAA", "fd00::5\n"},
	} {
		if code, out, errOut := run("-server", server, "-t", tc.typ, "anything.example"); code != 0 || out != tc.want {
			t.Errorf("resolve -t %s: code %d, %q (stderr %q), want %q", tc.typ, code, out, errOut, tc.want)
		}
	}
	if code, out, errOut := run("-server", server, "-t", "txt", "-n", "5", "x"); code != 0 || out != "5 web-1\n" {
		t.Errorf("resolve -n 5: code %d, %q (stderr %q)", code, out, errOut)
	}
	for _, args := range [][]string{nil, {"-t", "MX", "x"}, {"-server", "nohostport", "x"}, {"-n", "0", "x"}, {"-tcp", "x"}} {
		if code, _, errOut := run(args...); code != 2 || errOut == "" {
			t.Errorf("resolve %q: code %d, stderr %q; want 2 and a reason", args, code, errOut)
		}
	}
	// Garbage gets no answer and does not stop the server.
	c, err := net.Dial("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("not dns"))
	c.Close()
	if code, _, _ := run("-server", server, "-t", "TXT", "x"); code != 0 {
		t.Error("the responder stopped answering after garbage")
	}
}

// TestHealthzToggle: /healthz/fail makes /healthz answer 503 until
// /healthz/pass.
func TestHealthzToggle(t *testing.T) {
	srv := httptest.NewServer(NewHandler(Config{}))
	defer srv.Close()
	status := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := status("/healthz"); s != 200 {
		t.Fatalf("healthz: %d", s)
	}
	status("/healthz/fail")
	if s := status("/healthz"); s != http.StatusServiceUnavailable {
		t.Fatalf("healthz after fail: %d, want 503", s)
	}
	status("/healthz/pass")
	if s := status("/healthz"); s != 200 {
		t.Fatalf("healthz after pass: %d", s)
	}
}

// TestFetchCountAndHold: -n tallies the answers by first line over new
// connections (and counts refusals), -hold keeps one connection and fails
// when it is lost.
func TestFetchCountAndHold(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("hello from a\nmore\n"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	var out, errOut bytes.Buffer
	if code := Fetch([]string{"-n", "20", srv.URL + "/"}, &out, &errOut); code != 0 || out.String() != "20 hello from a\n" {
		t.Fatalf("fetch -n 20: code %d, %q (stderr %q)", code, out.String(), errOut.String())
	}
	if n := conns.Load(); n != 20 {
		t.Fatalf("fetch -n 20 made %d connections, want 20", n)
	}
	out.Reset()
	conns.Store(0)
	if code := Fetch([]string{"-hold", "500ms", "-every", "50ms", srv.URL + "/"}, &out, &errOut); code != 0 || !strings.HasSuffix(out.String(), " hello from a\n") {
		t.Fatalf("fetch -hold: code %d, %q (stderr %q)", code, out.String(), errOut.String())
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("fetch -hold made %d connections, want 1", n)
	}
	// A held connection the server closes fails the hold.
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.Write([]byte("bye\n"))
	}))
	defer srv2.Close()
	out.Reset()
	errOut.Reset()
	if code := Fetch([]string{"-hold", "300ms", "-every", "50ms", srv2.URL + "/"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "did not live through") {
		t.Fatalf("fetch -hold of a closing server: code %d, stderr %q", code, errOut.String())
	}
	// Refusals are tallied as such, quickly.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + ln.Addr().String() + "/"
	ln.Close()
	out.Reset()
	start := time.Now()
	if code := Fetch([]string{"-n", "3", closed}, &out, &errOut); code != 1 || out.String() != "3 error: connection refused\n" || time.Since(start) > 5*time.Second {
		t.Fatalf("fetch -n 3 of a closed port: code %d, %q", code, out.String())
	}
	for _, args := range [][]string{{"-4", "-6", srv.URL}, {"-n", "-1", srv.URL}, {"-n", "2", "-hold", "1s", srv.URL}} {
		errOut.Reset()
		if code := Fetch(args, &out, &errOut); code != 2 || errOut.Len() == 0 {
			t.Errorf("fetch %q: code %d; want 2 and a reason", args, code)
		}
	}
}
