package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/runtime"
	"nexus.dev/nexus/runtime/image"
	"nexus.dev/nexus/runtime/image/builtin"
)

func newDemoCommand(g *globalOptions) *cobra.Command {
	var port, requests int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the built-in hello image as a container on this machine and talk to it",
		Long: `Run Nexus end to end on this machine, with no registry and no other service:
package this binary as the built-in image ` + builtin.Reference + ` (its
"nexus hello" HTTP server), unpack it into the image store under --data-dir,
start it as a container with Nexus's own OCI runtime (namespaces, cgroups,
seccomp, dropped capabilities, user nobody), send it a few HTTP requests and
print the answers, then stop it with SIGTERM and remove it.

The container shares the host's network namespace so that the demo can reach
it on 127.0.0.1 (real workloads get their own). Needs root, like any runtime.

A signal (Ctrl-C, SIGTERM, SIGHUP, SIGQUIT) or a closed standard output
(nexus demo | head -3) stops the demo the same way: the container is removed
and its root file system unmounted. Only SIGKILL leaves it behind; then
nexus runtime delete --force ID and nexus image prune (or nexus image release
ID) clean up.`,
		Example: `  nexus demo
  nexus --data-dir /tmp/nexus-demo demo --requests 5 --port 18080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Every signal that would end the process ends the demo through
			// its clean-up instead: the container is killed and removed and
			// its root file system unmounted. SIGPIPE is among them: Go
			// kills a program whose write to a closed standard output fails
			// unless it asks for that signal, and with it asked for, the
			// write fails with EPIPE instead.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGPIPE,
				syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGALRM)
			defer stop()
			err := runDemo(ctx, g, port, requests, &demoOutput{w: cmd.OutOrStdout()})
			if err != nil && ctx.Err() != nil && cmd.Context().Err() == nil {
				var cerr *cleanupError
				if errors.As(err, &cerr) {
					return fmt.Errorf("demo stopped (%v), and cleaning up failed: %w", context.Cause(ctx), cerr.err)
				}
				return fmt.Errorf("demo stopped (%v): the container was removed and its root file system unmounted", context.Cause(ctx))
			}
			return err
		},
	}
	cmd.Flags().IntVar(&port, "port", 0, "port on 127.0.0.1 for the container to listen on (default: a free one)")
	cmd.Flags().IntVar(&requests, "requests", 3, "HTTP requests to send")
	return cmd
}

func runDemo(ctx context.Context, g *globalOptions, port, requests int, out *demoOutput) (err error) {
	if requests < 1 {
		return fmt.Errorf("--requests %d: send at least one", requests)
	}
	if port < 0 || port > 65535 {
		return fmt.Errorf("--port %d is outside 0-65535: choose another, or leave it out for a free one", port)
	}
	if os.Geteuid() != 0 {
		return errors.New("nexus demo starts a container, which needs root: run it as root (sudo)")
	}
	if port == 0 {
		if port, err = freePort(); err != nil {
			return err
		}
	}
	store, err := (&imageOptions{globalOptions: g}).open()
	if err != nil {
		return err
	}
	defer store.Close()
	img, err := ensureBuiltin(ctx, store)
	if err != nil {
		return err
	}
	if err := out.printf("image     %s (ID %s, %s)\n", img.Name, img.ID, humanBytes(img.Size)); err != nil {
		return err
	}

	id := fmt.Sprintf("nexus-demo-%d", os.Getpid())
	bundle, err := store.Prepare(ctx, builtin.Reference, id, image.PrepareOptions{
		Args:        []string{"--listen", "127.0.0.1", "--port", strconv.Itoa(port), "--message", "served by the nexus demo"},
		Hostname:    "nexus-demo",
		HostNetwork: true, // reachable on 127.0.0.1; real workloads get their own
	})
	if err != nil {
		return err
	}
	defer func() {
		if rerr := store.Release(context.WithoutCancel(ctx), id); rerr != nil {
			err = errors.Join(err, &cleanupError{rerr})
		}
	}()
	logPath := filepath.Join(bundle, "output.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()

	rt := runtime.New(runtime.Config{})
	start := time.Now()
	if err := rt.Create(ctx, id, runtime.CreateOptions{Bundle: bundle, Stdout: logf, Stderr: logf}); err != nil {
		return err
	}
	defer func() {
		if derr := rt.Delete(context.WithoutCancel(ctx), id, true); derr != nil {
			err = errors.Join(err, &cleanupError{derr})
		}
	}()
	if err := rt.Start(ctx, id); err != nil {
		return err
	}
	if err := out.printf("container %s started in %v (bundle %s)\n", id, time.Since(start).Round(time.Millisecond), bundle); err != nil {
		return err
	}

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	client := &http.Client{Timeout: 5 * time.Second}
	if err := waitHealthy(ctx, client, base+"/healthz", 10*time.Second); err != nil {
		data, _ := os.ReadFile(logPath)
		return fmt.Errorf("the container did not answer on %s: %w; its output:\n%s", base, err, data)
	}
	for i := range requests {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("request %d to the container: %w", i+1, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("request %d to the container: %w", i+1, err)
		}
		if err := out.printf("--- GET %s/ -> %s\n%s", base, resp.Status, body); err != nil {
			return err
		}
	}

	if err := rt.Kill(id, syscall.SIGTERM, false); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	st, err := rt.Wait(wctx, id)
	if err != nil {
		return fmt.Errorf("wait for the container to stop: %w", err)
	}
	if err := out.printf("container %s stopped on SIGTERM with exit code %d; removing it\n", id, st.Code); err != nil {
		return err
	}
	if st.Code != 0 {
		return fmt.Errorf("the container exited with code %d after SIGTERM, want 0", st.Code)
	}
	return nil
}

// cleanupError is a failure to remove what the demo made.
type cleanupError struct{ err error }

func (e *cleanupError) Error() string { return "clean up: " + e.err.Error() }
func (e *cleanupError) Unwrap() error { return e.err }

// demoOutput is the demo's standard output. The first write that fails
// (a closed pipe) is kept and fails every later one, so that the demo stops
// at its next step instead of talking to nobody.
type demoOutput struct {
	w   io.Writer
	err error
}

func (o *demoOutput) Write(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	n, err := o.w.Write(p)
	if err != nil {
		o.err = fmt.Errorf("write the demo's output: %w", err)
	}
	return n, o.err
}

// printf writes to the demo's output and returns the error of the first
// write that failed.
func (o *demoOutput) printf(format string, args ...any) error {
	fmt.Fprintf(o, format, args...)
	return o.err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitHealthy(ctx context.Context, client *http.Client, url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s answered %s", url, resp.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
