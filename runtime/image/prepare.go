package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/internal/mountinfo"
	"nexus.dev/nexus/internal/proc"
	"nexus.dev/nexus/runtime/image/bundle"
	"nexus.dev/nexus/runtime/image/snapshot"
)

// PrepareOptions are a container's overrides of its image's config.
type PrepareOptions struct {
	// Args, when not empty, replaces the image's Cmd.
	Args []string
	// Entrypoint, when not nil, replaces the image's Entrypoint and drops
	// its Cmd; empty and not nil clears it so that Args alone run.
	Entrypoint []string
	// Env adds to (and overrides names of) the image's environment.
	Env      []string
	Hostname string
	Terminal bool
	// HostNetwork shares the host's network namespace.
	HostNetwork bool
}

// validID is what a container ID may look like: it names a directory.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func (s *Store) containerDir(id string) string { return s.path(dirContainers, id) }

// Prepare makes an OCI bundle for container id from image ref: the image's
// snapshots stacked with overlayfs (or copied, where overlayfs is missing)
// under a fresh writable layer, and a config.json from the image's config
// and o. It returns the bundle directory, which `nexus runtime run -b DIR
// ID` runs. Release undoes it.
func (s *Store) Prepare(ctx context.Context, ref, id string, o PrepareOptions) (bundleDir string, err error) {
	if !validID.MatchString(id) {
		return "", fmt.Errorf("invalid container ID %q: use 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit", id)
	}
	unlock, err := s.lock(ctx, unix.LOCK_SH)
	if err != nil {
		return "", err
	}
	defer unlock()
	img, err := s.Get(ctx, ref)
	if err != nil {
		return "", err
	}
	m, cfg, err := s.load(img.Digest)
	if err != nil {
		return "", fmt.Errorf("prepare %s: %w", img.Name, err)
	}
	rec := containerRecord{Image: img.Name, Digest: img.Digest, Config: m.Config.Digest, DiffIDs: cfg.RootFS.DiffIDs, Created: time.Now().UTC()}
	for _, l := range m.Layers {
		rec.Layers = append(rec.Layers, l.Digest)
	}
	rec.Overlay = snapshot.OverlaySupportedIn(s.path(dirContainers)) == nil
	if rec.Owner, err = proc.Self(); err != nil {
		return "", fmt.Errorf("prepare %s: %w", id, err)
	}

	dir := s.containerDir(id)
	// Claim the ID in the metadata first: that also keeps the layers from
	// a concurrent Prune in another process once we release the lock.
	if err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketContainers)
		if b.Get([]byte(id)) != nil {
			return fmt.Errorf("container %s is already prepared: release it first", id)
		}
		return putJSON(b, id, rec)
	}); err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			_ = s.release(id, rec.Overlay)
		}
	}()

	// A snapshot can be missing if it was damaged and removed: unpack again.
	report := func(ProgressEvent) {}
	for i, l := range m.Layers {
		if err := s.unpack(ctx, l, cfg.RootFS.DiffIDs[i], report); err != nil {
			return "", fmt.Errorf("prepare %s: %w", id, err)
		}
	}
	rootfs := filepath.Join(dir, "rootfs")
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	// The container's own directories are as closed as the store (see
	// storeMode); the root of its file system (rootfs, and upper, whose
	// mode overlayfs shows there) is an ordinary 0755 root directory.
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{dir, storeMode}, {rootfs, 0o755}, {upper, 0o755}, {work, storeMode}} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			return "", fmt.Errorf("prepare %s: %w", id, err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil { // past the umask
			return "", fmt.Errorf("prepare %s: %w", id, err)
		}
	}
	lowers := make([]string, len(cfg.RootFS.DiffIDs))
	for i, d := range cfg.RootFS.DiffIDs {
		lowers[i] = s.snapshotFS(d)
	}
	if rec.Overlay {
		err = snapshot.Mount(ctx, lowers, upper, work, rootfs)
	} else {
		err = snapshot.Copy(ctx, lowers, rootfs)
	}
	if err != nil {
		return "", fmt.Errorf("prepare %s: root filesystem: %w", id, err)
	}
	spec, err := bundle.Spec(bundle.Config{
		Image: cfg.Config, Rootfs: rootfs, Args: o.Args, Entrypoint: o.Entrypoint,
		Env: o.Env, Hostname: o.Hostname, Terminal: o.Terminal, HostNetwork: o.HostNetwork,
	})
	if err != nil {
		return "", fmt.Errorf("prepare %s from %s: %w", id, img.Name, err)
	}
	data, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return "", err
	}
	if err := fsutil.WriteFileSync(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
		return "", fmt.Errorf("prepare %s: %w", id, err)
	}
	return dir, nil
}

// ContainerInUseError reports a Release of a prepared container that a
// process still runs on: its root file system would vanish under it.
type ContainerInUseError struct {
	ID  string
	PID int // a process whose root directory is the container's
}

func (e *ContainerInUseError) Error() string {
	return fmt.Sprintf("prepared container %s is in use: process %d runs on its root file system; stop the container before releasing it", e.ID, e.PID)
}

// Release unmounts and removes a prepared container's bundle; its layers
// become collectable by Prune unless an image still uses them. It refuses
// (*ContainerInUseError) while a process runs on the container's root file
// system.
func (s *Store) Release(ctx context.Context, id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("invalid container ID %q", id)
	}
	var rec containerRecord
	var found bool
	if err := s.view(func(tx *bolt.Tx) error {
		var err error
		found, err = getJSON(tx.Bucket(bucketContainers), id, &rec)
		return err
	}); err != nil {
		return err
	}
	if _, err := os.Stat(s.containerDir(id)); !found && errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no prepared container %s in the image store", id)
	}
	if pid, err := s.rootfsUser(id); err != nil {
		return fmt.Errorf("release %s: %w", id, err)
	} else if pid != 0 {
		return &ContainerInUseError{ID: id, PID: pid}
	}
	return s.release(id, true)
}

// rootfsUser returns a process running on container id's root file system,
// or 0.
func (s *Store) rootfsUser(id string) (int, error) {
	pid, err := proc.RootedAt(filepath.Join(s.containerDir(id), "rootfs"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	return pid, err
}

// releaseAbandoned releases every prepared container whose owner has gone
// and on whose root file system no process runs: what a killed agent
// or agent left. It returns their IDs and adds the space their writable
// layers took to *reclaimed. The caller holds the exclusive lock, so no
// Prepare is under way.
func (s *Store) releaseAbandoned(ctrs map[string]containerRecord, reclaimed *int64) ([]string, error) {
	var released []string
	for id, c := range ctrs {
		if c.Owner.Alive() {
			continue
		}
		if pid, err := s.rootfsUser(id); err != nil || pid != 0 {
			continue // running (or not known): the user stops it first
		}
		dir := s.containerDir(id)
		size := dirSize(filepath.Join(dir, "upper")) + dirSize(filepath.Join(dir, "work"))
		if !c.Overlay {
			size = dirSize(dir)
		}
		if err := s.release(id, true); err != nil {
			return released, err
		}
		*reclaimed += size
		s.log.Debug("released a prepared container whose owner is gone", "container", id, "owner", c.Owner.PID)
		released = append(released, id)
	}
	slices.Sort(released)
	return released, nil
}

func (s *Store) release(id string, mayBeMounted bool) error {
	dir := s.containerDir(id)
	rootfs := filepath.Join(dir, "rootfs")
	if mayBeMounted {
		if err := snapshot.Unmount(rootfs); err != nil {
			return fmt.Errorf("release %s: %w", id, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("release %s: %w", id, err)
	}
	return s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketContainers).Delete([]byte(id))
	})
}

// IsMounted reports whether a prepared container's rootfs is mounted (for
// tests and diagnostics).
func (s *Store) IsMounted(id string) (bool, error) {
	return mountinfo.IsMountPoint(filepath.Join(s.containerDir(id), "rootfs"))
}
