package api_test

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"nexus.dev/nexus/api"
	"nexus.dev/nexus/internal/testutil"
)

// TestListenAnyPortFindsAFreeUDPTwin: with port 0 the API's TCP port is
// picked by the kernel, and its UDP twin (HTTP/3) may be another
// process's; Listen then picks again instead of failing. 2,000 UDP
// sockets on ports from the same range make such a clash likely within 50
// calls (about 97 %); without the retry this test failed so.
func TestListenAnyPortFindsAFreeUDPTwin(t *testing.T) {
	for range 2000 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
	}
	for range 50 {
		ls, err := api.Listen(api.ServeConfig{Addr: "127.0.0.1:0"})
		if err != nil {
			t.Fatalf("Listen on 127.0.0.1:0: %v", err)
		}
		if ls.TCP.Addr().String() != ls.UDP.LocalAddr().String() {
			t.Fatalf("TCP on %s, UDP on %s: want the same port", ls.TCP.Addr(), ls.UDP.LocalAddr())
		}
		ls.TCP.Close()
		ls.UDP.Close()
	}
}

// TestListenNamedPortInUse: a port the user named is not replaced by
// another; the error says which socket is taken.
func TestListenNamedPortInUse(t *testing.T) {
	// A port free for TCP and UDP (below the kernel's range for port 0,
	// which another socket could take), then its UDP side taken.
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(t, "tcp")))
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ls, err := api.Listen(api.ServeConfig{Addr: addr})
	if err == nil {
		ls.TCP.Close()
		ls.UDP.Close()
		t.Fatalf("Listen on %s with its UDP port taken: no error", addr)
	}
	if !strings.Contains(err.Error(), "udp, for HTTP/3") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("error %q: want it to name %s and the UDP socket", err, addr)
	}
	// The TCP port was released.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("TCP port %s still held after the failed Listen: %v", addr, err)
	}
	ln.Close()
}
