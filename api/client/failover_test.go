package client_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/servertest"
)

// downURL is an https:// URL where nothing listens (TCP or UDP).
func downURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "https://" + l.Addr().String()
}

// TestFailover: a client given two servers of one cluster keeps working
// when the one it uses goes: requests and a followed watch move to the
// other within seconds, and the watch neither loses nor repeats a change.
func TestFailover(t *testing.T) {
	store := apitest.NexusStore(t)
	wl := res(t, "wl")
	for _, p := range protos {
		t.Run(p.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			a := servertest.StartServer(t, store, servertest.ServerOptions{})
			b := servertest.StartServer(t, store, servertest.ServerOptions{SameCA: a, ServerName: "s2"})
			s := settings(t, a, p.h3, "admin")
			s.Failover = []string{b.URL()}
			s.DialTimeout, s.KeepAlive = time.Second, time.Second
			cl := newClient(t, s)
			writer := newClient(t, settings(t, b, false, "admin"))
			ns := "failover-" + strings.ToLower(p.name)
			mustCreate(t, writer, namespace(ns))

			events := make(chan string, 16)
			followed := make(chan error, 1)
			go func() {
				followed <- cl.Follow(ctx, wl, ns, client.FollowOptions{}, func(ev client.Event) error {
					events <- string(ev.Type) + " " + ev.Object.GetObjectMeta().Name
					return nil
				})
			}()
			expect := func(want string, within time.Duration) {
				t.Helper()
				select {
				case got := <-events:
					if got != want {
						t.Fatalf("event %q, want %q", got, want)
					}
				case err := <-followed:
					t.Fatalf("the watch ended: %v", err)
				case <-time.After(within):
					t.Fatalf("no event %q within %s", want, within)
				}
			}
			mustCreate(t, writer, workload(ns, "before", "a", nil))
			expect("ADDED before", 10*time.Second)
			if got := cl.Server(); got != a.URL() {
				t.Fatalf("the client uses %s before the failure, want the first server %s", got, a.URL())
			}

			a.Stop()
			start := time.Now()
			mustCreate(t, writer, workload(ns, "after", "a", nil))
			expect("ADDED after", 10*time.Second)
			t.Logf("the watch resumed on the other server %s after the first stopped", time.Since(start).Round(time.Millisecond))
			if _, err := cl.Get(ctx, wl, ns, "after"); err != nil {
				t.Fatalf("get after the failover: %v", err)
			}
			if got := cl.Server(); got != b.URL() {
				t.Fatalf("the client uses %s after the failure, want %s", got, b.URL())
			}
			select {
			case ev := <-events:
				t.Fatalf("an event repeated or unexpected after the failover: %s", ev)
			case <-time.After(200 * time.Millisecond):
			}
		})
	}
}

// TestFailoverOfWrites: a write whose server cannot be reached is sent to
// the next server (it never reached the first), and a client whose
// servers are all down says so naming the last one.
func TestFailoverOfWrites(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	ctx := context.Background()
	for _, p := range protos {
		t.Run(p.name, func(t *testing.T) {
			down := downURL(t)
			s := settings(t, c, p.h3, "admin")
			s.Server, s.Failover, s.DialTimeout = down, []string{c.URL()}, time.Second
			cl := newClient(t, s)
			ns := "writes-" + strings.ToLower(p.name)
			if _, err := cl.Create(ctx, namespace(ns)); err != nil {
				t.Fatalf("create with the first server down: %v", err)
			}
			if got := cl.Servers(); !slices.Equal(got, []string{c.URL(), down}) {
				t.Fatalf("Servers() = %v, want the one in use first: %v", got, []string{c.URL(), down})
			}

			// A refreshed list without the server in use moves to the new
			// list's first; one with it keeps it.
			if err := cl.SetServers([]string{down, c.URL()}); err != nil {
				t.Fatal(err)
			}
			if cl.Server() != c.URL() {
				t.Fatalf("SetServers moved off the server in use to %s", cl.Server())
			}
			if err := cl.SetServers([]string{"http://plain:80"}); err == nil {
				t.Fatal("SetServers took an http:// URL")
			}

			all := settings(t, c, p.h3, "admin")
			other := downURL(t)
			all.Server, all.Failover, all.DialTimeout, all.Timeout = down, []string{other}, time.Second, 4*time.Second
			_, err := newClient(t, all).Create(ctx, namespace(ns+"-x"))
			if !client.IsConnectionError(err) {
				t.Fatalf("all servers down: %v, want a connection error", err)
			}
			if want := fmt.Sprintf("cannot reach the API server at %s", other); !strings.Contains(err.Error(), want) {
				t.Fatalf("all servers down: %q does not name the last server tried (%q)", err, want)
			}
		})
	}
}
