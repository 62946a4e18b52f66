package client

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"nexus.dev/nexus/api/types"
)

// Reasons of API errors: the machine-readable `reason` of the server's
// problem documents (docs/api.md, Errors).
const (
	ReasonBadRequest      = "BadRequest"
	ReasonUnauthorized    = "Unauthorized"
	ReasonForbidden       = "Forbidden"
	ReasonNotFound        = "NotFound"
	ReasonAlreadyExists   = "AlreadyExists"
	ReasonConflict        = "Conflict"
	ReasonGone            = "Gone"
	ReasonTooLarge        = "RequestEntityTooLarge"
	ReasonInvalid         = "Invalid"
	ReasonTooManyRequests = "TooManyRequests"
	ReasonUnavailable     = "Unavailable"
)

// APIError is an error answer of the API server: its problem document
// (RFC 9457), decoded. Error() is the server's detail, which names the
// object and the cause.
type APIError struct {
	Status int
	Reason string
	Title  string
	Detail string
	// Kind, Namespace and Name are the object the problem is about.
	Kind, Namespace, Name string
	// Fields lists every field-level problem (unknown fields, broken rules).
	Fields types.FieldErrors
	// CurrentResourceVersion is set on Gone: list again from there.
	CurrentResourceVersion string
	// RetryAfter is set on TooManyRequests and Unavailable.
	RetryAfter time.Duration
	// Method and Path are the request that failed.
	Method, Path string
}

func (e *APIError) Error() string {
	if e.Detail != "" {
		return e.Detail
	}
	return fmt.Sprintf("%s %s: the server answered %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
}

// problem is the server's problem document (api.Problem on the wire).
type problem struct {
	Title                  string            `json:"title"`
	Status                 int               `json:"status"`
	Detail                 string            `json:"detail"`
	Reason                 string            `json:"reason"`
	Kind                   string            `json:"kind"`
	Namespace              string            `json:"namespace"`
	Name                   string            `json:"name"`
	Fields                 types.FieldErrors `json:"fields"`
	CurrentResourceVersion string            `json:"currentResourceVersion"`
	RetryAfterSeconds      int               `json:"retryAfterSeconds"`
}

const problemContentType = "application/problem+json"

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 1 << 20

// newAPIError turns an error answer into an APIError. A body that is not
// a problem document (a proxy's error page) is quoted, shortened.
func newAPIError(method, path string, status int, header http.Header, body []byte) *APIError {
	e := &APIError{Status: status, Method: method, Path: path, Title: http.StatusText(status)}
	var p problem
	if strings.HasPrefix(header.Get("Content-Type"), problemContentType) && json.Unmarshal(body, &p) == nil {
		e.Reason, e.Detail, e.Kind, e.Namespace, e.Name = p.Reason, p.Detail, p.Kind, p.Namespace, p.Name
		e.Fields, e.CurrentResourceVersion = p.Fields, p.CurrentResourceVersion
		if p.Title != "" {
			e.Title = p.Title
		}
		if p.RetryAfterSeconds > 0 {
			e.RetryAfter = time.Duration(p.RetryAfterSeconds) * time.Second
		}
	} else {
		snippet := strings.TrimSpace(string(body))
		if len(snippet) > 200 {
			snippet = snippet[:200] + "..."
		}
		e.Detail = fmt.Sprintf("%s %s: the server answered %d %s", method, path, status, http.StatusText(status))
		if snippet != "" {
			e.Detail += ": " + snippet
		}
	}
	if e.RetryAfter == 0 {
		if s, err := strconv.Atoi(header.Get("Retry-After")); err == nil && s > 0 {
			e.RetryAfter = time.Duration(s) * time.Second
		}
	}
	if e.Reason == "" {
		e.Reason = reasonOf(status)
	}
	return e
}

func reasonOf(status int) string {
	switch status {
	case http.StatusBadRequest:
		return ReasonBadRequest
	case http.StatusUnauthorized:
		return ReasonUnauthorized
	case http.StatusForbidden:
		return ReasonForbidden
	case http.StatusNotFound:
		return ReasonNotFound
	case http.StatusConflict:
		return ReasonConflict
	case http.StatusGone:
		return ReasonGone
	case http.StatusRequestEntityTooLarge:
		return ReasonTooLarge
	case http.StatusUnprocessableEntity:
		return ReasonInvalid
	case http.StatusTooManyRequests:
		return ReasonTooManyRequests
	case http.StatusServiceUnavailable:
		return ReasonUnavailable
	}
	return "Unknown"
}

// ReasonOf is err's API reason ("NotFound", "Conflict", ...), or "" when
// err is not an API error.
func ReasonOf(err error) string {
	var e *APIError
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// IsNotFound: no such object, resource or namespace.
func IsNotFound(err error) bool { return ReasonOf(err) == ReasonNotFound }

// IsAlreadyExists: a create found the name taken.
func IsAlreadyExists(err error) bool { return ReasonOf(err) == ReasonAlreadyExists }

// IsConflict: the object changed since the resourceVersion the request
// carried (optimistic concurrency): read it again and retry.
func IsConflict(err error) bool { return ReasonOf(err) == ReasonConflict }

// IsGone: a watch or continue token older than the store's compaction:
// list again.
func IsGone(err error) bool { return ReasonOf(err) == ReasonGone }

// IsInvalid: the object breaks a rule; the error's Fields list every one.
func IsInvalid(err error) bool { return ReasonOf(err) == ReasonInvalid }

// IsBadRequest: the request could not be read (malformed, unknown fields,
// bad selectors or patches).
func IsBadRequest(err error) bool { return ReasonOf(err) == ReasonBadRequest }

// IsUnauthorized: the server did not accept the client's certificate or token.
func IsUnauthorized(err error) bool { return ReasonOf(err) == ReasonUnauthorized }

// IsForbidden: the identity check or RBAC refused the request.
func IsForbidden(err error) bool { return ReasonOf(err) == ReasonForbidden }

// IsTooManyRequests: the identity is over its rate or concurrency limit.
func IsTooManyRequests(err error) bool { return ReasonOf(err) == ReasonTooManyRequests }

// IsUnavailable: the server's store or audit log is not available.
func IsUnavailable(err error) bool { return ReasonOf(err) == ReasonUnavailable }

// ConnectionError is a request that got no answer from the server: it
// could not connect, the TLS handshake failed, or the connection broke.
type ConnectionError struct {
	Server string
	// Proto is "HTTP/2" or "HTTP/3".
	Proto string
	Err   error
}

func (e *ConnectionError) Error() string {
	if e.UntrustedServer() {
		return fmt.Sprintf("the API server at %s is not trusted: its certificate does not chain to the cluster CA the client was given: %v", e.Server, e.Err)
	}
	return fmt.Sprintf("cannot reach the API server at %s (%s): %v", e.Server, e.Proto, e.Err)
}

func (e *ConnectionError) Unwrap() error { return e.Err }

// UntrustedServer reports whether the server's certificate failed
// verification: a wrong CA, an expired certificate, or an address the
// certificate was not issued for.
func (e *ConnectionError) UntrustedServer() bool {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var he x509.HostnameError
	var cv *tls.CertificateVerificationError
	return errors.As(e.Err, &ua) || errors.As(e.Err, &ci) || errors.As(e.Err, &he) || errors.As(e.Err, &cv)
}

// IsConnectionError reports whether err is a request that got no answer.
func IsConnectionError(err error) bool {
	var ce *ConnectionError
	return errors.As(err, &ce)
}
