package image

import (
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// maxLayers bounds the layers of one image (overlayfs stacks at most 500).
const maxLayers = 500

func isIndex(mt types.MediaType) bool {
	return mt == types.OCIImageIndex || mt == types.DockerManifestList
}

func isManifest(mt types.MediaType) bool {
	return mt == types.OCIManifestSchema1 || mt == types.DockerManifestSchema2
}

// unsupportedManifest explains a manifest media type the store cannot use.
func unsupportedManifest(mt types.MediaType) error {
	switch mt {
	case types.DockerManifestSchema1, types.DockerManifestSchema1Signed:
		return fmt.Errorf("unsupported manifest media type %s (Docker schema 1, retired in 2019): push the image again with a current client", mt)
	}
	return fmt.Errorf("unsupported manifest media type %q: only OCI and Docker v2 image manifests and indexes are supported", mt)
}

// checkLayerType accepts the tar layer media types and refuses the rest by name.
func checkLayerType(mt types.MediaType) error {
	switch mt {
	case types.DockerLayer, types.DockerUncompressedLayer, types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer:
		return nil
	case types.DockerForeignLayer, types.OCIRestrictedLayer, types.OCIUncompressedRestrictedLayer:
		return fmt.Errorf("unsupported layer media type %s: foreign (non-distributable) layers belong to Windows images", mt)
	}
	return fmt.Errorf("unsupported layer media type %q: only tar layers (plain, gzip or zstd) are supported", mt)
}

// parseManifest decodes and checks an image manifest.
func parseManifest(raw []byte) (*v1.Manifest, error) {
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("image manifest does not parse: %w", err)
	}
	if m.SchemaVersion != 2 {
		return nil, fmt.Errorf("image manifest has schemaVersion %d, want 2", m.SchemaVersion)
	}
	if m.MediaType == "" {
		m.MediaType = types.OCIManifestSchema1
	}
	if !isManifest(m.MediaType) {
		return nil, unsupportedManifest(m.MediaType)
	}
	switch m.Config.MediaType {
	case types.DockerConfigJSON, types.OCIConfigJSON:
	default:
		return nil, fmt.Errorf("manifest's config has media type %q: this is not a container image (an artifact such as a Helm chart or a signature?)", m.Config.MediaType)
	}
	if err := checkDescriptor(m.Config); err != nil {
		return nil, fmt.Errorf("manifest's config: %w", err)
	}
	if len(m.Layers) > maxLayers {
		return nil, fmt.Errorf("image has %d layers, more than the %d supported", len(m.Layers), maxLayers)
	}
	for i, l := range m.Layers {
		if err := checkLayerType(l.MediaType); err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, l.Digest, err)
		}
		if err := checkDescriptor(l); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return &m, nil
}

func checkDescriptor(d v1.Descriptor) error {
	if err := checkDigest(d.Digest); err != nil {
		return err
	}
	if d.Size < 0 {
		return fmt.Errorf("%s: negative size %d", d.Digest, d.Size)
	}
	return nil
}

// parseConfig decodes and checks an image config against its manifest.
func parseConfig(raw []byte, m *v1.Manifest) (*v1.ConfigFile, error) {
	var c v1.ConfigFile
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("image config %s does not parse: %w", m.Config.Digest, err)
	}
	if c.RootFS.Type != "layers" {
		return nil, fmt.Errorf("image config %s: rootfs.type is %q, want \"layers\"", m.Config.Digest, c.RootFS.Type)
	}
	if len(c.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("image config %s lists %d layers (rootfs.diff_ids) but the manifest has %d", m.Config.Digest, len(c.RootFS.DiffIDs), len(m.Layers))
	}
	for _, d := range c.RootFS.DiffIDs {
		if err := checkDigest(d); err != nil {
			return nil, fmt.Errorf("image config %s: diff_id: %w", m.Config.Digest, err)
		}
	}
	if c.OS != "" && c.OS != "linux" {
		return nil, fmt.Errorf("image is for %s; Nexus runs linux images", c.OS)
	}
	return &c, nil
}

// DefaultPlatform is the platform of this machine.
func DefaultPlatform() v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if runtime.GOARCH == "arm" {
		p.Variant = "v7"
	}
	return p
}

// platformMatches reports whether an index entry's platform runs on want.
func platformMatches(have *v1.Platform, want v1.Platform) bool {
	if have == nil || have.OS != want.OS || have.Architecture != want.Architecture {
		return false
	}
	if want.Variant == "" {
		return true
	}
	hv, wv := have.Variant, want.Variant
	if want.Architecture == "arm64" {
		hv, wv = strings.TrimPrefix(hv, "v8"), strings.TrimPrefix(wv, "v8")
	}
	return hv == wv
}

// choosePlatform picks want's manifest from an index, or says which
// platforms the index has.
func choosePlatform(idx *v1.IndexManifest, want v1.Platform, what string) (v1.Descriptor, error) {
	var have []string
	for _, d := range idx.Manifests {
		if platformMatches(d.Platform, want) && isManifest(d.MediaType) {
			return d, nil
		}
		if d.Platform != nil && d.Platform.OS != "unknown" {
			have = append(have, d.Platform.String())
		}
	}
	slices.Sort(have)
	have = slices.Compact(have)
	return v1.Descriptor{}, &PlatformError{What: what, Want: want.String(), Have: have}
}

func parseIndex(raw []byte) (*v1.IndexManifest, error) {
	var idx v1.IndexManifest
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, fmt.Errorf("image index does not parse: %w", err)
	}
	for _, d := range idx.Manifests {
		if err := checkDescriptor(d); err != nil {
			return nil, fmt.Errorf("image index entry: %w", err)
		}
	}
	return &idx, nil
}

// platformOf is the platform an image's config declares.
func platformOf(c *v1.ConfigFile) v1.Platform {
	return v1.Platform{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant}
}
