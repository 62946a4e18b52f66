package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"nexus.dev/nexus/api/types"
)

// EventType, its values and Event are the API's watch vocabulary
// (api/types), named here too so callers of this package need no other.
type (
	EventType = types.EventType
	Event     = types.Event
)

const (
	Added    = types.Added
	Modified = types.Modified
	Deleted  = types.Deleted
	Bookmark = types.Bookmark
)

// WatchOptions say what a watch sees and where it starts.
type WatchOptions struct {
	LabelSelector, FieldSelector string
	// ResourceVersion: changes after it are delivered. Empty means now:
	// the objects that exist are listed and delivered first, as Added.
	ResourceVersion string
	// OnResume, when set, is called (from the watch's goroutine) each time
	// a lost stream is about to be resumed, with the reason it was lost.
	OnResume func(err error)
}

// Watcher delivers the events of one watch until it is stopped, its
// context ends, or the server refuses to go on; it resumes by itself
// after a lost connection, from the last resourceVersion it delivered,
// so no event is lost or repeated.
type Watcher struct {
	events chan Event
	stop   context.CancelFunc
	done   chan struct{}
	err    error
}

// Events is closed when the watch ends; Err then says why.
func (w *Watcher) Events() <-chan Event { return w.events }

// Err is why the watch ended, once Events is closed: nil when it was
// stopped or its context ended; an *APIError otherwise. IsGone(err) means
// the server no longer has the history to resume from: list again and
// watch from the list's resourceVersion.
func (w *Watcher) Err() error {
	<-w.done
	return w.err
}

// Stop ends the watch.
func (w *Watcher) Stop() {
	w.stop()
	<-w.done
}

const (
	// maxWatchLine bounds one event: an object is at most the server's
	// 3 MiB body limit.
	maxWatchLine = 16 << 20
	// A lost watch is resumed after resumeBackoff, doubling up to
	// maxResumeBackoff while the server stays unreachable.
	resumeBackoff    = 100 * time.Millisecond
	maxResumeBackoff = 5 * time.Second
)

// Watch follows objects of r in ns (every namespace when empty). Errors
// of the first request (a bad selector, no permission, an unreachable
// server) are returned here; later ones end the watch (Err).
func (c *Client) Watch(ctx context.Context, r *types.Resource, ns string, opts WatchOptions) (*Watcher, error) {
	p, err := path(r, scope(r, ns), "")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var initial []types.Object
	rv := opts.ResourceVersion
	if rv == "" {
		// Listing here rather than letting the server send the current
		// objects makes the resume point exact: the server's initial events
		// carry each object's own revision, not the list's, and resuming
		// from one of those would replay or skip changes.
		if initial, rv, err = c.List(ctx, r, ns, ListOptions{LabelSelector: opts.LabelSelector, FieldSelector: opts.FieldSelector}); err != nil {
			cancel()
			return nil, err
		}
	}
	ws := &watchStream{c: c, r: r, path: p, opts: opts, rv: rv}
	body, err := ws.open(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	w := &Watcher{events: make(chan Event), stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer close(w.events)
		defer cancel()
		for _, o := range initial {
			if !w.send(ctx, Event{Type: Added, Object: o}) {
				body.Close()
				return
			}
		}
		w.err = ws.run(ctx, w, body)
	}()
	return w, nil
}

func (w *Watcher) send(ctx context.Context, ev Event) bool {
	select {
	case w.events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// watchStream is the state of a watch across its connections.
type watchStream struct {
	c    *Client
	r    *types.Resource
	path string
	opts WatchOptions
	// rv is the resourceVersion of the last event delivered: where a
	// resumed stream starts.
	rv string
	// host is the server the current stream comes from.
	host string
}

func (ws *watchStream) open(ctx context.Context) (io.ReadCloser, error) {
	q := selectors(ListOptions{LabelSelector: ws.opts.LabelSelector, FieldSelector: ws.opts.FieldSelector})
	q.Set("watch", "true")
	q.Set("resourceVersion", ws.rv)
	resp, err := ws.c.do(ctx, request{method: http.MethodGet, path: ws.path, query: q, stream: true})
	if err != nil {
		return nil, err
	}
	ws.host = resp.Request.URL.Host
	return resp.Body, nil
}

// run reads streams until the context ends or the server refuses to go
// on, resuming lost ones.
func (ws *watchStream) run(ctx context.Context, w *Watcher, body io.ReadCloser) error {
	backoff := resumeBackoff
	for {
		delivered, err := ws.read(ctx, w, body)
		body.Close()
		if ctx.Err() != nil {
			return nil
		}
		if !resumable(err) {
			return err
		}
		if delivered {
			backoff = resumeBackoff
		}
		for {
			if ws.opts.OnResume != nil {
				ws.opts.OnResume(err)
			}
			ws.c.log.Debug("resuming watch", "path", ws.path, "resourceVersion", ws.rv, "error", err)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			backoff = min(2*backoff, maxResumeBackoff)
			body, err = ws.open(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			if !resumable(err) {
				return err
			}
		}
	}
}

// resumable reports whether a watch that ended with err may be resumed:
// a lost connection, the server ending the stream (its timeout, a
// restart), or a server that is busy or briefly unavailable. Gone and
// refusals (401, 403, 400) end the watch.
func resumable(err error) bool {
	if err == nil || errors.Is(err, io.EOF) || IsConnectionError(err) {
		return true
	}
	var ae *APIError
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
	}
	return false
}

// watchLine is one line of the stream.
type watchLine struct {
	Type   EventType       `json:"type"`
	Object json.RawMessage `json:"object"`
}

// read delivers the events of one stream until it ends, and says whether
// it delivered any and why it ended.
func (ws *watchStream) read(ctx context.Context, w *Watcher, body io.Reader) (bool, error) {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), maxWatchLine)
	delivered := false
	for sc.Scan() {
		var line watchLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return delivered, fmt.Errorf("watch %s: the server sent a line that does not decode: %w", ws.path, err)
		}
		if line.Type == "ERROR" {
			var p problem
			_ = json.Unmarshal(line.Object, &p)
			h := http.Header{"Content-Type": {problemContentType}}
			return delivered, newAPIError(http.MethodGet, ws.path, p.Status, h, line.Object)
		}
		switch line.Type {
		case Added, Modified, Deleted, Bookmark:
		default:
			return delivered, fmt.Errorf("watch %s: the server sent an event of unknown type %q", ws.path, line.Type)
		}
		o, err := decodeObject(ws.r, line.Object)
		if err != nil {
			return delivered, err
		}
		rv := o.GetObjectMeta().ResourceVersion
		if before(rv, ws.rv) || (line.Type == Bookmark && rv == ws.rv) {
			// The server starts after the revision asked for, so a change
			// from before it does not come; if it did, delivering it would
			// repeat an event. A bookmark of the last revision says nothing.
			continue
		}
		if !w.send(ctx, Event{Type: line.Type, Object: o}) {
			return delivered, nil
		}
		delivered = true
		ws.rv = rv
	}
	if err := sc.Err(); err != nil {
		// The stream's connection broke: the watch resumes on the next
		// server, if there is one, rather than wait for this one first.
		ws.c.failedHost(ws.host)
		return delivered, &ConnectionError{Server: "https://" + ws.host, Proto: ws.c.proto, Err: err}
	}
	return delivered, io.EOF
}

// before reports whether revision rv is older than last. (Changes made in
// one store transaction share a revision, so an equal one is not old.)
func before(rv, last string) bool {
	a, err1 := strconv.ParseInt(rv, 10, 64)
	b, err2 := strconv.ParseInt(last, 10, 64)
	return err1 == nil && err2 == nil && a < b
}
