package api

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/audit"
)

// request is one API request, parsed from its method and path:
//
//	/v1/{resource}                                  cluster-scoped collection, or every namespace
//	/v1/{resource}/{name}[/status]                  cluster-scoped object
//	/v1/namespaces/{ns}/{resource}                  namespaced collection
//	/v1/namespaces/{ns}/{resource}/{name}[/status]  namespaced object
//	/v1/namespaces/{ns}/serviceaccounts/{name}/token[/{id}]  service account tokens
//	/v1/namespaces/{ns}/instances/{name}/log        an instance's container log
//	/v1/namespaces/{ns}/instances/{name}/exec        run a process in an instance (POST)
//	/v1/nodes/{name}/certificate                     renew a node's certificate (POST)
//	/v1/nodes/{name}/heartbeat                      renew a node's heartbeat lease (POST)
type request struct {
	http      *http.Request
	query     url.Values
	verb      string // get, list, watch, create, update, patch, delete
	res       *types.Resource
	sub       string // "status", "token", "log", "exec", "certificate" or "heartbeat", or empty
	namespace string
	name      string
	subName   string // the token id of .../token/{id}
	principal Principal
	decision  audit.Decision
	body      []byte // the request body, once read
	bodyErr   error  // why the body cannot be used, once read
	// decoded is the body decoded as the resource (a create's, read by the
	// checks for its name), so the handler does not decode it again.
	decoded types.Object
	code    int // the status a successful handler answered with
	// annotations go into the audit record (an exec's command).
	annotations map[string]string
}

// describe names the request's object for messages: "workloads/web in
// namespace default".
func (r *request) describe() string {
	s := "the request"
	if r.res != nil {
		s = r.res.Plural
		if r.name != "" {
			s += "/" + r.name
		}
		if r.sub != "" {
			s += "/" + r.sub
		}
		if r.namespace != "" {
			s += " in namespace " + r.namespace
		}
	}
	return s
}

// longLived reports whether the request may stay open for as long as
// its client wants: a watch, a followed log or an exec.
func (r *request) longLived() bool {
	if r.verb == "watch" {
		return true
	}
	if r.sub == "exec" {
		return true
	}
	follow, _ := strconv.ParseBool(r.query.Get("follow"))
	return r.sub == "log" && follow
}

// mutating reports whether the request changes state.
func (r *request) mutating() bool {
	switch r.verb {
	case "get", "list", "watch":
		return false
	}
	return true
}

func parseRequest(hr *http.Request) (*request, *Problem) {
	r := &request{http: hr, query: hr.URL.Query()}
	parts := strings.Split(strings.Trim(hr.URL.Path, "/"), "/")
	if len(parts) < 2 || parts[0] != "v1" {
		return r, problem(http.StatusNotFound, "NotFound", "%s is not an API path: resources are under /v1/ (e.g. /v1/namespaces/default/workloads)", hr.URL.Path)
	}
	for _, p := range parts[1:] {
		if p == "" {
			return r, problem(http.StatusNotFound, "NotFound", "%s has an empty path segment", hr.URL.Path)
		}
	}
	rest := parts[1:]
	// /v1/namespaces/{ns}/{resource}... (but /v1/namespaces/{name}/status
	// is the namespace's own status).
	if len(rest) >= 3 && rest[0] == "namespaces" && rest[2] != "status" {
		r.namespace = rest[1]
		rest = rest[2:]
	}
	res, ok := types.LookupResource(rest[0])
	if !ok || res.Plural != rest[0] {
		return r, problem(http.StatusNotFound, "NotFound", "no resource %q: resources are %s", rest[0], types.ResourceNames())
	}
	r.res = res
	if r.namespace != "" && !res.Namespaced {
		return r, problem(http.StatusNotFound, "NotFound", "%s are not namespaced: use /v1/%s", res.Plural, res.Plural)
	}
	if len(rest) >= 2 {
		r.name = rest[1]
	}
	if len(rest) >= 3 {
		r.sub = rest[2]
		switch {
		case r.sub == "status" && res.HasStatus && len(rest) == 3:
		case (r.sub == "log" || r.sub == "exec") && res.Plural == "instances" && len(rest) == 3:
		case r.sub == "certificate" && res.Plural == "nodes" && len(rest) == 3:
		case r.sub == "heartbeat" && res.Plural == "nodes" && len(rest) == 3:
		case r.sub == "token" && res.Plural == "serviceaccounts" && len(rest) <= 4:
			if len(rest) == 4 {
				r.subName = rest[3]
			}
		default:
			return r, problem(http.StatusNotFound, "NotFound", "%s has no subresource %q", res.Plural, strings.Join(rest[2:], "/"))
		}
	}
	if res.Namespaced && r.name != "" && r.namespace == "" {
		return r, problem(http.StatusNotFound, "NotFound", "%s are namespaced: use /v1/namespaces/{namespace}/%s/%s", res.Plural, res.Plural, r.name)
	}
	for _, n := range []string{r.namespace, r.name} {
		if n != "" {
			if msg := types.ValidateName(n); msg != "" {
				return r, problem(http.StatusNotFound, "NotFound", "%q is not a valid name: %s", n, msg)
			}
		}
	}
	verb, p := verbOf(hr.Method, r)
	if p != nil {
		return r, p
	}
	r.verb = verb
	return r, nil
}

func verbOf(method string, r *request) (string, *Problem) {
	one := r.name != ""
	notAllowed := func(allowed string) *Problem {
		return problem(http.StatusMethodNotAllowed, "MethodNotAllowed", "%s is not allowed on %s (allowed: %s)", method, r.http.URL.Path, allowed)
	}
	if r.sub == "log" {
		if method == http.MethodGet {
			return "get", nil
		}
		return "", notAllowed("GET")
	}
	if r.sub == "exec" || r.sub == "certificate" || r.sub == "heartbeat" {
		if method == http.MethodPost {
			return "create", nil
		}
		return "", notAllowed("POST")
	}
	if r.sub == "token" {
		switch {
		case method == http.MethodPost && r.subName == "":
			return "create", nil
		case method == http.MethodDelete && r.subName != "":
			return "delete", nil
		}
		return "", notAllowed("POST .../token, DELETE .../token/{id}")
	}
	switch method {
	case http.MethodGet:
		if one {
			return "get", nil
		}
		if w := r.query.Get("watch"); w != "" {
			if ok, err := strconv.ParseBool(w); err != nil {
				return "", badRequest("watch=%q: use watch=true", w)
			} else if ok {
				return "watch", nil
			}
		}
		return "list", nil
	case http.MethodPost:
		if !one {
			return "create", nil
		}
		return "", notAllowed("GET, PUT, PATCH, DELETE")
	case http.MethodPut, http.MethodPatch, http.MethodDelete:
		if !one {
			return "", notAllowed("GET, POST")
		}
		if r.sub == "status" && method == http.MethodDelete {
			return "", notAllowed("GET, PUT, PATCH")
		}
		return map[string]string{http.MethodPut: "update", http.MethodPatch: "patch", http.MethodDelete: "delete"}[method], nil
	}
	return "", problem(http.StatusMethodNotAllowed, "MethodNotAllowed", "method %s is not used by the API", method)
}
