package transport_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"nexus.dev/nexus/internal/testnet"
	"nexus.dev/nexus/transport"
	"nexus.dev/nexus/transport/transporttest"
)

// TestAcrossHosts runs a server in host 0 and a client in host 1 of the
// netns harness, then cuts host 0 off and heals it.
func TestAcrossHosts(t *testing.T) {
	net2 := testnet.New(t, testnet.Options{Hosts: 2})
	h0, h1 := net2.Hosts[0], net2.Hosts[1]
	ca := newCA(t)
	// Short timers so a partition is noticed quickly.
	tune := transport.Tuning{KeepAlivePeriod: 200 * time.Millisecond, IdleTimeout: time.Second, HandshakeTimeout: time.Second}

	var srv *server
	if err := h0.Do(func() error {
		srv = startServer(t, transporttest.NewCredentials(ca, issue(t, ca, serverID)), transport.ListenerConfig{Addr: "[::]:7443", Tuning: tune})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var d *transport.Dialer
	if err := h1.Do(func() error {
		d = newDialer(t, transporttest.NewCredentials(ca, issue(t, ca, nodeA)), tune)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	tgt := transport.Target{Addr: net.JoinHostPort(h0.IPv6.String(), strconv.Itoa(7443)), Service: "nexus-test", Verify: transport.ExpectID(serverID)}
	call := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var err error
		h1.Do(func() error { // dial from inside host 1, as the issue asks
			_, err = d.Call(ctx, tgt, "peer", nil)
			return nil
		})
		return err
	}
	if err := call(5 * time.Second); err != nil {
		t.Fatalf("round trip h1 -> h0: %v", err)
	}
	net2.Partition(h0)
	handshakes := srv.creds.Handshakes.Load()
	start := time.Now()
	if err := call(2 * time.Second); err == nil {
		t.Fatal("call across a partition succeeded")
	} else {
		t.Logf("partitioned call failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("partitioned call took %v; want it bounded by its 2 s deadline", time.Since(start))
	}

	net2.Heal(h0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := call(3 * time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful call after healing: %v", err)
		}
		t.Logf("after heal: %v", err)
	}
	if srv.creds.Handshakes.Load() == handshakes {
		t.Error("the call after healing did not reconnect")
	}
}
