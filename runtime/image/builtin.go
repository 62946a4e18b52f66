package image

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"

	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/runtime/image/builtin"
)

// EnsureBuiltin makes sure the built-in image (builtin.Reference, the nexus
// binary exe as a one-layer image) is in the store and made from exe as it
// is now, importing it when it is absent or was made from another binary.
func (s *Store) EnsureBuiltin(ctx context.Context, exe string) (Image, error) {
	source, err := s.builtinSource(exe)
	if err != nil {
		return Image{}, err
	}
	if img, ok, err := s.storedBuiltin(source); err != nil || ok {
		return img, err
	}
	// Containers of the built-in image started at once on a new node all
	// find it missing: one import runs and the others wait for it (each
	// reads and compresses the binary: ten at once took nexus up to
	// 1.1 GB). It runs to its end even if the caller that started it
	// gives up, since others wait for it.
	v, err, _ := s.builtins.Do(source, func() (any, error) {
		if img, ok, err := s.storedBuiltin(source); err != nil || ok {
			return img, err
		}
		img, err := builtin.Image(exe)
		if err != nil {
			return Image{}, err
		}
		return s.importImage(context.WithoutCancel(ctx), builtin.Reference, img, source)
	})
	if err != nil {
		return Image{}, err
	}
	return v.(Image), nil
}

// storedBuiltin returns the built-in image if the store has it made from
// source.
func (s *Store) storedBuiltin(source string) (Image, bool, error) {
	names, err := imageNames([]string{builtin.Reference})
	if err != nil {
		return Image{}, false, err
	}
	var rec imageRecord
	var found bool
	if err := s.view(func(tx *bolt.Tx) error {
		found, err = getJSON(tx.Bucket(bucketImages), names[0], &rec)
		return err
	}); err != nil {
		return Image{}, false, err
	}
	if found && rec.Source == source && s.hasBlob(rec.Digest, -1) {
		return rec.image(names[0]), true, nil
	}
	return Image{}, false, nil
}

// builtinSource identifies the binary a built-in image is made from: the
// SHA-256 of its content. The digest is kept for as long as the file's
// identity (device, inode, size, modification and change times) stays the
// same: EnsureBuiltin runs before every start of a container of the
// built-in image, and hashing the 40 MB nexus binary took 30-35 ms of a
// start of about 90 ms (bench/orchestration). Replacing or writing the
// file changes its identity (a write at least its change time, which no
// one can set), so a new binary is hashed again.
func (s *Store) builtinSource(exe string) (string, error) {
	f, err := os.Open(exe)
	if err != nil {
		return "", fmt.Errorf("built-in image: %w", err)
	}
	defer f.Close()
	id, err := fsutil.IdentityOf(f)
	if err != nil {
		return "", fmt.Errorf("built-in image: %w", err)
	}
	s.builtinMu.Lock()
	known := s.builtinSrc
	s.builtinMu.Unlock()
	if known.exe == exe && known.id == id {
		return known.source, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("built-in image: read %s: %w", exe, err)
	}
	source := "builtin:" + sha256Hash(h.Sum(nil)).String()
	// Kept only if the file did not change while it was read.
	if after, err := fsutil.IdentityOf(f); err == nil && after == id {
		s.builtinMu.Lock()
		s.builtinSrc = builtinSourceCache{exe: exe, id: id, source: source}
		s.builtinMu.Unlock()
	}
	return source, nil
}

// builtinSourceCache is the last digest builtinSource computed.
type builtinSourceCache struct {
	exe    string
	id     fsutil.Identity
	source string
}
