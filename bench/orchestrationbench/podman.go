package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"nexus.dev/nexus/runtime/image/builtin"
)

// podman runs the reference: `podman run -d` of the built-in image with
// crun, its storage, state and network configuration in the bench's
// directory so that it touches nothing of the host's.
type podman struct {
	bin     string
	mntns   string
	globals []string
	image   string

	version, runtimeVersion string
	nsenterCost             float64 // ms per exec through nsenter
}

// podmanSample is one podman start, in times from just before the command
// was started.
type podmanSample struct {
	t0, returned, serving time.Time
}

func newPodman(ctx context.Context, o options, dir string) (*podman, error) {
	root := filepath.Join(dir, "podman")
	p := &podman{bin: o.podman, mntns: o.podmanMntNS, image: builtin.Reference, globals: []string{
		"--root", filepath.Join(root, "storage"), "--runroot", filepath.Join(root, "run"),
		"--tmpdir", filepath.Join(root, "tmp"), "--network-config-dir", filepath.Join(root, "networks"),
		"--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
		"--runtime", "crun",
	}}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	// The same image as nexus runs: builtin.Image of the same binary (its
	// layer is identical; only the version label in its config may differ).
	img, err := builtin.Image(o.nexus)
	if err != nil {
		return nil, err
	}
	tag, err := name.NewTag(builtin.Reference)
	if err != nil {
		return nil, err
	}
	archive := filepath.Join(root, "hello.tar")
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		return nil, fmt.Errorf("write the built-in image as a docker archive: %w", err)
	}
	if _, err := p.output(ctx, "load", "-q", "-i", archive); err != nil {
		return nil, err
	}
	if p.version, err = p.output(ctx, "version", "--format", "podman {{.Client.Version}}"); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "crun", "--version").Output(); err == nil {
		p.runtimeVersion, _, _ = strings.Cut(string(out), "\n")
	}
	if p.mntns != "" {
		var ms []float64
		for range 20 {
			t0 := time.Now()
			if err := exec.CommandContext(ctx, "nsenter", "--mount="+p.mntns, "--", "true").Run(); err != nil {
				return nil, fmt.Errorf("nsenter --mount=%s: %w", p.mntns, err)
			}
			ms = append(ms, float64(time.Since(t0).Microseconds())/1000)
		}
		slices.Sort(ms)
		p.nsenterCost = ms[len(ms)/2]
	}
	return p, nil
}

func (p *podman) command(ctx context.Context, args ...string) *exec.Cmd {
	argv := append(append([]string{p.bin}, p.globals...), args...)
	if p.mntns != "" {
		argv = append([]string{"nsenter", "--mount=" + p.mntns, "--"}, argv...)
	}
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

func (p *podman) output(ctx context.Context, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := p.command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// startOne runs `podman run -d` of the image with address ip and waits
// until the container answers HTTP. The limits are nexus's defaults:
// podman would raise RLIMIT_NOFILE and RLIMIT_NPROC above what this
// machine lets root have, and crun would refuse to start.
func (p *podman) startOne(ctx context.Context, name, ip string) (podmanSample, error) {
	var s podmanSample
	cmd := p.command(ctx, "run", "-d", "--pull", "never", "--name", name, "--ip", ip,
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=32768:32768", p.image)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	s.t0 = time.Now()
	err := cmd.Run()
	s.returned = time.Now()
	if err != nil {
		return s, fmt.Errorf("podman run %s: %w: %s", name, err, strings.TrimSpace(errb.String()))
	}
	if s.serving, err = waitServing(ctx, net.JoinHostPort(ip, strconv.Itoa(builtin.Port)), 30*time.Second); err != nil {
		return s, fmt.Errorf("podman container %s: %w", name, err)
	}
	return s, nil
}

// removeAll removes every container at once, without a grace period.
func (p *podman) removeAll(ctx context.Context) {
	if _, err := p.output(ctx, "rm", "--all", "--force", "--time", "0"); err != nil {
		fmt.Fprintln(os.Stderr, "warning:", err)
	}
}
