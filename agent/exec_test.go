package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"nexus.dev/nexus/agent"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/testrootfs"
	"nexus.dev/nexus/runtime/image"
	"nexus.dev/nexus/runtime/image/builtin"
)

const busyboxImage = "test.local/busybox:1"

// execFixture is an API server and an agent (node n1) running two
// instances: "box" (busybox, sleeping) and "web" (the built-in image).
type execFixture struct {
	admin *client.Client
	a     *agent.Agent
}

func startExecFixture(t *testing.T) *execFixture {
	t.Helper()
	n := startNode(t, nil)
	rootfs := t.TempDir()
	if err := testrootfs.Build(rootfs); err != nil {
		t.Fatal(err)
	}
	if _, err := n.imgs.ImportPath(context.Background(), rootfs, image.ImportOptions{Name: busyboxImage}); err != nil {
		t.Fatal(err)
	}
	a, _ := n.run(t, nil)
	admin := n.admin
	grace := int64(1)
	for name, tmpl := range map[string]types.InstanceTemplate{
		"box": {Image: busyboxImage, Command: []string{"sleep", "1000000"}, TerminationGracePeriodSeconds: &grace},
		"web": {Image: builtin.Reference, Args: []string{"--port", "8080"}, TerminationGracePeriodSeconds: &grace},
	} {
		n.create(t, name, tmpl)
	}
	for _, name := range []string{"box", "web"} {
		waitInstance(t, admin, name, "running", func(i *types.Instance) bool { return i.Status.Phase == types.PhaseRunning })
	}
	return &execFixture{admin: admin, a: a}
}

// run execs opts in instance name through the API and returns stdout,
// stderr and the exit code.
func (f *execFixture) run(t *testing.T, name string, opts types.ExecOptions, stdin io.Reader) (string, string, int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	opts.Stdin = stdin != nil
	code, err := f.admin.Exec(ctx, "default", name, opts, types.ExecStreams{Stdin: stdin, Stdout: &stdout, Stderr: &stderr})
	return stdout.String(), stderr.String(), code, err
}

// TestExecInAnInstance: a process exec'd in a running instance's container
// through the API sees the container (its hostname, environment, working
// directory), gets its input, keeps stdout and stderr apart, and its exit
// code comes back; a command that does not exist gives 127 and says so.
func TestExecInAnInstance(t *testing.T) {
	f := startExecFixture(t)
	cases := []struct {
		name, instance        string
		opts                  types.ExecOptions
		stdin                 string
		stdout, stderr, fails string
		code                  int
	}{
		{name: "hostname", instance: "box", opts: types.ExecOptions{Command: []string{"hostname"}}, stdout: "box\n"},
		{name: "hostname in the built-in image", instance: "web", opts: types.ExecOptions{Command: []string{"hostname"}}, stdout: "web\n"},
		{name: "exit code and both outputs", instance: "box",
			opts:   types.ExecOptions{Command: []string{"sh", "-c", "echo out; echo err >&2; exit 7"}},
			stdout: "out\n", stderr: "err\n", code: 7},
		{name: "stdin", instance: "box", opts: types.ExecOptions{Command: []string{"cat"}},
			stdin: "hello\nworld\n", stdout: "hello\nworld\n"},
		{name: "env and working directory", instance: "box",
			opts:   types.ExecOptions{Command: []string{"sh", "-c", "echo $FOO; pwd"}, Env: []string{"FOO=bar"}, WorkingDir: "/tmp"},
			stdout: "bar\n/tmp\n"},
		{name: "a variable replaces the container's of the same name", instance: "box",
			opts:   types.ExecOptions{Command: []string{"sh", "-c", "echo $PATH; env | grep -c ^PATH="}, Env: []string{"PATH=/opt/x:/bin"}},
			stdout: "/opt/x:/bin\n1\n"},
		// Output after the exit is passed on until none comes for a while
		// (outputGrace, 2 s): "late", a second after, arrives; the sleep
		// that then holds the output open for ten minutes is not waited
		// for (the run's 60 s would end first).
		{name: "output after the exit, then a held stdout", instance: "box",
			opts:   types.ExecOptions{Command: []string{"sh", "-c", "(sleep 1; echo late; exec sleep 600) & echo early"}},
			stdout: "early\nlate\n"},
		{name: "killed by a signal", instance: "box", opts: types.ExecOptions{Command: []string{"sh", "-c", "kill -9 $$"}}, code: 137},
		{name: "command not found", instance: "box", opts: types.ExecOptions{Command: []string{"no-such-command"}},
			code: 127, fails: `"no-such-command" not found`},
		{name: "not executable", instance: "box", opts: types.ExecOptions{Command: []string{"/etc/passwd"}},
			code: 126, fails: "/etc/passwd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdin io.Reader
			if tc.stdin != "" {
				stdin = strings.NewReader(tc.stdin)
			}
			stdout, stderr, code, err := f.run(t, tc.instance, tc.opts, stdin)
			if tc.fails != "" {
				if err == nil || !strings.Contains(err.Error(), tc.fails) || code != tc.code {
					t.Fatalf("exec %q: code %d, error %v; want code %d and an error with %q", tc.opts.Command, code, err, tc.code, tc.fails)
				}
				return
			}
			if err != nil {
				t.Fatalf("exec %q: %v", tc.opts.Command, err)
			}
			if stdout != tc.stdout || stderr != tc.stderr || code != tc.code {
				t.Fatalf("exec %q: stdout %q, stderr %q, code %d; want %q, %q, %d", tc.opts.Command, stdout, stderr, code, tc.stdout, tc.stderr, tc.code)
			}
		})
	}
}

// TestExecWithATerminal: with tty the process has a terminal of the size
// asked for, and a resize changes it while the process runs.
func TestExecWithATerminal(t *testing.T) {
	f := startExecFixture(t)
	stdout, _, code, err := f.run(t, "box", types.ExecOptions{Command: []string{"sh", "-c", "tty; test -t 0 && echo stdin-is-a-tty; stty size"},
		TTY: true, Size: &types.TerminalSize{Width: 100, Height: 30}}, nil)
	if err != nil || code != 0 {
		t.Fatalf("exec with a tty: code %d, %v", code, err)
	}
	for _, want := range []string{"/dev/pts/", "stdin-is-a-tty\r\n", "30 100\r\n"} {
		if !strings.Contains(stdout, want) {
			t.Fatalf("exec with a tty printed %q: want %q in it", stdout, want)
		}
	}

	// The shell prints its size, waits for a line, prints it again.
	inR, inW := io.Pipe()
	out := &syncBuffer{}
	resize := make(chan types.TerminalSize, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	result := make(chan error, 1)
	go func() {
		code, err := f.admin.Exec(ctx, "default", "box", types.ExecOptions{Command: []string{"sh", "-c", "stty size; read x; stty size"},
			TTY: true, Stdin: true, Size: &types.TerminalSize{Width: 80, Height: 24}}, types.ExecStreams{Stdin: inR, Stdout: out, Resize: resize})
		if err == nil && code != 0 {
			err = fmt.Errorf("exit code %d", code)
		}
		result <- err
	}()
	waitOutput(t, out, "24 80\r\n")
	resize <- types.TerminalSize{Width: 132, Height: 50}
	// The resize and the input take different ways to the terminal: give
	// the resize a moment to arrive first.
	time.Sleep(300 * time.Millisecond)
	if _, err := inW.Write([]byte("\n")); err != nil {
		t.Fatal(err)
	}
	if err := <-result; err != nil {
		t.Fatalf("exec with a resize: %v (output %q)", err, out.String())
	}
	if !strings.Contains(out.String(), "50 132\r\n") {
		t.Fatalf("after a resize to 132x50 the terminal printed %q", out.String())
	}
}

// TestExecEndsWithItsCaller: a caller that goes away takes its process
// with it, and an instance without a container here, or bound to another
// node, is refused with a reason.
func TestExecEndsWithItsCaller(t *testing.T) {
	f := startExecFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() {
		_, err := f.admin.Exec(ctx, "default", "box", types.ExecOptions{Command: []string{"sleep", "987654"}}, types.ExecStreams{Stdout: io.Discard})
		result <- err
	}()
	waitProcess(t, "sleep\x00987654\x00", true)
	cancel()
	if err := <-result; !errors.Is(err, context.Canceled) {
		t.Fatalf("exec after its context ended: %v", err)
	}
	waitProcess(t, "sleep\x00987654\x00", false)

	ghost := &types.Instance{ObjectMeta: types.ObjectMeta{Name: "ghost", Namespace: "default", UID: "no-such-uid"},
		Spec: types.InstanceSpec{NodeName: "n1"}}
	_, err := f.a.Exec(context.Background(), ghost, types.ExecOptions{Command: []string{"true"}}, types.ExecStreams{Stdout: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "default/ghost has no container on node n1") {
		t.Fatalf("exec in an instance without a container: %v", err)
	}
	elsewhere := &types.Instance{ObjectMeta: types.ObjectMeta{Name: "box", Namespace: "default", UID: "no-such-uid"},
		Spec: types.InstanceSpec{NodeName: "n2"}}
	_, err = f.a.Exec(context.Background(), elsewhere, types.ExecOptions{Command: []string{"true"}}, types.ExecStreams{Stdout: io.Discard})
	if err == nil || !strings.Contains(err.Error(), `instance default/box is bound to node "n2", not to n1`) {
		t.Fatalf("exec in an instance of another node: %v", err)
	}
}

// TestExecOutputWaitsForASlowCaller: output the caller is slow to take
// is not cut off after the process exits, however long one write takes:
// "b", written while "a" waits 3 s for the caller (longer than the 2 s an
// exited process's output may be silent), arrives too.
func TestExecOutputWaitsForASlowCaller(t *testing.T) {
	f := startExecFixture(t)
	box := waitInstance(t, f.admin, "box", "running", func(i *types.Instance) bool { return i.Status.Phase == types.PhaseRunning })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := &slowWriter{delay: 3 * time.Second}
	code, err := f.a.Exec(ctx, box, types.ExecOptions{Command: []string{"sh", "-c", "echo a; sleep 0.5; echo b"}}, types.ExecStreams{Stdout: out})
	if err != nil || code != 0 || out.String() != "a\nb\n" {
		t.Fatalf("exec with a slow caller: code %d, %v, output %q; want \"a\\nb\\n\"", code, err, out.String())
	}
}

// slowWriter takes delay over its first write.
type slowWriter struct {
	syncBuffer
	delay time.Duration
	once  sync.Once
}

func (w *slowWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { time.Sleep(w.delay) })
	return w.syncBuffer.Write(p)
}

// waitProcess waits until a process with this command line exists (or,
// with !present, until none does).
func waitProcess(t *testing.T, cmdline string, present bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		found := false
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && string(b) == cmdline {
				found = true
				break
			}
		}
		if found == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %q present=%v after 10 s, want %v", cmdline, found, present)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitOutput(t *testing.T, b *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q: no %q within 30 s", b.String(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
