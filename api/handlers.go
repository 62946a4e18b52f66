package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"nexus.dev/nexus/api/mergepatch"
	"nexus.dev/nexus/api/storage"
	"nexus.dev/nexus/api/types"
)

// ListResponse is the body of a list: the objects and the revision they
// were read at.
type ListResponse struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   types.ListMeta `json:"metadata"`
	Items      []types.Object `json:"items"`
}

// WatchEvent is one line of a watch stream.
type WatchEvent struct {
	Type   string `json:"type"`
	Object any    `json:"object"`
}

const (
	maxListLimit        = 10000
	defaultWatchTimeout = 30 * time.Minute
	maxWatchTimeout     = 2 * time.Hour
)

func (s *Server) serveResource(w http.ResponseWriter, r *request) error {
	switch r.verb {
	case "get":
		if r.sub == "log" {
			return s.logs(w, r)
		}
		return s.get(w, r)
	case "list":
		return s.list(w, r)
	case "watch":
		return s.watch(w, r)
	case "create":
		switch r.sub {
		case "token":
			return s.createToken(w, r)
		case "exec":
			return s.exec(w, r)
		case "certificate":
			return s.renewNodeCertificate(w, r)
		case "heartbeat":
			return s.heartbeat(w, r)
		}
		return s.create(w, r)
	case "update":
		return s.update(w, r)
	case "patch":
		return s.patch(w, r)
	case "delete":
		if r.sub == "token" {
			return s.deleteToken(w, r)
		}
		return s.delete(w, r)
	}
	return problem(http.StatusMethodNotAllowed, "MethodNotAllowed", "unknown verb %s", r.verb)
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

func (s *Server) get(w http.ResponseWriter, r *request) error {
	_, js, err := s.current(r.http.Context(), r.res, r.namespace, r.name)
	if err != nil {
		return err
	}
	return s.finish(w, r, http.StatusOK, js)
}

// respond writes an object and keeps it for the audit record.
func (s *Server) respond(w http.ResponseWriter, r *request, status int, o types.Object) error {
	body, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return s.finish(w, r, status, body)
}

// listOptions reads labelSelector, fieldSelector, limit and continue.
func listOptions(r *request) (storage.ListOptions, error) {
	var opts storage.ListOptions
	var err error
	if opts.Labels, err = types.ParseLabelSelector(r.query.Get("labelSelector")); err != nil {
		return opts, badRequest("labelSelector: %v", err)
	}
	if opts.Fields, err = types.ParseFieldSelector(r.query.Get("fieldSelector")); err != nil {
		return opts, badRequest("fieldSelector: %v", err)
	}
	if err := types.CheckFieldSelector(r.res, opts.Fields); err != nil {
		return opts, badRequest("%v", err)
	}
	if l := r.query.Get("limit"); l != "" {
		n, err := strconv.ParseInt(l, 10, 64)
		if err != nil || n < 0 || n > maxListLimit {
			return opts, badRequest("limit=%q: must be 0-%d (0: no limit)", l, maxListLimit)
		}
		opts.Limit = n
	}
	opts.Continue = r.query.Get("continue")
	return opts, nil
}

func (s *Server) list(w http.ResponseWriter, r *request) error {
	opts, err := listOptions(r)
	if err != nil {
		return err
	}
	if opts.Limit == 0 && opts.Continue == "" {
		if err := s.listCached(w, r, opts); !errors.Is(err, storage.ErrNotCurrent) {
			return err
		}
	}
	l, err := s.store.List(r.http.Context(), r.res, r.namespace, opts)
	if err != nil {
		return err
	}
	items := l.Items
	if items == nil {
		items = []types.Object{}
	}
	resp := ListResponse{APIVersion: types.APIVersion, Kind: r.res.Kind + "List", Items: items,
		Metadata: types.ListMeta{ResourceVersion: strconv.FormatInt(l.Revision, 10), Continue: l.Continue}}
	body, err := json.Marshal(resp)
	if err != nil {
		return err
	}
	return s.finish(w, r, http.StatusOK, body)
}

// listCached answers a whole list from the watch cache (pages with limit
// and continue are read from the store, at one revision).
func (s *Server) listCached(w http.ResponseWriter, r *request, opts storage.ListOptions) error {
	items, at, err := s.caches[r.res.Plural].List(r.http.Context(), r.namespace, opts)
	if err != nil {
		return err
	}
	n := 128
	for _, it := range items {
		n += len(it) + 1
	}
	body := make([]byte, 0, n)
	body = fmt.Appendf(body, `{"apiVersion":%q,"kind":%q,"metadata":{"resourceVersion":"%d"},"items":[`, types.APIVersion, r.res.Kind+"List", at)
	for i, it := range items {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, it...)
	}
	body = append(body, "]}"...)
	return s.finish(w, r, http.StatusOK, body)
}

func (s *Server) watch(w http.ResponseWriter, r *request) error {
	opts, err := listOptions(r)
	if err != nil {
		return err
	}
	if opts.Limit != 0 || opts.Continue != "" {
		return badRequest("limit and continue apply to lists, not watches")
	}
	timeout := defaultWatchTimeout
	if t := r.query.Get("timeoutSeconds"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 1 || time.Duration(n)*time.Second > maxWatchTimeout {
			return badRequest("timeoutSeconds=%q: must be 1-%d", t, int(maxWatchTimeout.Seconds()))
		}
		timeout = time.Duration(n) * time.Second
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		return errors.New("the connection cannot stream")
	}
	ctx, cancel := context.WithTimeout(r.http.Context(), timeout)
	defer cancel()
	if done, err := s.watchCached(ctx, w, flusher, r, opts); done {
		return err
	}
	watcher, err := s.store.Watch(ctx, r.res, r.namespace, storage.WatchOptions{
		ResourceVersion: r.query.Get("resourceVersion"), Labels: opts.Labels, Fields: opts.Fields,
		BookmarkInterval: s.bookmarkInterval,
	})
	if err != nil {
		return err
	}
	s.metrics.watches.WithLabelValues(r.res.Plural).Inc()
	defer s.metrics.watches.WithLabelValues(r.res.Plural).Dec()
	// Wait briefly for the first event: a revision the store compacted ends
	// the watch at once, and then the answer is a plain 410.
	var first *storage.Event
	select {
	case ev, ok := <-watcher.Events():
		if !ok {
			if err := watcher.Err(); err != nil {
				return err
			}
			return nil
		}
		first = &ev
	case <-time.After(100 * time.Millisecond):
	}
	s.audited(r, http.StatusOK, nil)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	enc := json.NewEncoder(w)
	send := func(ev storage.Event) error {
		if err := enc.Encode(WatchEvent{Type: string(ev.Type), Object: ev.Object}); err != nil {
			return err
		}
		flusher.Flush()
		return nil
	}
	if first != nil {
		if err := send(*first); err != nil {
			return errResponseStarted
		}
	}
	for ev := range watcher.Events() {
		if err := send(ev); err != nil {
			return errResponseStarted
		}
	}
	if err := watcher.Err(); err != nil {
		p := toProblem(r, err)
		p.Instance = r.http.URL.Path
		_ = enc.Encode(WatchEvent{Type: "ERROR", Object: p})
		flusher.Flush()
	}
	return errResponseStarted
}

// watchCached serves a watch from the watch cache. It returns false when
// the cache cannot (a revision older than its history), and the store
// serves it.
func (s *Server) watchCached(ctx context.Context, w http.ResponseWriter, flusher http.Flusher, r *request, opts storage.ListOptions) (bool, error) {
	var from int64
	if rv := r.query.Get("resourceVersion"); rv != "" {
		v, err := strconv.ParseInt(rv, 10, 64)
		if err != nil || v < 0 {
			return true, badRequest("resourceVersion %q is not a revision: pass one from an object or list", rv)
		}
		from = v
	}
	c := s.caches[r.res.Plural]
	cw, err := c.Watch(ctx, from, r.namespace, opts)
	if errors.Is(err, storage.ErrTooOld) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	s.metrics.watches.WithLabelValues(r.res.Plural).Inc()
	defer s.metrics.watches.WithLabelValues(r.res.Plural).Dec()
	s.audited(r, http.StatusOK, nil)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	for _, line := range cw.Replay() {
		if _, err := w.Write(line); err != nil {
			return true, errResponseStarted
		}
	}
	flusher.Flush()
	bookmark := time.NewTicker(s.bookmarkInterval)
	defer bookmark.Stop()
	lines := cw.Lines()
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				if err := cw.Err(); err != nil && ctx.Err() == nil {
					// The client resumes from the last resourceVersion it saw.
					p := problem(http.StatusGone, "Expired", "%s: watch again from the last resourceVersion you received", err)
					_ = json.NewEncoder(w).Encode(WatchEvent{Type: "ERROR", Object: p})
					flusher.Flush()
				}
				return true, errResponseStarted
			}
			if _, err := w.Write(line); err != nil {
				return true, errResponseStarted
			}
			// Write what else is queued before one flush.
			for more := true; more; {
				select {
				case line, ok := <-lines:
					if !ok {
						more = false // the next select reports the end
						continue
					}
					if _, err := w.Write(line); err != nil {
						return true, errResponseStarted
					}
				default:
					more = false
				}
			}
			flusher.Flush()
		case <-bookmark.C:
			// The revision first, then the check that nothing is queued:
			// every event up to it has been written.
			rev := c.Revision()
			if len(lines) == 0 {
				b := r.res.New()
				b.GetObjectMeta().ResourceVersion = strconv.FormatInt(rev, 10)
				if err := json.NewEncoder(w).Encode(WatchEvent{Type: string(storage.Bookmark), Object: b}); err != nil {
					return true, errResponseStarted
				}
				flusher.Flush()
			}
		case <-ctx.Done():
			return true, errResponseStarted
		}
	}
}

// errResponseStarted tells the dispatcher the handler already answered.
var errResponseStarted = errors.New("response already started")

// readBody reads the request body, at most the configured size. The body
// (or the reason it cannot be used) is kept: the checks may read it first.
func (s *Server) readBody(r *request) ([]byte, error) {
	if r.body == nil && r.bodyErr == nil {
		r.body, r.bodyErr = s.readBodyOnce(r)
	}
	return r.body, r.bodyErr
}

func (s *Server) readBodyOnce(r *request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.http.Body, s.limits.MaxBodyBytes+1))
	if err != nil {
		return nil, badRequest("read the request body: %v", err)
	}
	if int64(len(b)) > s.limits.MaxBodyBytes {
		return nil, problem(http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "the request body is larger than %d bytes", s.limits.MaxBodyBytes)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, badRequest("the request body is empty: send the %s as JSON or YAML", r.res.Kind)
	}
	return b, nil
}

// checkContentType accepts JSON and YAML bodies (and the given extra types).
func checkContentType(r *request, extra ...string) error {
	ct := r.http.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return problem(http.StatusUnsupportedMediaType, "UnsupportedMediaType", "Content-Type %q: %v", ct, err)
	}
	for _, ok := range append([]string{"application/json", "application/yaml", "application/x-yaml", "text/yaml"}, extra...) {
		if mt == ok {
			return nil
		}
	}
	return problem(http.StatusUnsupportedMediaType, "UnsupportedMediaType", "Content-Type %s is not accepted here: send application/json or application/yaml", mt)
}

// decodeBody reads and decodes the body as an object of the request's
// resource, checks it belongs where the URL says, and defaults and
// validates it.
func (s *Server) decodeBody(r *request) (types.Object, error) {
	if err := checkContentType(r); err != nil {
		return nil, err
	}
	o := r.decoded
	if o == nil {
		b, err := s.readBody(r)
		if err != nil {
			return nil, err
		}
		if o, err = types.Decode(b, r.res); err != nil {
			return nil, err
		}
	}
	return o, s.prepare(r, o)
}

// prepare checks that o is the object the URL names, then defaults and
// validates it.
func (s *Server) prepare(r *request, o types.Object) error {
	m := o.GetObjectMeta()
	if r.res.Namespaced {
		switch {
		case m.Namespace == "":
			m.Namespace = r.namespace
		case r.namespace != "" && m.Namespace != r.namespace:
			return badRequest("metadata.namespace %q does not match the namespace in the URL (%s)", m.Namespace, r.namespace)
		}
	}
	if r.name != "" && m.Name != r.name {
		if m.Name == "" {
			m.Name = r.name
		} else {
			return badRequest("metadata.name %q does not match the name in the URL (%s)", m.Name, r.name)
		}
	}
	if r.name == "" {
		r.name = m.Name
	}
	types.Default(o)
	if errs := types.Validate(o); len(errs) > 0 {
		return invalid(r, errs)
	}
	return nil
}

func (s *Server) create(w http.ResponseWriter, r *request) error {
	if r.res.Namespaced && r.namespace == "" {
		return problem(http.StatusMethodNotAllowed, "MethodNotAllowed", "create %s in a namespace: POST /v1/namespaces/{namespace}/%s", r.res.Plural, r.res.Plural)
	}
	o, err := s.decodeBody(r)
	if err != nil {
		return err
	}
	if o.GetObjectMeta().ResourceVersion != "" {
		return badRequest("metadata.resourceVersion must not be set when creating")
	}
	if err := s.namespaceExists(r); err != nil {
		return err
	}
	if err := s.checkEscalation(r.http.Context(), r, o); err != nil {
		return err
	}
	created, err := withAllocation(func(a *allocation) (types.Object, error) {
		o, err := s.allocate(r.http.Context(), a, nil, o)
		if err != nil {
			return nil, err
		}
		return s.store.Create(r.http.Context(), o)
	})
	if err != nil {
		return err
	}
	return s.respond(w, r, http.StatusCreated, created)
}

// namespaceExists refuses to create objects in a namespace that does not
// exist or is being deleted.
func (s *Server) namespaceExists(r *request) error {
	if !r.res.Namespaced {
		return nil
	}
	// A namespace the cache holds (active) existed a moment ago, which is
	// what this check can promise anyway: a namespace deleted meanwhile is
	// emptied after this create, as in Kubernetes. Only a miss (a namespace
	// made a moment ago, say) costs a current read.
	if o, ok := s.caches[s.nsRes.Plural].Peek("", r.namespace); ok && o.(*types.Namespace).Status.Phase != "Terminating" {
		return nil
	}
	o, _, err := s.current(r.http.Context(), s.nsRes, "", r.namespace)
	if storage.IsNotFound(err) {
		return problem(http.StatusNotFound, "NotFound", "namespace %s does not exist: create it first (nexus create namespace %s)", r.namespace, r.namespace)
	}
	if err != nil {
		return err
	}
	if o.(*types.Namespace).Status.Phase == "Terminating" {
		return problem(http.StatusConflict, "Conflict", "namespace %s is being deleted", r.namespace)
	}
	return nil
}

func (s *Server) update(w http.ResponseWriter, r *request) error {
	o, err := s.decodeBody(r)
	if err != nil {
		return err
	}
	if err := s.checkEscalation(r.http.Context(), r, o); err != nil {
		return err
	}
	opts := storage.UpdateOptions{Status: r.sub == "status", ResourceVersion: o.GetObjectMeta().ResourceVersion}
	updated, err := withAllocation(func(a *allocation) (types.Object, error) {
		return s.store.GuaranteedUpdate(r.http.Context(), r.res, r.namespace, r.name, opts, func(cur types.Object) (types.Object, error) {
			if errs := types.ValidateUpdate(cur, o); len(errs) > 0 {
				return nil, invalid(r, errs)
			}
			if opts.Status {
				return o, nil
			}
			return s.allocate(r.http.Context(), a, cur, o)
		})
	})
	if err != nil {
		return err
	}
	return s.respond(w, r, http.StatusOK, updated)
}

// patchContentType is the one patch format the API takes (RFC 7386).
const patchContentType = "application/merge-patch+json"

func (s *Server) patch(w http.ResponseWriter, r *request) error {
	mt, _, _ := mime.ParseMediaType(r.http.Header.Get("Content-Type"))
	if mt != patchContentType && mt != "application/json" {
		return problem(http.StatusUnsupportedMediaType, "UnsupportedMediaType", "PATCH takes a JSON merge patch (Content-Type: %s), not %q", patchContentType, mt)
	}
	patch, err := s.readBody(r)
	if err != nil {
		return err
	}
	var pm struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(patch, &pm); err != nil {
		return badRequest("the patch is not a JSON object: %v", err)
	}
	opts := storage.UpdateOptions{Status: r.sub == "status", ResourceVersion: pm.Metadata.ResourceVersion}
	updated, err := withAllocation(func(a *allocation) (types.Object, error) {
		return s.patchObject(r, opts, patch, a)
	})
	if err != nil {
		return err
	}
	return s.respond(w, r, http.StatusOK, updated)
}

// patchObject applies a merge patch to the stored object, allocating what
// the change needs (a node port for a new port of a NodePort service).
func (s *Server) patchObject(r *request, opts storage.UpdateOptions, patch []byte, a *allocation) (types.Object, error) {
	return s.store.GuaranteedUpdate(r.http.Context(), r.res, r.namespace, r.name, opts, func(cur types.Object) (types.Object, error) {
		curJSON, err := json.Marshal(cur)
		if err != nil {
			return nil, err
		}
		doc, err := mergepatch.Apply(curJSON, patch)
		if err != nil {
			return nil, badRequest("%v", err)
		}
		o, err := types.Decode(doc, r.res)
		if err != nil {
			return nil, err
		}
		if err := s.prepare(r, o); err != nil {
			return nil, err
		}
		if errs := types.ValidateUpdate(cur, o); len(errs) > 0 {
			return nil, invalid(r, errs)
		}
		if err := s.checkEscalation(r.http.Context(), r, o); err != nil {
			return nil, err
		}
		if opts.Status {
			return o, nil
		}
		return s.allocate(r.http.Context(), a, cur, o)
	})
}

func (s *Server) delete(w http.ResponseWriter, r *request) error {
	opts := storage.DeleteOptions{ResourceVersion: r.query.Get("resourceVersion")}
	if r.res == s.nsRes {
		if r.name == types.DefaultNamespace {
			return problem(http.StatusConflict, "Conflict", "the default namespace cannot be deleted")
		}
		if err := s.emptyNamespace(r.http.Context(), r.name); err != nil {
			return err
		}
	}
	deleted, err := s.store.Delete(r.http.Context(), r.res, r.namespace, r.name, opts)
	if err != nil {
		return err
	}
	return s.respond(w, r, http.StatusOK, deleted)
}

// emptyNamespace marks a namespace Terminating (so nothing new is created
// in it) and deletes everything in it.
func (s *Server) emptyNamespace(ctx context.Context, ns string) error {
	_, err := s.store.GuaranteedUpdate(ctx, s.nsRes, "", ns, storage.UpdateOptions{Status: true}, func(cur types.Object) (types.Object, error) {
		n := *cur.(*types.Namespace)
		n.Status.Phase = "Terminating"
		return &n, nil
	})
	if err != nil {
		return err
	}
	for _, res := range types.AllResources() {
		if !res.Namespaced {
			continue
		}
		for {
			l, err := s.store.List(ctx, res, ns, storage.ListOptions{Limit: 500})
			if err != nil {
				return fmt.Errorf("empty namespace %s: %w", ns, err)
			}
			for _, o := range l.Items {
				if _, err := s.store.Delete(ctx, res, ns, o.GetObjectMeta().Name, storage.DeleteOptions{}); err != nil && !storage.IsNotFound(err) {
					return fmt.Errorf("empty namespace %s: %w", ns, err)
				}
			}
			if l.Continue == "" {
				break
			}
		}
	}
	return nil
}
