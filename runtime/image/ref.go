package image

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// refExample is shown with every reference error.
const refExample = "write it like busybox, docker.io/library/busybox:1.36 or registry.example.com:5000/team/app@sha256:<64 hex digits>"

// ParseReference parses an image reference the way docker does: a missing
// registry means Docker Hub (and `library/` for one-word names), a missing
// tag means latest.
func ParseReference(ref string, opts ...name.Option) (name.Reference, error) {
	if strings.TrimSpace(ref) == "" {
		return nil, fmt.Errorf("no image reference given: %s", refExample)
	}
	if i := strings.Index(ref, "://"); i >= 0 {
		return nil, &URLError{Ref: ref, Scheme: ref[:i]}
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %v; %s", ref, err, refExample)
	}
	if d, ok := r.(name.Digest); ok {
		if _, err := parseHash(d.DigestStr()); err != nil {
			return nil, fmt.Errorf("invalid image reference %q: %v; %s", ref, err, refExample)
		}
	}
	return r, nil
}

// CanonicalName is the name the store records for r: registry, repository
// and tag or digest, with Docker Hub spelled docker.io.
func CanonicalName(r name.Reference) string {
	reg := r.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	base := reg + "/" + r.Context().RepositoryStr()
	if d, ok := r.(name.Digest); ok {
		return base + "@" + d.DigestStr()
	}
	return base + ":" + r.Identifier()
}

// repositoryOf is the canonical repository part of a canonical name.
func repositoryOf(canonical string) string {
	if i := strings.LastIndex(canonical, "@"); i >= 0 {
		return canonical[:i]
	}
	if i := strings.LastIndex(canonical, ":"); i > strings.LastIndex(canonical, "/") {
		return canonical[:i]
	}
	return canonical
}
