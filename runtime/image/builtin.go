package image

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"

	"nexus.dev/nexus/runtime/image/builtin"
)

// EnsureBuiltin makes sure the built-in image (builtin.Reference, the nexus
// binary exe as a one-layer image) is in the store and made from exe as it
// is now, importing it when it is absent or was made from another binary.
func (s *Store) EnsureBuiltin(ctx context.Context, exe string) (Image, error) {
	source, err := builtinSource(exe)
	if err != nil {
		return Image{}, err
	}
	names, err := imageNames([]string{builtin.Reference})
	if err != nil {
		return Image{}, err
	}
	var rec imageRecord
	var found bool
	if err := s.view(func(tx *bolt.Tx) error {
		found, err = getJSON(tx.Bucket(bucketImages), names[0], &rec)
		return err
	}); err != nil {
		return Image{}, err
	}
	if found && rec.Source == source && s.hasBlob(rec.Digest, -1) {
		return rec.image(names[0]), nil
	}
	img, err := builtin.Image(exe)
	if err != nil {
		return Image{}, err
	}
	return s.importImage(ctx, builtin.Reference, img, source)
}

// builtinSource identifies the binary a built-in image is made from.
func builtinSource(exe string) (string, error) {
	f, err := os.Open(exe)
	if err != nil {
		return "", fmt.Errorf("built-in image: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("built-in image: read %s: %w", exe, err)
	}
	return "builtin:" + sha256Hash(h.Sum(nil)).String(), nil
}
