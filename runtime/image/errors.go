package image

import (
	"errors"
	"fmt"
	"strings"
)

// The store's errors say what is wrong in the store's own terms. A command
// line (or an API) that knows its flags and commands tells the user what to
// do next: it finds these with errors.Is and errors.As.

// ErrNotFound is matched (errors.Is) by every *NotFoundError.
var ErrNotFound = errors.New("image not found")

// NotFoundError reports that no image in the store matches a reference.
type NotFoundError struct {
	// Ref is the reference as given.
	Ref string
	// Name is its canonical name when Ref is a name ("" for a digest or
	// an ID); pulling that name would store it.
	Name string
}

func (e *NotFoundError) Error() string {
	if e.Name != "" {
		return fmt.Sprintf("%v: %s is not in the image store", ErrNotFound, e.Name)
	}
	return fmt.Sprintf("%v: no image in the store has digest or ID %s", ErrNotFound, e.Ref)
}

func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// SeveralNamesError reports a removal by ID or digest of an image that has
// several names, without RemoveOptions.Force.
type SeveralNamesError struct {
	ID    string
	Names []string
}

func (e *SeveralNamesError) Error() string {
	return fmt.Sprintf("image %s has %d names (%s): remove one name at a time, or all of them by force", e.ID, len(e.Names), strings.Join(e.Names, ", "))
}

// InUseError reports a removal of an image's last name while prepared
// containers use the image, without RemoveOptions.Force.
type InUseError struct {
	Image      string
	Containers []string
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("image %s is used by prepared container(s) %s: release them first, or remove the name by force", e.Image, strings.Join(e.Containers, ", "))
}

// ErrNameRequired is wrapped by import errors for an image that has no
// name of its own and got none in ImportOptions.Name.
var ErrNameRequired = errors.New("the image needs a name")

// ErrNameForSeveral is wrapped by import errors for an ImportOptions.Name
// given with an archive that holds several images.
var ErrNameForSeveral = errors.New("a name can be given to a single image only")

// PlatformError reports an image, or an index of images, with nothing for
// the platform wanted.
type PlatformError struct {
	// What names the image or index.
	What string
	Want string
	// Have lists the platforms there are ("" for an index without
	// platform entries).
	Have []string
}

func (e *PlatformError) Error() string {
	if len(e.Have) == 0 {
		return fmt.Sprintf("%s is an index without platform entries, so none can be chosen for %s", e.What, e.Want)
	}
	return fmt.Sprintf("%s has no image for %s; it has %s", e.What, e.Want, strings.Join(e.Have, ", "))
}

// URLError reports an image reference written as a URL
// (http://registry/app:1): references name a registry host, not a URL.
type URLError struct {
	Ref    string
	Scheme string // as written: "http", "HTTPS", ...
}

func (e *URLError) Error() string {
	return fmt.Sprintf("invalid image reference %q: a reference names a registry host and repository, not a URL: drop %s://", e.Ref, e.Scheme)
}

// RegistryUnreachableError reports a pull that could not reach the
// registry at all (no route, no DNS answer, connection refused): the
// machine may have no network.
type RegistryUnreachableError struct {
	Ref      string
	Registry string
	Err      error
}

func (e *RegistryUnreachableError) Error() string {
	return fmt.Sprintf("pull %s: cannot reach the registry %s: %v", e.Ref, e.Registry, e.Err)
}

func (e *RegistryUnreachableError) Unwrap() error { return e.Err }
