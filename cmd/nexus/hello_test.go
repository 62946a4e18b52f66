package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHelloServesAndStopsOnSIGTERM runs `nexus hello` as a process, as a
// container would, asks it twice and stops it with SIGTERM.
func TestHelloServesAndStopsOnSIGTERM(t *testing.T) {
	bin := nexusBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "hello", "--listen", "127.0.0.1", "--port", "0", "--message", "from the test", "--log-level", "debug")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	listening := regexp.MustCompile(`listening on (\S+?)"?$`)
	var addr string
	for addr == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("nexus hello exited before listening")
			}
			if m := listening.FindStringSubmatch(l); m != nil {
				addr = m[1]
			}
		case <-ctx.Done():
			t.Fatal("nexus hello did not report its address")
		}
	}
	for i, want := range []string{"request 1: GET /", "request 2: GET /"} {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, s := range []string{want, "hello from ", "from the test", "127.0.0.1"} {
			if !strings.Contains(string(body), s) {
				t.Errorf("answer %d lacks %q:\n%s", i+1, s, body)
			}
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v (want exit 0); log: %s", err, strings.Join(rest, "\n"))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to stop", d)
	}
	if !strings.Contains(strings.Join(rest, "\n"), "msg=request method=GET path=/") {
		t.Errorf("no debug line per request in: %s", strings.Join(rest, "\n"))
	}
}

func TestHelloRejectsBadPorts(t *testing.T) {
	t.Setenv("PORT", "http")
	if _, err := run(t, "hello"); err == nil || !strings.Contains(err.Error(), `PORT="http" is not a port number`) {
		t.Errorf("bad PORT: %v", err)
	}
	t.Setenv("PORT", "70000")
	if _, err := run(t, "hello"); err == nil || !strings.Contains(err.Error(), `PORT="70000" is not a port number`) {
		t.Errorf("PORT out of range: %v", err)
	}
	if _, err := run(t, "hello", "--port", "70000"); err == nil || !strings.Contains(err.Error(), "outside 0-65535") {
		t.Errorf("--port 70000: %v", err)
	}
}

// TestHelloRefusesALoadItCannotGive: --hold-memory and --burn-cpu refuse
// what is not an amount and what the machine cannot give (1Ei made the
// allocation panic), naming the flag, before the server starts.
func TestHelloRefusesALoadItCannotGive(t *testing.T) {
	bin := nexusBinary(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--hold-memory", "lots"}, `Error: --hold-memory: memory amount "lots"`},
		{[]string{"--hold-memory", "1Ei"}, "Error: --hold-memory: cannot hold 1099511627776 MiB: the machine has "},
		{[]string{"--burn-cpu", "-1"}, `Error: --burn-cpu: CPU amount "-1"`},
		{[]string{"--burn-cpu", "100000"}, "Error: --burn-cpu: cannot keep 100000000 millicores busy: the machine has "},
	} {
		args := append([]string{"hello", "--listen", "127.0.0.1", "--port", "0"}, tc.args...)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), tc.want) || strings.Contains(string(out), "listening") {
			t.Errorf("nexus %v: %v\n%s\nwant exit 1 and %q", args, err, out, tc.want)
		}
	}
}
