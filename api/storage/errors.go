package storage

import (
	"errors"
	"fmt"
)

// Reason classifies a storage error; the API maps each to an HTTP status.
type Reason string

const (
	NotFound      Reason = "NotFound"      // 404
	AlreadyExists Reason = "AlreadyExists" // 409
	Conflict      Reason = "Conflict"      // 409: a stale resourceVersion
	Gone          Reason = "Gone"          // 410: the revision was compacted
	Invalid       Reason = "Invalid"       // 422: the request cannot be stored as it is
	Unavailable   Reason = "Unavailable"   // 503: the store did not answer
)

// Error is what storage operations fail with. It names the object.
type Error struct {
	Reason    Reason
	Resource  string // plural, e.g. workloads
	Namespace string
	Name      string
	Message   string
	// CurrentRevision is the store's revision, for Gone: a client lists
	// again from there.
	CurrentRevision int64
	// Claim is the claim another object holds, for a write refused for it.
	Claim *Claim
	Err   error
}

func (e *Error) Error() string {
	obj := e.Resource
	if e.Name != "" {
		obj = e.Resource + "/" + e.Name
	}
	if e.Namespace != "" {
		obj += " in namespace " + e.Namespace
	}
	return obj + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the reason of a storage error, or "" for other errors.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// IsNotFound reports whether err says the object does not exist.
func IsNotFound(err error) bool { return ReasonOf(err) == NotFound }

// IsConflict reports whether err is a stale resourceVersion.
func IsConflict(err error) bool { return ReasonOf(err) == Conflict }

// IsAlreadyExists reports whether a create found the name taken.
func IsAlreadyExists(err error) bool { return ReasonOf(err) == AlreadyExists }

// IsGone reports whether a watch or list revision was compacted away.
func IsGone(err error) bool { return ReasonOf(err) == Gone }

func errorf(reason Reason, ref objectRef, format string, args ...any) *Error {
	return &Error{Reason: reason, Resource: ref.r.Plural, Namespace: ref.ns, Name: ref.name, Message: fmt.Sprintf(format, args...)}
}
