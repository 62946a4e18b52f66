package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/hello"
	"nexus.dev/nexus/runtime/image/builtin"
)

func newHelloCommand() *cobra.Command {
	var (
		port       int
		listen     string
		message    string
		holdMemory string
		burnCPU    string
		dnsPort    int
	)
	cmd := &cobra.Command{
		Use:   "hello",
		Short: "Run a small HTTP server that reports its hostname, addresses and a request count",
		Long: `Run a small HTTP server, the entrypoint of the built-in image ` + builtin.Reference + `.
"/" answers with the hostname, every interface address, the request number and the
request as received (plain text, or JSON with "Accept: application/json");
"/healthz" answers "ok" ("/healthz/fail" makes it answer 503 from then on, to
test readiness, and "/healthz/pass" undoes that); "/bytes?n=N" answers N zero
bytes (at most 1 GiB), a body of known size for throughput measurements. Each
answer on "/" is logged on stdout (health checks and /bytes are not); the
server's own messages go to stderr.
With --dns-port it also answers DNS over UDP on that port, for tests of UDP
services: TXT (any name) the host name, A and AAAA its own addresses.
SIGTERM or SIGINT stop it gracefully within 5 seconds.`,
		Args: cobra.NoArgs,
		Example: `  nexus hello --port 8080
  nexus hello --message "blue deployment"
  nexus hello --dns-port 5353
  # from another terminal, download speed from it (bytes per second):
  curl -so /dev/null -w '%{speed_download}\n' 'http://[::1]:8080/bytes?n=1000000000'
  # a known load, to watch with nexus top or to test limits and OOM kills:
  nexus run load --image nexus.local/hello -- /nexus hello --hold-memory 64Mi --burn-cpu 250m`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			held, err := applyHelloLoad(cmd.Context(), holdMemory, burnCPU)
			if err != nil {
				return err
			}
			defer runtime.KeepAlive(held)
			if !cmd.Flags().Changed("port") {
				if env := os.Getenv("PORT"); env != "" {
					p, err := strconv.Atoi(env)
					if err != nil || p < 0 || p > 65535 {
						return fmt.Errorf("environment PORT=%q is not a port number: set it to 0-65535 or pass --port", env)
					}
					port = p
				}
			}
			if port < 0 || port > 65535 {
				return fmt.Errorf("--port %d is outside 0-65535: choose another, or 0 for a free one", port)
			}
			// Catching the signals matters most as PID 1 in a container,
			// where the kernel applies no default action to them.
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			ln, err := net.Listen("tcp", net.JoinHostPort(listen, strconv.Itoa(port)))
			if err != nil {
				return fmt.Errorf("listen on %s port %d: %w (choose another with --listen/--port)", listen, port, err)
			}
			slog.Info("listening on " + ln.Addr().String())
			if dnsPort != 0 {
				if dnsPort < 0 || dnsPort > 65535 {
					return fmt.Errorf("--dns-port %d is outside 1-65535", dnsPort)
				}
				pc, err := net.ListenPacket("udp", net.JoinHostPort(listen, strconv.Itoa(dnsPort)))
				if err != nil {
					return fmt.Errorf("listen for DNS on %s port %d: %w (choose another with --dns-port)", listen, dnsPort, err)
				}
				slog.Info("answering DNS on " + pc.LocalAddr().String())
				go func() {
					if err := hello.ServeDNS(ctx, pc, os.Hostname, hello.InterfaceAddresses); err != nil {
						slog.Error("dns", "err", err)
					}
				}()
			}
			err = hello.Serve(ctx, ln, hello.NewHandler(hello.Config{Message: message, AccessLog: os.Stdout}))
			if err == nil {
				slog.Info("stopped")
			}
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&port, "port", builtin.Port, "TCP port to listen on (the PORT environment variable overrides the default)")
	f.StringVar(&listen, "listen", "::", `address to listen on; "::" is every IPv6 and IPv4 address`)
	f.StringVar(&message, "message", "", "a line to add to every answer")
	f.StringVar(&holdMemory, "hold-memory", "", `allocate this much memory at start and hold it, e.g. "64Mi" (under a lower memory limit the container is OOM-killed)`)
	f.IntVar(&dnsPort, "dns-port", 0, "also answer DNS queries over UDP on this port (TXT: the host name; A, AAAA: its addresses)")
	f.StringVar(&burnCPU, "burn-cpu", "", `keep this much CPU busy while running, e.g. "250m" or "1.5"`)
	return cmd
}

// applyHelloLoad starts the load --hold-memory and --burn-cpu ask for; the
// memory returned must be kept alive while the server runs.
func applyHelloLoad(ctx context.Context, memory, cpu string) ([]byte, error) {
	var held []byte
	if memory != "" {
		n, err := types.ParseBytes(memory)
		if err != nil {
			return nil, fmt.Errorf("--hold-memory: %w", err)
		}
		slog.Info("holding memory", "bytes", int64(n))
		if held, err = hello.HoldMemory(int64(n)); err != nil {
			return nil, fmt.Errorf("--hold-memory: %w", err)
		}
	}
	if cpu != "" {
		m, err := types.ParseCPU(cpu)
		if err != nil {
			return nil, fmt.Errorf("--burn-cpu: %w", err)
		}
		if err := hello.BurnCPU(ctx, int64(m)); err != nil {
			return nil, fmt.Errorf("--burn-cpu: %w", err)
		}
	}
	return held, nil
}
