package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

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
		recs, err := imagesIn(tx)
		if err != nil {
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
				return &SeveralNamesError{ID: r.Digest.Hex[:12], Names: same}
			}
			targets = same
		}
		if len(targets) == len(same) && !o.Force {
			ctrs, err := containersIn(tx)
			if err != nil {
				return err
			}
			var users []string
			for id, c := range ctrs {
				if c.Digest == r.Digest {
					users = append(users, id)
				}
			}
			if len(users) > 0 {
				slices.Sort(users)
				return &InUseError{Image: n, Containers: users}
			}
		}
		b := tx.Bucket(bucketImages)
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
	// Released lists the prepared containers released because the process
	// that prepared them is gone and no process runs on them.
	Released []string `json:"released"`
	// Leftovers is what interrupted operations had left, found by this
	// Prune or by Open before it.
	Leftovers Leftovers `json:"leftovers"`
	// Bytes is the disk space reclaimed, Leftovers.Bytes included.
	Bytes int64 `json:"bytes"`
}

// Prune deletes every blob and snapshot that no named image and no
// prepared container uses, and whatever interrupted operations left. It
// first releases the prepared containers whose preparing process is gone
// and on which no process runs (a killed agent, say). It
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
	err = s.cleanup()
	s.leftoversMu.Lock()
	rep.Leftovers, s.leftovers = s.leftovers, Leftovers{}
	s.leftoversMu.Unlock()
	rep.Bytes = rep.Leftovers.Bytes
	if err != nil {
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
	if rep.Released, err = s.releaseAbandoned(ctrs, &rep.Bytes); err != nil {
		return rep, err
	}
	for _, id := range rep.Released {
		delete(ctrs, id)
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
	if rep.Blobs, err = pruneDir(s.path(dirBlobs), blobs, &rep.Bytes); err != nil {
		return rep, err
	}
	rep.Snapshots, err = pruneDir(s.path(dirSnapshots), snaps, &rep.Bytes)
	return rep, err
}

// pruneDir deletes every entry of dir (a blob or a snapshot, named by its
// digest's hex) that keep lacks, adds the bytes they held to *reclaimed and
// returns their digests.
func pruneDir(dir string, keep map[string]bool, reclaimed *int64) ([]v1.Hash, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var pruned []v1.Hash
	for _, e := range entries {
		if keep[e.Name()] {
			continue
		}
		p := filepath.Join(dir, e.Name())
		*reclaimed += dirSize(p)
		if err := os.RemoveAll(p); err != nil {
			return pruned, fmt.Errorf("prune: %w", err)
		}
		pruned = append(pruned, v1.Hash{Algorithm: "sha256", Hex: e.Name()})
	}
	return pruned, nil
}
