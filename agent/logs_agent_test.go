package agent_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/netnsutil"
	"nexus.dev/nexus/runtime/image/builtin"
)

// readLog reads an instance's log through the API.
func readLog(t *testing.T, cli *client.Client, name string, opts client.LogOptions) string {
	t.Helper()
	got, err := tryReadLog(cli, name, opts)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func tryReadLog(cli *client.Client, name string, opts client.LogOptions) (string, error) {
	rc, err := cli.Logs(context.Background(), "default", name, opts)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

// waitLogHas waits until the instance's log has want; until then, the
// log may not be readable yet (a new agent adopting the instance).
func waitLogHas(t *testing.T, cli *client.Client, name, want string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := tryReadLog(cli, name, client.LogOptions{TailLines: -1})
		if err == nil && strings.Contains(got, want) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log of %s lacks %q after 30 s (%v):\n%s", name, want, err, got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var requestLine = regexp.MustCompile(`^request (\d+): GET / from `)

// TestAgentLogs runs the built-in image (which logs each request on
// stdout; its readiness probe on "/" makes one a second) and reads its
// log through the API and the client: whole, with timestamps, and
// followed over HTTP/3 as it grows. Then the agent stops; the container
// keeps running and answers requests, and their log lines, written while
// no agent read, reach the log once a new agent adopts the container
// (which it does not restart). A restart of the container appends to the
// same log; deleting the instance ends a follower's stream.
func TestAgentLogs(t *testing.T) {
	n := startNode(t, nil)
	_, stop1 := n.run(t, nil)
	admin, rt, c := n.admin, n.rt, n.c

	grace := int64(2)
	created := n.create(t, "web-1", types.InstanceTemplate{
		Image:                         builtin.Reference,
		Args:                          []string{"--listen", "0.0.0.0", "--port", "8080"},
		Readiness:                     &types.Probe{HTTP: &types.HTTPProbe{Path: "/", Port: 8080}, PeriodSeconds: 1},
		TerminationGracePeriodSeconds: &grace,
	})
	id := "nx-" + created.UID
	waitInstance(t, admin, "web-1", "running and ready", func(i *types.Instance) bool {
		return i.Status.Phase == types.PhaseRunning && i.Status.Ready
	})

	// Whole: the server's start on stderr, the probes' requests on stdout.
	got := waitLogHas(t, admin, "web-1", "request 2: GET / from 127.0.0.1:")
	if !strings.Contains(got, `msg="listening on [::]:8080"`) {
		t.Fatalf("the log lacks the server's start:\n%s", got)
	}
	got = readLog(t, admin, "web-1", client.LogOptions{TailLines: 1, Timestamps: true})
	stamp, line, _ := strings.Cut(strings.TrimSuffix(got, "\n"), " ")
	if ts, err := time.Parse(time.RFC3339Nano, stamp); err != nil || time.Since(ts) > time.Minute || !requestLine.MatchString(line) || strings.Count(got, "\n") != 1 {
		t.Fatalf("the last line with its time: %q", got)
	}

	// Followed over HTTP/3: new requests arrive as they are made.
	h3 := newClientH3(t, c, c.User(t, "admin"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rc, err := h3.Logs(ctx, "default", "web-1", client.LogOptions{Follow: true, TailLines: 0})
	if err != nil {
		t.Fatal(err)
	}
	lines := scanLines(rc)
	last := 0
	for range 2 {
		select {
		case l := <-lines:
			m := requestLine.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("followed line %q is not a request", l)
			}
			n, _ := strconv.Atoi(m[1])
			if n <= last || n < 3 {
				t.Fatalf("followed request %d after %d: not new", n, last)
			}
			last = n
		case <-time.After(10 * time.Second):
			t.Fatal("no new line followed within 10 s")
		}
	}
	rc.Close()

	// The agent goes; the container stays, and its output waits.
	stop1()
	st, err := rt.State(id)
	if err != nil || st.Pid == 0 {
		t.Fatalf("the container after its agent stopped: %+v, %v", st, err)
	}
	pid := st.Pid
	netns := "/proc/" + strconv.Itoa(pid) + "/ns/net"
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return netnsutil.Dial(ctx, netns, network, addr)
		}}}
	for _, p := range []string{"/away-1", "/away-2", "/away-3"} {
		resp, err := hc.Get("http://127.0.0.1:8080" + p)
		if err != nil {
			t.Fatalf("the container while no agent runs: %v", err)
		}
		resp.Body.Close()
	}
	n.run(t, nil)
	got = waitLogHas(t, admin, "web-1", "GET /away-3 from")
	if !strings.Contains(got, "GET /away-1 from") || strings.Count(got, "listening on") != 1 {
		t.Fatalf("the log after a new agent adopted the container:\n%s", got)
	}
	if st, err := rt.State(id); err != nil || st.Pid != pid {
		t.Fatalf("the adopted container was restarted: pid %d, was %d (%v)", st.Pid, pid, err)
	}

	// A restart of the container appends to the same log.
	if err := rt.Kill(id, syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	waitInstance(t, admin, "web-1", "restarted", func(i *types.Instance) bool {
		return i.Status.Restarts >= 1 && i.Status.Phase == types.PhaseRunning
	})
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(got, "listening on") != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the restarted container's start is not in the log:\n%s", got)
		}
		time.Sleep(200 * time.Millisecond)
		got = readLog(t, admin, "web-1", client.LogOptions{TailLines: -1})
	}
	if !strings.Contains(got, "GET /away-3 from") {
		t.Fatalf("the first run's output is gone after a restart:\n%s", got)
	}

	// Deleting the instance ends a follower's stream.
	rc, err = admin.Logs(context.Background(), "default", "web-1", client.LogOptions{Follow: true, TailLines: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	lines = scanLines(rc)
	instances, _ := types.LookupResource("instances")
	if _, err := admin.Delete(context.Background(), instances, "default", "web-1", client.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(30 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-lines:
		case <-timeout:
			t.Fatal("a follower's stream did not end within 30 s of the instance's deletion")
		}
	}
	// The directory goes right after the log is closed.
	instDir := filepath.Join(n.dir, "instances", created.UID)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, err := os.Stat(instDir)
		if os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the instance's directory (its pipes and log) is left 10 s after its stream ended: %v", err)
		}
	}
}

// scanLines delivers the lines of r until it ends.
func scanLines(r io.Reader) <-chan string {
	ch := make(chan string, 100)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}

// newClientH3 is newClient over HTTP/3.
func newClientH3(t *testing.T, c *servertest.Cluster, cert *tls.Certificate) *client.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(c.Root.Cert)
	cli, err := client.New(client.Settings{Server: c.URL(), RootCAs: pool, Certificate: cert, HTTP3: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
