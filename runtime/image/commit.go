package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// ProgressState is where one blob of a pull or import is.
type ProgressState string

const (
	// StateWaiting: queued, or waiting for another pull fetching the same blob.
	StateWaiting ProgressState = "waiting"
	// StateDownloading: bytes are arriving (Done counts them).
	StateDownloading ProgressState = "downloading"
	// StateExists: the blob was already in the store.
	StateExists ProgressState = "exists"
	// StateDone: the blob is stored and verified.
	StateDone ProgressState = "done"
	// StateUnpacking: the layer is being unpacked into its snapshot.
	StateUnpacking ProgressState = "unpacking"
	// StateUnpacked: the layer's snapshot is ready.
	StateUnpacked ProgressState = "unpacked"
)

// ProgressEvent reports the progress of one blob.
type ProgressEvent struct {
	Digest v1.Hash
	// Kind is "config" or "layer".
	Kind  string
	State ProgressState
	// Done and Total are bytes; Total is the size the manifest gives.
	Done, Total int64
}

// progressFunc serialises calls to a user's callback, which then need not
// be safe for concurrent use, and makes a nil callback a no-op.
func progressFunc(f func(ProgressEvent)) func(ProgressEvent) {
	if f == nil {
		return func(ProgressEvent) {}
	}
	var mu sync.Mutex
	return func(e ProgressEvent) {
		mu.Lock()
		defer mu.Unlock()
		f(e)
	}
}

// fetchFunc opens a blob of the image being stored at its source.
type fetchFunc func(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error)

// stored is an image whose blobs and snapshots are all in the store.
type stored struct {
	digest   v1.Hash
	manifest *v1.Manifest
	config   *v1.ConfigFile
	size     int64
}

// storeImage stores the image whose manifest is raw: config and layers
// from fetch (skipping those already stored), then the manifest, then every
// layer's snapshot. The caller holds the shared lock and names the image
// afterwards.
func (s *Store) storeImage(ctx context.Context, raw []byte, fetch fetchFunc, report func(ProgressEvent)) (*stored, error) {
	m, err := parseManifest(raw)
	if err != nil {
		return nil, err
	}
	if err := s.fetchBlob(ctx, m.Config, "config", fetch, report); err != nil {
		return nil, err
	}
	cfgRaw, err := s.readBlob(m.Config.Digest)
	if err != nil {
		return nil, err
	}
	cfg, err := parseConfig(cfgRaw, m)
	if err != nil {
		return nil, err
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.jobs)
	seen := map[v1.Hash]bool{}
	size := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		if seen[l.Digest] {
			continue
		}
		seen[l.Digest] = true
		size += l.Size
		report(ProgressEvent{Digest: l.Digest, Kind: "layer", State: StateWaiting, Total: l.Size})
		g.Go(func() error { return s.fetchBlob(gctx, l, "layer", fetch, report) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	digest, err := s.ingestBytes(ctx, raw)
	if err != nil {
		return nil, err
	}

	// Unpacking is CPU-bound: two at a time is enough to overlap I/O.
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(2)
	for i, l := range m.Layers {
		diffID := cfg.RootFS.DiffIDs[i]
		g.Go(func() error { return s.unpack(gctx, l, diffID, report) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return &stored{digest: digest, manifest: m, config: cfg, size: size}, nil
}

// fetchBlob makes sure blob d is stored, fetching it once however many
// pulls ask for it at the same time.
func (s *Store) fetchBlob(ctx context.Context, d v1.Descriptor, kind string, fetch fetchFunc, report func(ProgressEvent)) error {
	for {
		if s.hasBlob(d.Digest, d.Size) {
			report(ProgressEvent{Digest: d.Digest, Kind: kind, State: StateExists, Done: d.Size, Total: d.Size})
			return nil
		}
		var leader atomic.Bool
		ch := s.blobs.DoChan(d.Digest.String(), func() (any, error) {
			leader.Store(true)
			unlock, err := s.lockBlob(ctx, d.Digest)
			if err != nil {
				return nil, err
			}
			defer unlock()
			if s.hasBlob(d.Digest, d.Size) {
				return nil, nil // another process stored it meanwhile
			}
			return nil, s.download(ctx, d, kind, fetch, report)
		})
		select {
		case <-ctx.Done():
			if leader.Load() {
				// The download runs on ctx and stops soon; wait so that
				// its partial file is gone when the pull returns.
				<-ch
			}
			return ctx.Err()
		case res := <-ch:
			err := res.Err
			// Another pull fetched it for us but was cancelled: try again
			// on our own account.
			if err != nil && !leader.Load() && ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
				continue
			}
			if err != nil {
				return fmt.Errorf("fetch %s %s: %w", kind, d.Digest, err)
			}
			report(ProgressEvent{Digest: d.Digest, Kind: kind, State: StateDone, Done: d.Size, Total: d.Size})
			return nil
		}
	}
}

// lockBlob serialises downloads of one blob across processes with a lock
// file in ingest/ (singleflight does it within one). Removing the file on
// unlock can let a third process lock a new file while a second still
// waits on the old one; both then download, which costs bandwidth only.
func (s *Store) lockBlob(ctx context.Context, d v1.Hash) (unlock func(), err error) {
	path := s.path(dirIngest, d.Hex+".lock")
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() {
				os.Remove(path)
				f.Close()
			}, nil
		}
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock blob %s: %w", d, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Store) download(ctx context.Context, d v1.Descriptor, kind string, fetch fetchFunc, report func(ProgressEvent)) error {
	rc, err := fetch(ctx, d)
	if err != nil {
		return err
	}
	defer rc.Close()
	pr := &progressReader{r: rc, report: func(n int64) {
		report(ProgressEvent{Digest: d.Digest, Kind: kind, State: StateDownloading, Done: n, Total: d.Size})
	}}
	_, _, err = s.ingest(ctx, pr, d.Size, d.Digest)
	return err
}

// progressReader reports bytes read, at most every 100ms.
type progressReader struct {
	r      io.Reader
	n      int64
	last   time.Time
	report func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if now := time.Now(); now.Sub(p.last) >= 100*time.Millisecond || err != nil {
		p.last = now
		p.report(p.n)
	}
	return n, err
}

// name records names for a stored image. A name that pointed at another
// image now points at this one.
func (s *Store) name(names []string, st *stored, source string) ([]Image, error) {
	now := time.Now().UTC()
	rec := imageRecord{Digest: st.digest, Config: st.manifest.Config.Digest, Platform: platformOf(st.config), Size: st.size, Stored: now, Source: source}
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketImages)
		for _, n := range names {
			if err := putJSON(b, n, rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record image names: %w", err)
	}
	out := make([]Image, 0, len(names))
	for _, n := range names {
		out = append(out, rec.image(n))
	}
	return out, nil
}
