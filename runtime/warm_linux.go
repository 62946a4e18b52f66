package runtime

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/runtime/cgroups"
	"nexus.dev/nexus/runtime/initstage"
)

// The warm path. Most of a cold Create is spent before the init has its
// config: cgroups are created in every hierarchy, the binary is forked in new
// namespaces and moved into the cgroups (a write to cgroup.procs can wait for
// an RCU grace period). Prewarm does all of that ahead of time for the usual
// namespace set; CreateWarm then only renames the slot's state directory,
// applies the container's limits and hands the init its config and stdio.
//
// A slot's container id is chosen when the slot is made (cgroup v2 cannot
// rename a cgroup), which suits the agent: it names containers itself.

// warmDir holds the slots under the state root.
const warmDir = ".warm"

// warmFlags is the namespace set a warm init is forked with: what
// spec.Default (and Docker, Kubernetes) give every container. cgroup and time
// namespaces are unshared by the init later, so they may differ.
const warmFlags = unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWNS

type warmSlot struct {
	id, dir string
	cg      cgroups.Manager
	init    *initHandle
}

// Prewarm makes sure n warm slots are ready. Slots live until CreateWarm
// takes them or Close; their inits die with this process.
func (r *Runtime) Prewarm(ctx context.Context, n int) error {
	for {
		r.mu.Lock()
		have := len(r.warm)
		r.mu.Unlock()
		if have >= n {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		slot, err := r.newWarmSlot()
		if err != nil {
			return fmt.Errorf("prewarm: %w", err)
		}
		r.mu.Lock()
		r.warm = append(r.warm, slot)
		r.mu.Unlock()
	}
}

func (r *Runtime) newWarmSlot() (_ *warmSlot, err error) {
	// 48 random bits keep ids apart; math/rand/v2's generator is seeded
	// from the kernel per process. crypto/rand would link 15 more packages
	// (math/big, the FIPS DRBG, AES-GCM) into every nexus-runtime process.
	id := fmt.Sprintf("w%012x", rand.Uint64()>>16)
	dir := filepath.Join(r.root, warmDir, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	slot := &warmSlot{id: id, dir: dir}
	defer func() {
		if err != nil {
			slot.destroy()
		}
	}()
	if slot.cg, err = cgroups.New(cgroups.Config{Path: id}); err != nil {
		return nil, err
	}
	if err := slot.cg.Create(); err != nil {
		return nil, err
	}
	ln, err := listenStart(dir)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer null.Close()
	if slot.init, err = r.forkInit(id, [3]*os.File{null, null, null}, 0, ln, nil, nsPlan{cloneFlags: warmFlags}, nil, true, nil); err != nil {
		return nil, err
	}
	if err := slot.cg.Add(slot.init.pid()); err != nil {
		return nil, err
	}
	// The slot is ready once the init has started and warmed up.
	if err := readMessage(context.Background(), slot.init.sock, initstage.MsgIdle); err != nil {
		return nil, fmt.Errorf("warm init: %w", err)
	}
	return slot, nil
}

func (s *warmSlot) destroy() {
	if s.init != nil {
		s.init.kill()
	}
	if s.cg != nil {
		_ = s.cg.Destroy()
	}
	os.RemoveAll(s.dir)
}

// ErrNoWarmSlot is returned by CreateWarm when the bundle cannot use a warm
// slot or none is ready; Create works for it.
var ErrNoWarmSlot = errors.New("no warm slot fits")

// CreateWarm creates a container from a bundle in a slot made by Prewarm
// and returns the container's id. The spec must create exactly the pid,
// network, ipc, uts and mount namespaces (cgroup and time may be added),
// leave linux.cgroupsPath empty, and the options must not ask for a console
// or preserved descriptors; otherwise, or when no slot is ready, it returns
// ErrNoWarmSlot without side effects.
func (r *Runtime) CreateWarm(ctx context.Context, opts CreateOptions) (id string, err error) {
	t0 := time.Now()
	step := func(name string) { r.log.Debug("warm create step", "id", id, "step", name, "at", time.Since(t0)) }
	b, err := r.loadBundle(opts.Bundle, true)
	step("spec loaded")
	if err != nil {
		return "", err
	}
	plan := planNamespaces(b.spec)
	if plan.cloneFlags != warmFlags || plan.joinPid != "" || len(plan.join) > 0 ||
		b.spec.Linux.CgroupsPath != "" || opts.ConsoleSocket != "" || opts.PreserveFDs > 0 || b.spec.Process == nil || b.spec.Process.Terminal {
		return "", ErrNoWarmSlot
	}
	r.mu.Lock()
	if len(r.warm) == 0 {
		r.mu.Unlock()
		return "", ErrNoWarmSlot
	}
	slot := r.warm[len(r.warm)-1]
	r.warm = r.warm[:len(r.warm)-1]
	r.mu.Unlock()

	id = slot.id
	r.warnCapabilities(id, b.spec.Process)
	dir := containerDir(r.root, id)
	if err := os.Rename(slot.dir, dir); err != nil {
		slot.destroy()
		return "", fmt.Errorf("claim warm slot %s: %w", id, err)
	}
	limits, late := splitLate(withDefaultDevices(b.spec.Linux.Resources))
	c := &creation{r: r, id: id, dir: dir, b: b, cg: slot.cg, late: late, init: slot.init, pidFile: opts.PidFile}
	c.onUndo(func() { _ = slot.cg.Destroy() })
	defer func() {
		if err != nil {
			c.undo()
		}
	}()
	release, err := lockContainer(dir)
	if err != nil {
		return "", err
	}
	defer release()
	if limits != nil {
		if err := slot.cg.Update(limits); err != nil {
			return "", fmt.Errorf("apply limits to %s: %w", id, err)
		}
	}
	step("limits applied")
	cfg := b.initConfig(id, plan, slot.cg)
	cfg.NoPivot, cfg.StartFD = opts.NoPivot, slot.init.startFD
	stdio := []*os.File{stdio(opts.Stdin, os.Stdin), stdio(opts.Stdout, os.Stdout), stdio(opts.Stderr, os.Stderr)}
	if err := c.finish(ctx, cfg, stdio); err != nil {
		return "", err
	}
	step("init ready")
	return id, nil
}

// Close releases what this Runtime holds: warm slots are destroyed.
// Containers are not affected.
func (r *Runtime) Close() error {
	r.mu.Lock()
	slots := r.warm
	r.warm = nil
	r.mu.Unlock()
	for _, s := range slots {
		s.destroy()
	}
	return nil
}
