package image

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// RemoveOptions configures Remove.
type RemoveOptions struct {
	// Force removes a name even if a prepared container uses the image, and
	// every name of an image given by ID. The image's content stays until
	// Prune and is kept while a prepared container uses it.
	Force bool
}

// Remove removes an image's name (as docker rmi untags). Given an ID or
// digest, it removes the only name of that image; an image with several
// names needs Force (or one name at a time). It returns the names removed.
// The blobs and snapshots are reclaimed by Prune.
func (s *Store) Remove(ctx context.Context, ref string, o RemoveOptions) ([]string, error) {
	var removed []string
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketImages)
		recs := map[string]imageRecord{}
		if err := b.ForEach(func(k, v []byte) error {
			var r imageRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("image metadata for %s is damaged: %w", k, err)
			}
			recs[string(k)] = r
			return nil
		}); err != nil {
			return err
		}
		n, r, err := resolve(recs, ref)
		if err != nil {
			return err
		}
		var same []string
		for other, or := range recs {
			if or.Digest == r.Digest {
				same = append(same, other)
			}
		}
		slices.Sort(same)
		byName := false
		if parsed, err := ParseReference(ref); err == nil && CanonicalName(parsed) == n {
			byName = true
		}
		targets := []string{n}
		if !byName && len(same) > 1 {
			if !o.Force {
				return fmt.Errorf("image %s has %d names (%s): remove one name at a time, or all with --force", r.Digest.Hex[:12], len(same), strings.Join(same, ", "))
			}
			targets = same
		}
		if len(targets) == len(same) && !o.Force {
			var users []string
			if err := tx.Bucket(bucketContainers).ForEach(func(k, v []byte) error {
				var c containerRecord
				if err := json.Unmarshal(v, &c); err != nil {
					return fmt.Errorf("metadata of prepared container %s is damaged: %w", k, err)
				}
				if c.Digest == r.Digest {
					users = append(users, string(k))
				}
				return nil
			}); err != nil {
				return err
			}
			if len(users) > 0 {
				slices.Sort(users)
				return fmt.Errorf("image %s is used by prepared container(s) %s: release them first, or remove the name anyway with --force", n, strings.Join(users, ", "))
			}
		}
		for _, t := range targets {
			if err := b.Delete([]byte(t)); err != nil {
				return err
			}
		}
		removed = targets
		return nil
	})
	return removed, err
}

// PruneReport says what Prune deleted.
type PruneReport struct {
	Blobs     []v1.Hash `json:"blobs"`
	Snapshots []v1.Hash `json:"snapshots"`
	// Bytes is the disk space reclaimed.
	Bytes int64 `json:"bytes"`
}

// Prune deletes every blob and snapshot that no named image and no
// prepared container uses, and whatever interrupted operations left. It
// waits for running pulls and imports (it takes the store's lock
// exclusively). If a named image's manifest or config cannot be read it
// deletes nothing: a damaged image must be removed first.
func (s *Store) Prune(ctx context.Context) (PruneReport, error) {
	var rep PruneReport
	unlock, err := s.lock(ctx, unix.LOCK_EX)
	if err != nil {
		return rep, err
	}
	defer unlock()
	if err := s.cleanup(); err != nil {
		return rep, err
	}
	recs, err := s.images()
	if err != nil {
		return rep, err
	}
	ctrs, err := s.containers()
	if err != nil {
		return rep, err
	}
	blobs := map[string]bool{}
	snaps := map[string]bool{}
	for n, r := range recs {
		m, cfg, err := s.load(r.Digest)
		if err != nil {
			return rep, fmt.Errorf("prune: image %s: %w (nothing was deleted)", n, err)
		}
		blobs[r.Digest.Hex] = true
		blobs[m.Config.Digest.Hex] = true
		for _, l := range m.Layers {
			blobs[l.Digest.Hex] = true
		}
		for _, d := range cfg.RootFS.DiffIDs {
			snaps[d.Hex] = true
		}
	}
	for _, c := range ctrs {
		blobs[c.Digest.Hex] = true
		blobs[c.Config.Hex] = true
		for _, l := range c.Layers {
			blobs[l.Hex] = true
		}
		for _, d := range c.DiffIDs {
			snaps[d.Hex] = true
		}
	}
	entries, err := os.ReadDir(s.path(dirBlobs))
	if err != nil {
		return rep, err
	}
	for _, e := range entries {
		if blobs[e.Name()] {
			continue
		}
		p := s.path(dirBlobs, e.Name())
		if fi, err := e.Info(); err == nil {
			rep.Bytes += fi.Size()
		}
		if err := os.Remove(p); err != nil {
			return rep, fmt.Errorf("prune: %w", err)
		}
		rep.Blobs = append(rep.Blobs, v1.Hash{Algorithm: "sha256", Hex: e.Name()})
	}
	entries, err = os.ReadDir(s.path(dirSnapshots))
	if err != nil {
		return rep, err
	}
	for _, e := range entries {
		if snaps[e.Name()] {
			continue
		}
		p := s.path(dirSnapshots, e.Name())
		rep.Bytes += dirSize(p)
		if err := os.RemoveAll(p); err != nil {
			return rep, fmt.Errorf("prune: %w", err)
		}
		rep.Snapshots = append(rep.Snapshots, v1.Hash{Algorithm: "sha256", Hex: e.Name()})
	}
	return rep, nil
}
