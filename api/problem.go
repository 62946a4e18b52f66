package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"nexus.dev/nexus/api/storage"
	"nexus.dev/nexus/api/types"
)

// Problem is an error response, RFC 9457 application/problem+json, with
// the Kubernetes-like reason and the object it is about.
type Problem struct {
	Type   string `json:"type,omitempty"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	// Instance is the request path.
	Instance string `json:"instance,omitempty"`
	// Reason is machine-readable: NotFound, AlreadyExists, Conflict, Gone,
	// Invalid, BadRequest, Unauthorized, Forbidden, TooManyRequests, ...
	Reason    string `json:"reason"`
	Kind      string `json:"kind,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	// Fields lists every field-level problem of an invalid object.
	Fields types.FieldErrors `json:"fields,omitempty"`
	// CurrentResourceVersion is set on Gone: list again from there.
	CurrentResourceVersion string `json:"currentResourceVersion,omitempty"`
	// RetryAfterSeconds is set on TooManyRequests and Unavailable.
	RetryAfterSeconds int `json:"retryAfterSeconds,omitempty"`
}

func (p *Problem) Error() string { return p.Detail }

// ProblemContentType is the media type of error responses.
const ProblemContentType = "application/problem+json"

func problem(status int, reason, format string, args ...any) *Problem {
	return &Problem{Title: http.StatusText(status), Status: status, Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *Problem {
	return problem(http.StatusBadRequest, "BadRequest", format, args...)
}

// invalid is a 422 naming every field that breaks a rule.
func invalid(r *request, errs types.FieldErrors) *Problem {
	p := problem(http.StatusUnprocessableEntity, "Invalid", "%s %q is invalid: %s", kindOf(r), r.name, errs.Error())
	p.Fields = errs
	return p
}

func kindOf(r *request) string {
	if r.res != nil {
		return r.res.Kind
	}
	return ""
}

// toProblem turns any handler error into a problem response.
func toProblem(r *request, err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	var de *types.DecodeError
	if errors.As(err, &de) {
		p := problem(http.StatusBadRequest, "BadRequest", "the request body is not a valid %s: %s", kindOf(r), de.Error())
		p.Fields = de.Fields
		return p
	}
	var fe types.FieldErrors
	if errors.As(err, &fe) {
		return invalid(r, fe)
	}
	var se *storage.Error
	if errors.As(err, &se) {
		status := map[storage.Reason]int{
			storage.NotFound: http.StatusNotFound, storage.AlreadyExists: http.StatusConflict,
			storage.Conflict: http.StatusConflict, storage.Gone: http.StatusGone,
			storage.Invalid: http.StatusUnprocessableEntity, storage.Unavailable: http.StatusServiceUnavailable,
		}[se.Reason]
		if status == 0 {
			status = http.StatusInternalServerError
		}
		p := problem(status, string(se.Reason), "%s", se.Error())
		p.Namespace, p.Name = se.Namespace, se.Name
		if c := se.Claim; c != nil {
			p.Fields = types.FieldErrors{{Field: c.Field, Detail: strings.TrimPrefix(se.Message, c.Field+": ")}}
		}
		if r.res != nil && r.res.Plural == se.Resource {
			p.Kind = r.res.Kind
		}
		if se.Reason == storage.Gone {
			p.CurrentResourceVersion = strconv.FormatInt(se.CurrentRevision, 10)
		}
		if se.Reason == storage.Unavailable {
			p.RetryAfterSeconds = 1
		}
		return p
	}
	if errors.Is(err, errRequestCanceled) {
		return problem(499, "Canceled", "the client went away")
	}
	return problem(http.StatusInternalServerError, "InternalError", "%s: %v", r.describe(), err)
}

var errRequestCanceled = errors.New("request canceled")

func writeProblem(w http.ResponseWriter, r *request, p *Problem) {
	if r != nil {
		if p.Instance == "" {
			p.Instance = r.http.URL.Path
		}
		if p.Kind == "" && r.res != nil && p.Status != http.StatusUnauthorized {
			p.Kind = r.res.Kind
		}
		if p.Namespace == "" && p.Name == "" && p.Status != http.StatusUnauthorized {
			p.Namespace, p.Name = r.namespace, r.name
		}
	}
	if p.RetryAfterSeconds > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(p.RetryAfterSeconds))
	}
	w.Header().Set("Content-Type", ProblemContentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
