package main

import (
	"context"
	"crypto/x509"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/term"
)

// execE2E is the in-process API server with instance web-1 Running on
// node n1, whose connection runs commands as processes of this machine
// (servertest.HostNode): the command line's side of exec, through the
// binary. The agent's side, in containers, is tested in package agent.
func execE2E(t *testing.T) *e2e {
	t.Helper()
	e := newE2E(t)
	pool := x509.NewCertPool()
	pool.AddCert(e.c.Root.Cert)
	cli, err := client.New(client.Settings{Server: e.c.URL(), RootCAs: pool, Certificate: e.c.User(t, "admin")})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	inst := &types.Instance{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Instance"},
		ObjectMeta: types.ObjectMeta{Name: "web-1", Namespace: "default"},
		Spec:       types.InstanceSpec{NodeName: "n1", Template: types.InstanceTemplate{Image: "nexus.local/hello"}}}
	o, err := cli.Create(context.Background(), inst)
	if err != nil {
		t.Fatal(err)
	}
	inst = o.(*types.Instance)
	inst.Status.Phase = types.PhaseRunning
	if _, err := cli.UpdateStatus(context.Background(), inst); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.c.Server.Nodes().Register("n1", servertest.NewHostNode()))
	return e
}

// TestExecCommand: nexus exec passes the command's output, errors and
// exit code on, its input with -i, says why a command could not run
// (and exits 127 as a shell would), and refuses what it cannot do.
func TestExecCommand(t *testing.T) {
	e := execE2E(t)
	r := e.run(nil, "", "exec", "web-1", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
	if r.exit != 3 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Fatalf("exec with exit 3: exit %d, stdout %q, stderr %q", r.exit, r.stdout, r.stderr)
	}
	r = e.run(nil, "hello\nworld\n", "exec", "-i", "web-1", "--", "cat")
	if r.exit != 0 || r.stdout != "hello\nworld\n" {
		t.Fatalf("exec -i cat: exit %d, stdout %q, stderr %q", r.exit, r.stdout, r.stderr)
	}
	r = e.run(nil, "", "exec", "-e", "GREETING=hi", "-w", "/", "web-1", "--", "sh", "-c", "echo $GREETING; pwd")
	if r.exit != 0 || r.stdout != "hi\n/\n" {
		t.Fatalf("exec -e -w: exit %d, stdout %q, stderr %q", r.exit, r.stdout, r.stderr)
	}
	r = e.run(nil, "", "exec", "web-1", "--", "no-such-command-x")
	if r.exit != 127 || !strings.Contains(r.stderr, "no-such-command-x") {
		t.Fatalf("exec of a missing command: exit %d, stderr %q; want 127 and the command named", r.exit, r.stderr)
	}
	e.fails([]string{`put the command after "--": nexus exec web-1 -- hostname`}, "exec", "web-1", "hostname")
	e.fails([]string{"give the command to run"}, "exec", "web-1", "--")
	e.fails([]string{"-t needs a terminal on stdin"}, "exec", "-t", "web-1", "--", "true")
	e.fails([]string{`env[0]: "NOEQUALS" must be NAME=VALUE`}, "exec", "-e", "NOEQUALS", "web-1", "--", "true")
	e.fails([]string{"instances", "nope"}, "exec", "nope", "--", "true")

	// An instance whose node's agent is away: the error says which node,
	// and does not send the user to the server's store.
	e.file("away.yaml", "kind: Instance\nmetadata: {name: away}\nspec: {nodeName: n9, template: {image: a}}\n")
	e.ok("apply", "-f", "away.yaml")
	r = e.fails([]string{"node n9's agent is not connected to this server", "check the node (nexus get node n9)"}, "exec", "away", "--", "true")
	if strings.Contains(r.stderr, "store") {
		t.Errorf("the error blames the store for a node that is away:\n%s", r.stderr)
	}
}

// TestExecCommandWithATerminal: nexus exec -it from a terminal gives the
// command a terminal of the same size, passes a resize of the local
// terminal on, and leaves the local terminal as it found it.
func TestExecCommandWithATerminal(t *testing.T) {
	e := execE2E(t)
	master, slave := openPTY(t)
	if err := term.SetSize(master, 101, 33); err != nil {
		t.Fatal(err)
	}
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := e.command(ctx, []string{"TERM=xterm-test"}, "exec", "-it", "web-1", "--", "sh", "-c", "echo $TERM; stty size; read x; stty size")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	// Its own session, with the terminal as its controlling one, so that
	// a resize signals it (SIGWINCH), as in a shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	expect := lineExpecter(ctx, t, master, nil)
	expect(`^xterm-test\r?$`)
	expect(`^33 101\r?$`)
	if err := term.SetSize(master, 120, 40); err != nil {
		t.Fatal(err)
	}
	// The resize travels apart from the input: let it arrive first.
	time.Sleep(300 * time.Millisecond)
	if _, err := master.Write([]byte("\r")); err != nil {
		t.Fatal(err)
	}
	expect(`^40 120\r?$`)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nexus exec -it: %v", err)
	}
	after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag {
		t.Fatalf("the local terminal was not restored: lflag %#x iflag %#x oflag %#x, was %#x %#x %#x",
			after.Lflag, after.Iflag, after.Oflag, before.Lflag, before.Iflag, before.Oflag)
	}
}
