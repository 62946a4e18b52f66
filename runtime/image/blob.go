package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"nexus.dev/nexus/internal/fsutil"
)

// maxMetaBlob bounds manifests, indexes and configs read into memory.
const maxMetaBlob = 8 << 20

// checkDigest accepts only sha256 digests: the hex becomes a file name.
func checkDigest(h v1.Hash) error {
	if h.Algorithm != "sha256" {
		return fmt.Errorf("digest %q: only sha256 digests are supported", h.String())
	}
	if len(h.Hex) != 64 {
		return fmt.Errorf("digest %q: want 64 hex digits", h.String())
	}
	for _, c := range h.Hex {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("digest %q: not lower-case hex", h.String())
		}
	}
	return nil
}

// parseHash parses a sha256 digest written as sha256:<hex>.
func parseHash(s string) (v1.Hash, error) {
	h, err := v1.NewHash(s)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("digest %q: %v", s, err)
	}
	return h, checkDigest(h)
}

func sha256Hash(sum []byte) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum)}
}

func digestOf(data []byte) v1.Hash {
	sum := sha256.Sum256(data)
	return sha256Hash(sum[:])
}

func (s *Store) blobPath(d v1.Hash) string { return s.path(dirBlobs, d.Hex) }

// hasBlob reports whether blob d is stored (with the given size, unless
// size is negative).
func (s *Store) hasBlob(d v1.Hash, size int64) bool {
	fi, err := os.Stat(s.blobPath(d))
	return err == nil && fi.Mode().IsRegular() && (size < 0 || fi.Size() == size)
}

// ingest streams r into the store. size, when not negative, is the exact
// length r must have; want, when not zero, the digest it must hash to. The
// blob becomes visible (renamed into blobs/) only once both are checked and
// it is on disk; on any error nothing is left behind.
func (s *Store) ingest(ctx context.Context, r io.Reader, size int64, want v1.Hash) (v1.Hash, int64, error) {
	if want != (v1.Hash{}) {
		if err := checkDigest(want); err != nil {
			return v1.Hash{}, 0, err
		}
	}
	tmp, err := os.CreateTemp(s.path(dirIngest), "blob-")
	if err != nil {
		return v1.Hash{}, 0, fmt.Errorf("image store: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	src := r
	if size >= 0 {
		src = io.LimitReader(r, size+1)
	}
	n, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx, src})
	if err != nil {
		return v1.Hash{}, n, err
	}
	got := sha256Hash(h.Sum(nil))
	name := got.String()
	if want != (v1.Hash{}) {
		name = want.String()
	}
	if size >= 0 && n != size {
		return v1.Hash{}, n, fmt.Errorf("blob %s: got %d bytes, want %d: the source sent a truncated or oversized blob; nothing was stored", name, n, size)
	}
	if want != (v1.Hash{}) && got != want {
		return v1.Hash{}, n, fmt.Errorf("blob %s: content hashes to %s (digest mismatch): the source sent corrupt data; nothing was stored", want, got)
	}
	if err := tmp.Chmod(0o444); err != nil {
		return v1.Hash{}, n, err
	}
	if err := tmp.Sync(); err != nil {
		return v1.Hash{}, n, fmt.Errorf("blob %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return v1.Hash{}, n, fmt.Errorf("blob %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), s.blobPath(got)); err != nil {
		return v1.Hash{}, n, fmt.Errorf("blob %s: %w", name, err)
	}
	committed = true
	if err := fsutil.SyncDir(s.path(dirBlobs)); err != nil {
		return v1.Hash{}, n, fmt.Errorf("blob %s: %w", name, err)
	}
	return got, n, nil
}

// ingestBytes stores a small blob held in memory.
func (s *Store) ingestBytes(ctx context.Context, data []byte) (v1.Hash, error) {
	d := digestOf(data)
	if s.hasBlob(d, int64(len(data))) {
		return d, nil
	}
	_, _, err := s.ingest(ctx, bytes.NewReader(data), int64(len(data)), d)
	return d, err
}

// CorruptBlobError reports a stored blob whose content no longer matches
// its digest.
type CorruptBlobError struct {
	Digest v1.Hash
	Got    v1.Hash
}

func (e *CorruptBlobError) Error() string {
	return fmt.Sprintf("blob %s is corrupt on disk (its content hashes to %s): remove the images that use it, prune the store and pull them again", e.Digest, e.Got)
}

// openBlob opens blob d for reading. The reader hashes what it returns and
// fails with a *CorruptBlobError instead of io.EOF when the content does
// not match d, so a caller that reads to the end never uses damaged data.
func (s *Store) openBlob(d v1.Hash) (io.ReadCloser, int64, error) {
	if err := checkDigest(d); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(s.blobPath(d))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, 0, fmt.Errorf("blob %s is missing from the image store: pull or import the image again", d)
		}
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return &verifyingReader{f: f, h: sha256.New(), want: d}, fi.Size(), nil
}

type verifyingReader struct {
	f    *os.File
	h    hash.Hash
	want v1.Hash
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.f.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF {
		if got := sha256Hash(v.h.Sum(nil)); got != v.want {
			return n, &CorruptBlobError{Digest: v.want, Got: got}
		}
	}
	return n, err
}

func (v *verifyingReader) Close() error { return v.f.Close() }

// readBlob reads a small stored blob (manifest, config) and verifies it.
func (s *Store) readBlob(d v1.Hash) ([]byte, error) {
	rc, size, err := s.openBlob(d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > maxMetaBlob {
		return nil, fmt.Errorf("blob %s is %d bytes, more than a manifest or config may be", d, size)
	}
	return io.ReadAll(rc)
}

// verifyBlob reads blob d to the end to check its digest.
func (s *Store) verifyBlob(ctx context.Context, d v1.Hash) error {
	rc, _, err := s.openBlob(d)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, ctxReader{ctx, rc})
	return err
}

// ctxReader stops reading once ctx is done, so a copy from a slow source
// or a large local file can be cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// dirSize is the disk space the regular files under dir (or dir itself, a
// file) take: allocated blocks, so a sparse file counts what it holds, not
// its apparent size.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					n += st.Blocks * 512
				} else {
					n += fi.Size()
				}
			}
		}
		return nil
	})
	return n
}
