package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// haproxyPort is where haproxy listens, on loopback of the bench's network
// namespace.
const haproxyPort = 18080

// haproxy is the user-space reference: haproxy in TCP mode, balancing
// each new connection round-robin over the instances' addresses.
type haproxy struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	addr    string
	version string
}

// haproxyConfig is haproxy's configuration for backends (host:port). It
// keeps haproxy's defaults where they fit the bench (one thread per CPU,
// as the Debian package ships it); the connection limit is far above what
// the bench opens at once (a few connections per worker; higher needs a
// higher open-file limit than some machines allow), and the timeouts
// are long enough for a bulk answer.
func haproxyConfig(listen string, backends []string) string {
	var b strings.Builder
	b.WriteString(`global
	maxconn 4096
defaults
	mode tcp
	timeout connect 5s
	timeout client 1m
	timeout server 1m
frontend bench
	bind ` + listen + `
	default_backend instances
backend instances
	balance roundrobin
`)
	for i, be := range backends {
		fmt.Fprintf(&b, "\tserver s%d %s\n", i, be)
	}
	return b.String()
}

// startHAProxy writes the configuration into o.dir, starts haproxy in the
// foreground and waits until it answers through to an instance.
func startHAProxy(ctx context.Context, o options, backends []string) (*haproxy, error) {
	host := "127.0.0.1"
	if o.family == 6 {
		host = "::1"
	}
	h := &haproxy{addr: net.JoinHostPort(host, strconv.Itoa(haproxyPort)), exited: make(chan struct{})}
	out, err := exec.CommandContext(ctx, o.haproxy, "-v").Output()
	if err != nil {
		return nil, fmt.Errorf("%s -v: %w", o.haproxy, err)
	}
	h.version, _, _ = strings.Cut(string(bytes.TrimSpace(out)), "\n")
	h.version = strings.TrimSpace(strings.Split(h.version, " - ")[0])
	conf := filepath.Join(o.dir, "haproxy.cfg")
	if err := os.WriteFile(conf, []byte(haproxyConfig(h.addr, backends)), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(o.dir, "haproxy.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// -db: stay in the foreground, so that this program owns it.
	h.cmd = exec.Command(o.haproxy, "-db", "-f", conf)
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := h.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.haproxy, err)
	}
	_ = os.WriteFile(filepath.Join(o.dir, "haproxy.pid"), []byte(strconv.Itoa(h.cmd.Process.Pid)), 0o600)
	go func() { _ = h.cmd.Wait(); close(h.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := whoAnswers(ctx, h.addr)
		if err == nil {
			return h, nil
		}
		select {
		case <-h.exited:
			log, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("haproxy exited at start: %s", bytes.TrimSpace(log))
		case <-ctx.Done():
			h.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			h.stop()
			return nil, fmt.Errorf("haproxy on %s does not answer within 30 s (last: %v; its log: %s)", h.addr, err, logf.Name())
		}
	}
}

// stop ends haproxy (SIGTERM, SIGKILL after 10 s).
func (h *haproxy) stop() {
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(10 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.exited
	}
}
