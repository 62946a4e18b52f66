package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/netnsutil"
	"nexus.dev/nexus/runtime"
)

// prober runs an Instance's health checks. HTTP and TCP checks connect to
// 127.0.0.1 from inside the container's network namespace, so they work
// whatever the node's networking and need no route to the container; a
// program listening on all addresses (as servers do) answers there. Exec
// checks run a process in the container as the runtime's exec does.
type prober struct {
	a   *Agent
	id  string
	pid int
}

// Defaults of a probe's timing, as Kubernetes'.
const (
	probePeriod    = 10 * time.Second
	probeTimeout   = time.Second
	probeFailures  = 3
	probeSuccesses = 1
)

// run checks p every period until ctx ends and calls report whenever the
// verdict changes (the first verdict included): true after
// successThreshold passes in a row, false after failureThreshold
// failures in a row, with the last failure's error.
func (pr *prober) run(ctx context.Context, p *types.Probe, report func(ok bool, err error)) {
	period := secondsOr(p.PeriodSeconds, probePeriod)
	timeout := secondsOr(p.TimeoutSeconds, probeTimeout)
	failures := int(p.FailureThreshold)
	if failures <= 0 {
		failures = probeFailures
	}
	successes := int(p.SuccessThreshold)
	if successes <= 0 {
		successes = probeSuccesses
	}
	if !sleep(ctx, time.Duration(p.InitialDelaySeconds)*time.Second) {
		return
	}
	var verdict *bool
	passed, failed := 0, 0
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := pr.check(cctx, p)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			passed, failed = passed+1, 0
		} else {
			passed, failed = 0, failed+1
			pr.a.log.Debug("probe failed", "container", pr.id, "err", err)
		}
		switch {
		case passed >= successes && (verdict == nil || !*verdict):
			v := true
			verdict = &v
			report(true, nil)
		case failed >= failures && (verdict == nil || *verdict):
			v := false
			verdict = &v
			report(false, err)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func secondsOr(s int32, d time.Duration) time.Duration {
	if s > 0 {
		return time.Duration(s) * time.Second
	}
	return d
}

// check runs p once.
func (pr *prober) check(ctx context.Context, p *types.Probe) error {
	netns := netnsutil.ProcPath(pr.pid)
	switch {
	case p.HTTP != nil:
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p.HTTP.Port)))
		hc := &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return netnsutil.Dial(ctx, netns, network, addr)
			},
			DisableKeepAlives: true,
		}}
		path := p.HTTP.Path
		if path == "" {
			path = "/"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "nexus-probe")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return nil
	case p.TCP != nil:
		c, err := netnsutil.Dial(ctx, netns, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p.TCP.Port))))
		if err != nil {
			return err
		}
		return c.Close()
	case p.Exec != nil:
		return pr.exec(ctx, p.Exec.Command)
	}
	return errors.New("the probe has no check")
}

// exec runs cmd in the container with the container's process settings.
func (pr *prober) exec(ctx context.Context, cmd []string) error {
	rt := pr.a.cfg.Runtime
	s, err := rt.Spec(pr.id)
	if err != nil {
		return err
	}
	if s.Process == nil {
		return errors.New("the container has no process settings")
	}
	proc := *s.Process
	proc.Args, proc.Terminal, proc.ConsoleSize = cmd, false, nil
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer null.Close()
	p, err := rt.Exec(ctx, pr.id, &proc, runtime.ExecOptions{Stdin: null, Stdout: null, Stderr: null})
	if err != nil {
		return err
	}
	es, err := p.Wait(ctx)
	if err != nil {
		_ = unix.Kill(p.Pid, unix.SIGKILL)
		_, _ = p.Wait(context.Background())
		return fmt.Errorf("%v: timed out", cmd)
	}
	if es.Code != 0 {
		return fmt.Errorf("%v: %s", cmd, es)
	}
	return nil
}
