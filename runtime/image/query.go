package image

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image is a named image in the store.
type Image struct {
	// Name is the canonical reference, e.g. docker.io/library/busybox:latest.
	Name string `json:"name"`
	// ID is the first 12 hex digits of Digest; Get accepts any unique
	// prefix of it.
	ID string `json:"id"`
	// Digest is the manifest digest, the image's identity.
	Digest   v1.Hash     `json:"digest"`
	Config   v1.Hash     `json:"configDigest"`
	Platform v1.Platform `json:"platform"`
	// Size is the bytes of its blobs as stored (layers compressed).
	Size   int64     `json:"size"`
	Stored time.Time `json:"stored"`
}

func (r imageRecord) image(name string) Image {
	return Image{Name: name, ID: r.Digest.Hex[:12], Digest: r.Digest, Config: r.Config, Platform: r.Platform, Size: r.Size, Stored: r.Stored}
}

// List returns every named image, sorted by name.
func (s *Store) List(ctx context.Context) ([]Image, error) {
	recs, err := s.images()
	if err != nil {
		return nil, err
	}
	out := make([]Image, 0, len(recs))
	for n, r := range recs {
		out = append(out, r.image(n))
	}
	slices.SortFunc(out, func(a, b Image) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Get finds an image by name (short names as docker: busybox is
// docker.io/library/busybox:latest), by name@digest, by digest
// (sha256:<hex>) or by a unique prefix of its ID.
func (s *Store) Get(ctx context.Context, ref string) (Image, error) {
	recs, err := s.images()
	if err != nil {
		return Image{}, err
	}
	n, r, err := resolve(recs, ref)
	if err != nil {
		return Image{}, err
	}
	return r.image(n), nil
}

func resolve(recs map[string]imageRecord, ref string) (string, imageRecord, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return "", imageRecord{}, fmt.Errorf("no image given: %s", refExample)
	}
	byDigest := func(match func(n string, r imageRecord) bool) (string, imageRecord, bool) {
		var names []string
		for n, r := range recs {
			if match(n, r) {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			return "", imageRecord{}, false
		}
		slices.Sort(names)
		return names[0], recs[names[0]], true
	}
	if strings.HasPrefix(ref, "sha256:") && len(ref) == len("sha256:")+64 {
		d, err := parseHash(ref)
		if err != nil {
			return "", imageRecord{}, err
		}
		if n, r, ok := byDigest(func(_ string, r imageRecord) bool { return r.Digest == d }); ok {
			return n, r, nil
		}
		return "", imageRecord{}, &NotFoundError{Ref: d.String()}
	}
	parsed, perr := ParseReference(ref)
	if perr == nil {
		canonical := CanonicalName(parsed)
		if r, ok := recs[canonical]; ok {
			return canonical, r, nil
		}
		if d, ok := parsed.(name.Digest); ok {
			repo := repositoryOf(canonical)
			if n, r, ok := byDigest(func(n string, r imageRecord) bool {
				return repositoryOf(n) == repo && r.Digest.String() == d.DigestStr()
			}); ok {
				return n, r, nil
			}
		}
	}
	if prefix := strings.TrimPrefix(ref, "sha256:"); len(prefix) >= 4 && isHex(prefix) {
		var ids []string
		var n0 string
		for n, r := range recs {
			if strings.HasPrefix(r.Digest.Hex, prefix) {
				if !slices.Contains(ids, r.Digest.Hex) {
					ids = append(ids, r.Digest.Hex)
				}
				if n0 == "" || n < n0 {
					n0 = n
				}
			}
		}
		switch {
		case len(ids) == 1:
			return n0, recs[n0], nil
		case len(ids) > 1:
			return "", imageRecord{}, fmt.Errorf("image ID prefix %s matches %d images: give more digits", prefix, len(ids))
		}
	}
	if perr != nil {
		return "", imageRecord{}, perr
	}
	return "", imageRecord{}, &NotFoundError{Ref: ref, Name: CanonicalName(parsed)}
}

func isHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Details is what Inspect reports about an image.
type Details struct {
	Image
	// Names are all names of this image.
	Names     []string        `json:"names"`
	MediaType types.MediaType `json:"mediaType"`
	// Created is when the image was built, from its config.
	Created time.Time   `json:"created"`
	Layers  []LayerInfo `json:"layers"`
	// RunConfig is how the image runs, from its config.
	RunConfig RunConfig `json:"config"`
	// Containers are the prepared containers using the image.
	Containers []string `json:"containers,omitempty"`
}

// LayerInfo describes one layer, bottom-most first.
type LayerInfo struct {
	Digest    v1.Hash         `json:"digest"`
	DiffID    v1.Hash         `json:"diffID"`
	MediaType types.MediaType `json:"mediaType"`
	Size      int64           `json:"size"`
	// Unpacked reports whether its snapshot is on disk.
	Unpacked bool `json:"unpacked"`
}

// RunConfig is the part of an image's config that says how it runs.
type RunConfig struct {
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"`
	WorkingDir   string            `json:"workingDir,omitempty"`
	User         string            `json:"user,omitempty"`
	ExposedPorts []string          `json:"exposedPorts,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	StopSignal   string            `json:"stopSignal,omitempty"`
}

// Inspect reads an image's manifest and config (both verified).
func (s *Store) Inspect(ctx context.Context, ref string) (*Details, error) {
	recs, err := s.images()
	if err != nil {
		return nil, err
	}
	n, r, err := resolve(recs, ref)
	if err != nil {
		return nil, err
	}
	m, cfg, err := s.load(r.Digest)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", n, err)
	}
	d := &Details{Image: r.image(n), MediaType: m.MediaType, Created: cfg.Created.Time}
	for name, other := range recs {
		if other.Digest == r.Digest {
			d.Names = append(d.Names, name)
		}
	}
	slices.Sort(d.Names)
	for i, l := range m.Layers {
		diffID := cfg.RootFS.DiffIDs[i]
		d.Layers = append(d.Layers, LayerInfo{Digest: l.Digest, DiffID: diffID, MediaType: l.MediaType, Size: l.Size, Unpacked: s.hasSnapshot(diffID)})
	}
	c := cfg.Config
	d.RunConfig = RunConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir, User: c.User, Labels: c.Labels, StopSignal: c.StopSignal}
	for p := range c.ExposedPorts {
		d.RunConfig.ExposedPorts = append(d.RunConfig.ExposedPorts, p)
	}
	slices.Sort(d.RunConfig.ExposedPorts)
	ctrs, err := s.containers()
	if err != nil {
		return nil, err
	}
	for id, c := range ctrs {
		if c.Digest == r.Digest {
			d.Containers = append(d.Containers, id)
		}
	}
	slices.Sort(d.Containers)
	return d, nil
}

// load reads and checks a stored image's manifest and config.
func (s *Store) load(digest v1.Hash) (*v1.Manifest, *v1.ConfigFile, error) {
	raw, err := s.readBlob(digest)
	if err != nil {
		return nil, nil, err
	}
	m, err := parseManifest(raw)
	if err != nil {
		return nil, nil, err
	}
	cfgRaw, err := s.readBlob(m.Config.Digest)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := parseConfig(cfgRaw, m)
	if err != nil {
		return nil, nil, err
	}
	return m, cfg, nil
}

// Verify reads every blob of an image and checks its digest, and checks
// that every layer's snapshot is complete.
func (s *Store) Verify(ctx context.Context, ref string) error {
	recs, err := s.images()
	if err != nil {
		return err
	}
	n, r, err := resolve(recs, ref)
	if err != nil {
		return err
	}
	m, cfg, err := s.load(r.Digest)
	if err != nil {
		return fmt.Errorf("verify %s: %w", n, err)
	}
	for i, l := range m.Layers {
		if err := s.verifyBlob(ctx, l.Digest); err != nil {
			return fmt.Errorf("verify %s: %w", n, err)
		}
		if _, err := os.Stat(s.snapshotFS(cfg.RootFS.DiffIDs[i])); err != nil || !s.hasSnapshot(cfg.RootFS.DiffIDs[i]) {
			return fmt.Errorf("verify %s: layer %s is not unpacked (it will be unpacked again when a container is prepared)", n, l.Digest)
		}
	}
	return nil
}
