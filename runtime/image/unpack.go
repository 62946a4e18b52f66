package image

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/runtime/image/layer"
)

// snapshotDone is the marker a finished snapshot carries.
type snapshotDone struct {
	DiffID   v1.Hash     `json:"diffID"`
	Blob     v1.Hash     `json:"blob"`
	Stats    layer.Stats `json:"stats"`
	Unpacked time.Time   `json:"unpacked"`
}

func (s *Store) snapshotDir(diffID v1.Hash) string { return s.path(dirSnapshots, diffID.Hex) }

// snapshotFS is the unpacked tree of a layer, an overlayfs lower directory.
func (s *Store) snapshotFS(diffID v1.Hash) string { return filepath.Join(s.snapshotDir(diffID), "fs") }

func (s *Store) hasSnapshot(diffID v1.Hash) bool {
	_, err := os.Stat(filepath.Join(s.snapshotDir(diffID), fileDone))
	return err == nil
}

// unpack makes sure the snapshot of layer l (uncompressed digest diffID)
// exists, unpacking it once however many callers ask at the same time.
func (s *Store) unpack(ctx context.Context, l v1.Descriptor, diffID v1.Hash, report func(ProgressEvent)) error {
	if s.hasSnapshot(diffID) {
		report(ProgressEvent{Digest: l.Digest, Kind: "layer", State: StateUnpacked, Done: l.Size, Total: l.Size})
		return nil
	}
	for {
		var leader atomic.Bool
		ch := s.unpacks.DoChan(diffID.Hex, func() (any, error) {
			leader.Store(true)
			if s.hasSnapshot(diffID) {
				return nil, nil
			}
			report(ProgressEvent{Digest: l.Digest, Kind: "layer", State: StateUnpacking, Total: l.Size})
			return nil, s.unpackLayer(ctx, l.Digest, diffID)
		})
		select {
		case <-ctx.Done():
			if leader.Load() {
				<-ch // the unpack runs on ctx: let it remove its directory
			}
			return ctx.Err()
		case res := <-ch:
			if res.Err != nil && !leader.Load() && ctx.Err() == nil && (errors.Is(res.Err, context.Canceled) || errors.Is(res.Err, context.DeadlineExceeded)) {
				continue // the pull that unpacked for us was cancelled
			}
			if res.Err != nil {
				return fmt.Errorf("unpack layer %s: %w", l.Digest, res.Err)
			}
		}
		break
	}
	report(ProgressEvent{Digest: l.Digest, Kind: "layer", State: StateUnpacked, Done: l.Size, Total: l.Size})
	return nil
}

// unpackLayer unpacks blob into a temporary directory, checks that its
// uncompressed content hashes to diffID, and renames the directory into
// place with its marker.
func (s *Store) unpackLayer(ctx context.Context, blob, diffID v1.Hash) (err error) {
	tmp, err := os.MkdirTemp(s.path(dirSnapshots), tmpPrefix+diffID.Hex[:12]+"-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	fs := filepath.Join(tmp, "fs")
	if err := os.Mkdir(fs, 0o755); err != nil {
		return err
	}
	rc, _, err := s.openBlob(blob)
	if err != nil {
		return err
	}
	defer rc.Close()
	plain, err := layer.Decompress(rc)
	if err != nil {
		return err
	}
	defer plain.Close()
	h := sha256.New()
	tee := io.TeeReader(plain, h)
	stats, err := layer.Apply(ctx, fs, tee, layer.Options{Mode: layer.Overlay, Limits: s.limits})
	if err != nil {
		return err
	}
	// The tar may end before the stream does (padding): hash all of it,
	// which also lets the blob reader check the blob's own digest.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return err
	}
	if got := sha256Hash(h.Sum(nil)); got != diffID {
		return fmt.Errorf("uncompressed content hashes to %s but the image config says %s (diff_id mismatch): the image is inconsistent; nothing was unpacked", got, diffID)
	}
	done, err := json.Marshal(snapshotDone{DiffID: diffID, Blob: blob, Stats: stats, Unpacked: time.Now().UTC()})
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileSync(filepath.Join(tmp, fileDone), done, 0o444); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.snapshotDir(diffID)); err != nil {
		if errors.Is(err, os.ErrExist) || errors.Is(err, unix.ENOTEMPTY) {
			// Another process finished the same snapshot first.
			os.RemoveAll(tmp)
			return nil
		}
		return err
	}
	return fsutil.SyncDir(s.path(dirSnapshots))
}
