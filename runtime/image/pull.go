package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/buildinfo"
)

// PullOptions configures Pull.
type PullOptions struct {
	// Platform chooses from a multi-platform index; nil means this machine's.
	Platform *v1.Platform
	// Keychain supplies registry credentials; nil means the Docker config
	// file ($DOCKER_CONFIG/config.json or ~/.docker/config.json) and its
	// credential helpers.
	Keychain authn.Keychain
	// Progress, if set, is called as blobs arrive and layers unpack. Calls
	// are serialised.
	Progress func(ProgressEvent)
	// Insecure allows falling back to plain HTTP when the registry does
	// not speak HTTPS. Loopback and private addresses allow it anyway.
	Insecure bool
	// Transport replaces the HTTP transport (tests, proxies).
	Transport http.RoundTripper
}

// Pull fetches ref from its registry and stores it under its canonical
// name: blobs are fetched in parallel, verified, skipped when already
// stored and fetched once when several pulls want them; layers are
// unpacked; the name is recorded last.
func (s *Store) Pull(ctx context.Context, ref string, o PullOptions) (Image, error) {
	var nopts []name.Option
	if o.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := ParseReference(ref, nopts...)
	if err != nil {
		return Image{}, err
	}
	unlock, err := s.lock(ctx, unix.LOCK_SH)
	if err != nil {
		return Image{}, err
	}
	defer unlock()

	platform := DefaultPlatform()
	if o.Platform != nil {
		platform = *o.Platform
	}
	keychain := o.Keychain
	if keychain == nil {
		keychain = authn.DefaultKeychain
	}
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(keychain),
		remote.WithUserAgent("nexus/" + buildinfo.Read().Version),
		remote.WithPlatform(platform),
	}
	if o.Transport != nil {
		ropts = append(ropts, remote.WithTransport(o.Transport))
	}
	puller, err := remote.NewPuller(ropts...)
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	desc, err := puller.Get(ctx, r)
	if err != nil {
		if unreachable(err) {
			return Image{}, &RegistryUnreachableError{Ref: ref, Registry: r.Context().RegistryStr(), Err: err}
		}
		return Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	raw := desc.Manifest
	if d, ok := r.(name.Digest); ok && digestOf(raw).String() != d.DigestStr() {
		return Image{}, fmt.Errorf("pull %s: the registry sent a manifest with another digest", ref)
	}
	if isIndex(desc.MediaType) {
		idx, err := parseIndex(raw)
		if err != nil {
			return Image{}, fmt.Errorf("pull %s: %w", ref, err)
		}
		child, err := choosePlatform(idx, platform, ref)
		if err != nil {
			return Image{}, err
		}
		desc, err = puller.Get(ctx, r.Context().Digest(child.Digest.String()))
		if err != nil {
			return Image{}, fmt.Errorf("pull %s for %s: %w", ref, platform, err)
		}
		if digestOf(desc.Manifest) != child.Digest {
			return Image{}, fmt.Errorf("pull %s: manifest %s: the registry sent content with another digest", ref, child.Digest)
		}
		raw = desc.Manifest
	} else if !isManifest(desc.MediaType) {
		return Image{}, fmt.Errorf("pull %s: %w", ref, unsupportedManifest(desc.MediaType))
	}

	repo := r.Context()
	fetch := func(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error) {
		l, err := puller.Layer(ctx, repo.Digest(d.Digest.String()))
		if err != nil {
			return nil, err
		}
		return l.Compressed()
	}
	st, err := s.storeImage(ctx, raw, fetch, progressFunc(o.Progress))
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	if got := platformOf(st.config); got.Architecture != "" && !platformMatches(&got, platform) {
		return Image{}, fmt.Errorf("pull: %w", &PlatformError{What: ref, Want: platform.String(), Have: []string{got.String()}})
	}
	imgs, err := s.name([]string{CanonicalName(r)}, st, "")
	if err != nil {
		return Image{}, err
	}
	return imgs[0], nil
}

// unreachable reports whether err is a failure to connect at all (a name
// that does not resolve, no route, a refused connection), as opposed to an
// answer from the registry.
func unreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
