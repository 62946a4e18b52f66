package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/internal/humanize"
	"nexus.dev/nexus/runtime"
	"nexus.dev/nexus/runtime/image"
	"nexus.dev/nexus/runtime/image/builtin"
)

// container is the runtime side of one Instance: its bundle, its
// container and its log (logs.go).
type container struct {
	a      *Agent
	id     string
	dir    string // <agent dir>/instances/<uid>
	bundle string
	output atomic.Pointer[containerLog] // set by startLog
}

// StepError is a failed step of an Instance's lifecycle: Reason is the
// word the Instance's status shows (ImagePullFailed, CreateFailed, …).
type StepError struct {
	Reason string
	Err    error
}

func (e *StepError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

func stepError(reason string, err error) error {
	if err == nil {
		return nil
	}
	return &StepError{Reason: reason, Err: err}
}

// prepare resolves the image and the environment and makes the bundle.
func (c *container) prepare(ctx context.Context, inst *types.Instance, progress func(string)) error {
	t := &inst.Spec.Template
	ref := t.Image
	if err := c.ensureImage(ctx, ref, progress); err != nil {
		return stepError("ImagePullFailed", err)
	}
	env, err := c.environment(ctx, inst)
	if err != nil {
		return stepError("ConfigError", err)
	}
	// A bundle left by an agent that stopped part-way is made again.
	if err := c.a.cfg.Images.Release(ctx, c.id); err == nil {
		c.a.log.Debug("released a bundle left from before", "container", c.id)
	}
	o := image.PrepareOptions{Args: t.Args, Env: env, Hostname: inst.Name}
	if len(t.Command) > 0 {
		o.Entrypoint = t.Command
	}
	progress("preparing the root file system")
	bundle, err := c.a.cfg.Images.Prepare(ctx, ref, c.id, o)
	if err != nil {
		return stepError("CreateFailed", err)
	}
	c.bundle = bundle
	if err := c.editSpec(inst); err != nil {
		return stepError("CreateFailed", err)
	}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return stepError("CreateFailed", err)
	}
	return nil
}

// ensureImage makes sure ref is in the image store: the built-in image is
// made from this binary, others are pulled when missing.
func (c *container) ensureImage(ctx context.Context, ref string, progress func(string)) error {
	imgs := c.a.cfg.Images
	if isBuiltin(ref) {
		_, err := imgs.EnsureBuiltin(ctx, c.a.cfg.BuiltinExe)
		return err
	}
	if _, err := imgs.Get(ctx, ref); err == nil {
		return nil
	} else if !errors.Is(err, image.ErrNotFound) {
		return err
	}
	progress("pulling " + ref)
	o := c.a.cfg.Pull
	var last time.Time
	o.Progress = func(ev image.ProgressEvent) {
		if now := time.Now(); now.Sub(last) >= 500*time.Millisecond {
			last = now
			progress(fmt.Sprintf("pulling %s: %s %s %s/%s", ref, ev.Kind, ev.State, humanize.Bytes(ev.Done), humanize.Bytes(ev.Total)))
		}
	}
	_, err := imgs.Pull(ctx, ref, o)
	return err
}

// environment resolves the template's variables, reading the Secrets
// they name.
func (c *container) environment(ctx context.Context, inst *types.Instance) ([]string, error) {
	secrets, _ := types.LookupResource("secrets")
	cache := map[string]*types.Secret{}
	var env []string
	for _, e := range inst.Spec.Template.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			env = append(env, e.Name+"="+e.Value)
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		s, ok := cache[ref.Name]
		if !ok {
			o, err := c.a.cfg.Client.Get(ctx, secrets, inst.Namespace, ref.Name)
			switch {
			case err == nil:
				s = o.(*types.Secret)
			case client.IsNotFound(err):
			default:
				return nil, fmt.Errorf("env %s: read secret %s/%s: %w", e.Name, inst.Namespace, ref.Name, err)
			}
			cache[ref.Name] = s
		}
		switch {
		case s == nil && ref.Optional:
		case s == nil:
			return nil, fmt.Errorf("env %s: secret %s/%s does not exist: create it, or mark the reference optional", e.Name, inst.Namespace, ref.Name)
		default:
			v, ok := s.Data[ref.Key]
			if !ok && !ref.Optional {
				return nil, fmt.Errorf("env %s: secret %s/%s has no key %q", e.Name, inst.Namespace, ref.Name, ref.Key)
			}
			if ok {
				env = append(env, e.Name+"="+string(v))
			}
		}
	}
	return env, nil
}

// editSpec adds to the bundle's config.json what the image store does not
// know: the Instance it belongs to, its working directory and its limits.
func (c *container) editSpec(inst *types.Instance) error {
	path := filepath.Join(c.bundle, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[annotationInstance] = inst.Namespace + "/" + inst.Name
	s.Annotations[annotationUID] = inst.UID
	t := &inst.Spec.Template
	if t.WorkingDir != "" && s.Process != nil {
		s.Process.Cwd = t.WorkingDir
	}
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	if s.Linux.Resources == nil {
		s.Linux.Resources = &specs.LinuxResources{}
	}
	res := s.Linux.Resources
	lim := t.Resources.Limits
	if lim.Memory > 0 {
		m := int64(lim.Memory)
		res.Memory = &specs.LinuxMemory{Limit: &m}
	}
	if lim.CPU > 0 {
		period := uint64(100_000)
		quota := int64(lim.CPU) * int64(period) / 1000
		res.CPU = &specs.LinuxCPU{Period: &period, Quota: &quota}
	}
	if req := t.Resources.Requests.CPU; req > 0 {
		// cgroup v1 shares: 1024 per CPU, as Kubernetes maps requests.
		shares := max(uint64(req)*1024/1000, 2)
		if res.CPU == nil {
			res.CPU = &specs.LinuxCPU{}
		}
		res.CPU.Shares = &shares
	}
	s.Linux.CgroupsPath = "nexus/" + c.id
	if err := c.resolvConf(&s, inst.Namespace); err != nil {
		return err
	}
	out, err := json.Marshal(&s)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := fsutil.WriteFileSync(tmp, out, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// resolvConf gives the container the cluster DNS as its resolver, when
// the node serves one: a resolv.conf in the instance's directory, bind
// mounted read-only over the image's /etc/resolv.conf.
func (c *container) resolvConf(s *specs.Spec, namespace string) error {
	sn, ok := c.a.net.(ServiceNetwork)
	if !ok {
		return nil
	}
	rc := sn.ResolvConf(namespace)
	if rc == nil {
		return nil
	}
	path := filepath.Join(c.dir, "resolv.conf")
	if err := fsutil.WriteFileSync(path, rc, 0o644); err != nil {
		return fmt.Errorf("write the container's resolv.conf: %w", err)
	}
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: path,
		Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}})
	return nil
}

// create makes the container (its init waits for start) with its output
// going to its log, and returns the init's pid.
func (c *container) create(ctx context.Context) (int, error) {
	stdout, stderr, err := c.stdio()
	if err != nil {
		return 0, stepError("CreateFailed", err)
	}
	defer stdout.Close()
	defer stderr.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		return 0, stepError("CreateFailed", err)
	}
	defer null.Close()
	rt := c.a.cfg.Runtime
	// A container left from an earlier run of this instance goes first.
	if err := rt.Delete(ctx, c.id, true); err != nil {
		return 0, stepError("CreateFailed", err)
	}
	if err := rt.Create(ctx, c.id, runtime.CreateOptions{Bundle: c.bundle, Stdin: null, Stdout: stdout, Stderr: stderr}); err != nil {
		return 0, stepError("CreateFailed", err)
	}
	st, err := rt.State(c.id)
	if err != nil {
		return 0, stepError("CreateFailed", err)
	}
	return st.Pid, nil
}

// stop asks the container to stop (SIGTERM to every process), and kills
// what is left after grace.
func (c *container) stop(ctx context.Context, grace time.Duration) error {
	rt := c.a.cfg.Runtime
	st, err := rt.State(c.id)
	if errors.Is(err, runtime.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if st.Status != specs.StateRunning && st.Status != specs.StateCreated {
		return nil
	}
	if err := rt.Kill(c.id, syscall.SIGTERM, true); err != nil && !c.exited() {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	if _, err := rt.Wait(wctx, c.id); err == nil {
		return nil
	}
	if err := rt.Kill(c.id, syscall.SIGKILL, true); err != nil && !c.exited() {
		return err
	}
	wctx2, cancel2 := context.WithTimeout(ctx, 10*time.Second)
	defer cancel2()
	_, err = rt.Wait(wctx2, c.id)
	return err
}

func (c *container) exited() bool {
	st, err := c.a.cfg.Runtime.State(c.id)
	return err != nil || st.Status == specs.StateStopped
}

// deleteContainer removes the container and its network attachment, and
// keeps the bundle (a restart reuses its writable layer, as docker
// restart does).
func (c *container) deleteContainer(ctx context.Context) error {
	var errs []error
	if n := c.a.net; n != nil {
		errs = append(errs, n.Detach(ctx, c.id))
	}
	errs = append(errs, c.a.cfg.Runtime.Delete(ctx, c.id, true))
	return errors.Join(errs...)
}

// remove deletes the container and releases its bundle.
func (c *container) remove(ctx context.Context) error {
	err := c.deleteContainer(ctx)
	if rerr := c.a.cfg.Images.Release(ctx, c.id); rerr != nil {
		if mounted, merr := c.a.cfg.Images.IsMounted(c.id); merr == nil && mounted {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// isBuiltin says whether ref names the built-in image, however written
// (nexus.local/hello, nexus.local/hello:latest).
func isBuiltin(ref string) bool {
	r, err := image.ParseReference(ref)
	return err == nil && image.CanonicalName(r) == builtin.Reference
}
