package api_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/api/apitest"
	apiclient "nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/audit"
)

// execCluster is an API server with node n1 connected (a HostNode) and
// the instances web-1 (Running on n1), pending-1 (not scheduled), starting-1
// (on n1, Starting) and far-1 (Running on n2, whose agent is not connected).
type execCluster struct {
	c    *servertest.Cluster
	node *servertest.HostNode
}

func startExecCluster(t *testing.T) *execCluster {
	t.Helper()
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	admin := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	for _, inst := range []struct{ name, node, phase string }{
		{"web-1", "n1", "Running"}, {"pending-1", "", ""}, {"starting-1", "n1", "Starting"}, {"far-1", "n2", "Running"},
	} {
		admin.must(201, "POST", "/v1/namespaces/default/instances", "application/json",
			`{"kind":"Instance","metadata":{"name":"`+inst.name+`"},"spec":{"nodeName":"`+inst.node+`","template":{"image":"nexus.local/hello"}}}`)
		if inst.phase != "" {
			admin.must(200, "PATCH", "/v1/namespaces/default/instances/"+inst.name+"/status", "application/merge-patch+json",
				`{"status":{"phase":"`+inst.phase+`"}}`)
		}
	}
	node := servertest.NewHostNode()
	t.Cleanup(c.Server.Nodes().Register("n1", node))
	return &execCluster{c: c, node: node}
}

func (e *execCluster) client(t *testing.T, user string, h3 bool) *apiclient.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(e.c.Root.Cert)
	cert := e.c.User(t, user)
	cli, err := apiclient.New(apiclient.Settings{Server: e.c.URL(), RootCAs: pool, Certificate: cert, HTTP3: h3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func execIn(t *testing.T, cli *apiclient.Client, name string, opts types.ExecOptions, stdin io.Reader) (string, string, int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	opts.Stdin = stdin != nil
	code, err := cli.Exec(ctx, "default", name, opts, types.ExecStreams{Stdin: stdin, Stdout: &stdout, Stderr: &stderr})
	return stdout.String(), stderr.String(), code, err
}

// TestExecOverHTTP2AndHTTP3: an exec's input and output flow at once over
// one request, on HTTP/2 and HTTP/3; outputs stay apart, big output comes
// whole, the exit code comes back, and the audit log records the command.
func TestExecOverHTTP2AndHTTP3(t *testing.T) {
	e := startExecCluster(t)
	for _, h3 := range []bool{false, true} {
		cli := e.client(t, "admin", h3)
		stdout, stderr, code, err := execIn(t, cli, "web-1", types.ExecOptions{Command: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}}, nil)
		if err != nil || stdout != "out\n" || stderr != "err\n" || code != 3 {
			t.Fatalf("%s: stdout %q, stderr %q, code %d, err %v", cli.Proto(), stdout, stderr, code, err)
		}
		// cat answers each line as it comes: the output flows while the
		// input is still being sent.
		inR, inW := io.Pipe()
		out := &lineWaiter{lines: make(chan string, 4)}
		done := make(chan error, 1)
		go func() {
			code, err := cli.Exec(context.Background(), "default", "web-1", types.ExecOptions{Command: []string{"cat"}, Stdin: true},
				types.ExecStreams{Stdin: inR, Stdout: out, Stderr: io.Discard})
			if err == nil && code != 0 {
				err = errors.New("cat failed")
			}
			done <- err
		}()
		for _, line := range []string{"one\n", "two\n"} {
			inW.Write([]byte(line))
			select {
			case got := <-out.lines:
				if got != line {
					t.Fatalf("%s: cat answered %q to %q", cli.Proto(), got, line)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: cat did not answer %q while its input was open", cli.Proto(), line)
			}
		}
		inW.Close()
		if err := <-done; err != nil {
			t.Fatalf("%s: cat: %v", cli.Proto(), err)
		}
		<-e.node.Ended
		<-e.node.Ended

		stdout, _, code, err = execIn(t, cli, "web-1", types.ExecOptions{Command: []string{"sh", "-c", "yes 0123456789abcde | head -c 300000"}}, nil)
		if err != nil || code != 0 || len(stdout) != 300000 || !strings.HasPrefix(stdout, "0123456789abcde\n") {
			t.Fatalf("%s: 300000 bytes of output: got %d, code %d, err %v", cli.Proto(), len(stdout), code, err)
		}
		<-e.node.Ended
	}
	// A variable's value reaches the process, not the audit log.
	const secret = "hunter2-exec-value"
	stdout, _, _, err := execIn(t, e.client(t, "admin", false), "web-1", types.ExecOptions{Command: []string{"sh", "-c", "echo $TOKEN"}, Env: []string{"TOKEN=" + secret}}, nil)
	if err != nil || stdout != secret+"\n" {
		t.Fatalf("exec with a variable: %q, %v", stdout, err)
	}
	<-e.node.Ended
	data, err := os.ReadFile(filepath.Join(e.c.AuditDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), secret) {
		t.Fatal("an exec's variable value is in the audit log")
	}
	var commands, envs []string
	var last types.ExecOptions // the options recorded (Request level) of the last exec
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var rec audit.Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Subresource == "exec" && rec.Verb == "create" && rec.Code == 200 && rec.User.Name == "admin" {
			commands = append(commands, rec.Annotations["exec.command"])
			envs = append(envs, rec.Annotations["exec.env"])
			last = types.ExecOptions{}
			if err := json.Unmarshal(rec.Request, &last); err != nil {
				t.Fatalf("the options of an exec's audit record: %v (%s)", err, rec.Request)
			}
		}
	}
	if len(commands) != 7 || commands[1] != `["cat"]` || envs[6] != "TOKEN" {
		t.Fatalf("audit records of the execs: commands %q, variables %q", commands, envs)
	}
	if len(last.Env) != 1 || last.Env[0] != "TOKEN=<redacted>" || last.Command[2] != "echo $TOKEN" {
		t.Fatalf("the options recorded of the exec with a variable: %+v, want its command and TOKEN=<redacted>", last)
	}
}

type lineWaiter struct {
	buf   bytes.Buffer
	lines chan string
}

func (l *lineWaiter) Write(p []byte) (int, error) {
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadString('\n')
		if err != nil {
			l.buf.WriteString(line)
			return len(p), nil
		}
		l.lines <- line
	}
}

// TestExecOverHTTP11: an HTTP/1.1 client gets the same full duplex
// stream (the server enables it): the output of the first input arrives
// while the request body is still open.
func TestExecOverHTTP11(t *testing.T) {
	e := startExecCluster(t)
	pool := x509.NewCertPool()
	pool.AddCert(e.c.Root.Cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{*e.c.User(t, "admin")}},
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}} // no HTTP/2
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	bodyR, bodyW := io.Pipe()
	defer bodyW.Close()
	// The transport gives up on a cancelled request only once it is done
	// writing the body.
	context.AfterFunc(ctx, func() { bodyW.CloseWithError(ctx.Err()) })
	req, err := http.NewRequestWithContext(ctx, "POST", e.c.URL()+"/v1/namespaces/default/instances/web-1/exec", bodyR)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", types.ExecContentType)
	go func() {
		bodyW.Write([]byte(`{"command":["cat"],"stdin":true}` + "\n"))
		bodyW.Write(types.AppendExecFrame(nil, types.StreamStdin, []byte("one\n")))
	}()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 1 || resp.StatusCode != 200 {
		t.Fatalf("exec over HTTP/1.1: %s %s", resp.Proto, resp.Status)
	}
	frames := types.NewExecFrameReader(resp.Body)
	if s, p, err := frames.Next(); err != nil || s != types.StreamStdout || string(p) != "one\n" {
		t.Fatalf("first frame while the input is open: %v %q %v, want stdout \"one\\n\"", s, p, err)
	}
	bodyW.Close()
	s, p, err := frames.Next()
	if err != nil || s != types.StreamExit || string(p) != `{"exitCode":0}` {
		t.Fatalf("after the input ended: %v %q %v, want the exit frame with code 0", s, p, err)
	}
	<-e.node.Ended
}

// TestExecRefusals: who may exec is RBAC's create on instances/exec (the
// view role may not); bad options, instances that do not run, and nodes
// whose agent is away are refused with a status and a reason.
func TestExecRefusals(t *testing.T) {
	e := startExecCluster(t)
	c := e.c
	admin := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	for _, u := range []struct{ user, role string }{{"viewer", "view"}, {"editor", "edit"}} {
		admin.must(201, "POST", "/v1/namespaces/default/rolebindings", "application/json",
			`{"kind":"RoleBinding","metadata":{"name":"`+u.user+`"},"subjects":[{"kind":"User","name":"`+u.user+`"}],"roleRef":{"kind":"ClusterRole","name":"`+u.role+`"}}`)
	}
	viewer := client{t: t, hc: c.HTTPClient(t, c.User(t, "viewer"), false), url: c.URL()}
	waitFor(t, "the viewer's binding", func() bool {
		return viewer.do("GET", "/v1/namespaces/default/instances/web-1", "", nil).code == 200
	})
	_, _, _, err := execIn(t, e.client(t, "viewer", false), "web-1", types.ExecOptions{Command: []string{"true"}}, nil)
	var ae *apiclient.APIError
	if !errors.As(err, &ae) || ae.Status != 403 || !strings.Contains(ae.Detail, "instances/exec") {
		t.Fatalf("exec by a viewer: %v, want 403 naming instances/exec", err)
	}
	if _, _, code, err := execIn(t, e.client(t, "editor", false), "web-1", types.ExecOptions{Command: []string{"true"}}, nil); err != nil || code != 0 {
		t.Fatalf("exec by an editor: code %d, %v", code, err)
	}
	<-e.node.Ended

	const path = "/v1/namespaces/default/instances/web-1/exec"
	for _, tc := range []struct {
		name, path, method, body string
		code                     int
		detail                   string
	}{
		{"not JSON", path, "POST", "hostname\n", 400, "must start with the exec options"},
		{"no command", path, "POST", `{"command":[]}` + "\n", 400, "command: must name the program"},
		{"unknown field", path, "POST", `{"command":["x"],"user":"root"}` + "\n", 400, "user"},
		{"empty body", path, "POST", "", 400, "the request body is empty"},
		{"GET", path, "GET", "", 405, "POST"},
		{"no such instance", "/v1/namespaces/default/instances/nope/exec", "POST", `{"command":["x"]}` + "\n", 404, "nope"},
		{"not scheduled", "/v1/namespaces/default/instances/pending-1/exec", "POST", `{"command":["x"]}` + "\n", 409, "instance default/pending-1 is not scheduled yet: no node runs it"},
		{"not running", "/v1/namespaces/default/instances/starting-1/exec", "POST", `{"command":["x"]}` + "\n", 409, "is Starting on node n1, not Running"},
		{"agent away", "/v1/namespaces/default/instances/far-1/exec", "POST", `{"command":["x"]}` + "\n", 503, "node n2's agent is not connected to this server, and instance default/far-1 runs there"},
		{"a subresource of another resource", "/v1/namespaces/default/workloads/web/exec", "POST", `{"command":["x"]}` + "\n", 404, "no subresource"},
	} {
		r := admin.do(tc.method, tc.path, types.ExecContentType, tc.body)
		if r.code != tc.code || !strings.Contains(r.problem.Detail, tc.detail) {
			t.Errorf("%s: %d %q, want %d and a detail with %q", tc.name, r.code, r.problem.Detail, tc.code, tc.detail)
		}
	}

	// A frame that breaks the rules stops the process and says why.
	for _, tc := range []struct {
		name, options string
		frame         []byte
		want          string
	}{
		{"unknown stream", `{"command":["sleep","30"],"stdin":true}`, []byte{9, 0, 0, 0, 0}, "unknown stream 9"},
		{"stdin not asked for", `{"command":["sleep","30"]}`, types.AppendExecFrame(nil, types.StreamStdin, []byte("x")), "started without stdin"},
		{"an answer's frame", `{"command":["sleep","30"],"stdin":true}`, types.AppendExecFrame(nil, types.StreamStdout, []byte("x")), "a stdout frame, which only answers carry"},
		{"an empty terminal size", `{"command":["sleep","30"],"tty":true}`, types.AppendExecFrame(nil, types.StreamResize, []byte(`{"width":0,"height":5}`)), "resize frame: 0x5"},
	} {
		body := append([]byte(tc.options+"\n"), tc.frame...)
		r := admin.must(200, "POST", path, types.ExecContentType, body)
		fr := types.NewExecFrameReader(bytes.NewReader(r.body))
		s, p, err := fr.Next()
		for err == nil && s == types.StreamStdout { // a terminal's output, if any
			s, p, err = fr.Next()
		}
		if err != nil || s != types.StreamExit || !strings.Contains(string(p), tc.want) {
			t.Fatalf("%s: %v %q %v, want an exit frame with %q", tc.name, s, p, err, tc.want)
		}
		if err := <-e.node.Ended; err == nil {
			t.Fatalf("%s: the process ran to its end after a bad frame", tc.name)
		}
	}
}

// TestExecEndsWhenTheCallerGoes: cancelling the client's context ends
// the process on the node, over HTTP/2 and HTTP/3.
func TestExecEndsWhenTheCallerGoes(t *testing.T) {
	e := startExecCluster(t)
	for _, h3 := range []bool{false, true} {
		cli := e.client(t, "admin", h3)
		ctx, cancel := context.WithCancel(context.Background())
		out := &lineWaiter{lines: make(chan string, 1)}
		done := make(chan error, 1)
		go func() {
			_, err := cli.Exec(ctx, "default", "web-1", types.ExecOptions{Command: []string{"sh", "-c", "echo started; exec sleep 60"}},
				types.ExecStreams{Stdout: out, Stderr: io.Discard})
			done <- err
		}()
		select {
		case <-out.lines:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the process did not start", cli.Proto())
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: exec after cancel: %v", cli.Proto(), err)
		}
		select {
		case err := <-e.node.Ended:
			if err == nil {
				t.Fatalf("%s: the process ended on its own, not by the cancel", cli.Proto())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the process still runs 10 s after its caller went", cli.Proto())
		}
	}
}
