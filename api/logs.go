package api

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"nexus.dev/nexus/api/types"
)

// logParams are the query parameters of GET .../instances/{name}/log, as
// Kubernetes' pods/log names them.
var logParams = []string{"follow", "tailLines", "sinceSeconds", "sinceTime", "timestamps"}

// maxSince is the furthest back sinceSeconds reaches: further is all of
// the log anyway, and the arithmetic stays within a time.Duration.
const maxSince = 100 * 365 * 24 * time.Hour

// logOptions reads the log's query parameters; now is the server's clock,
// which sinceSeconds counts back from.
func logOptions(q url.Values, now time.Time) (types.LogOptions, error) {
	opts := types.LogOptions{TailLines: -1}
	for k, v := range q {
		if !slices.Contains(logParams, k) {
			return opts, badRequest("unknown parameter %q: a log takes %s", k, strings.Join(logParams, ", "))
		}
		if len(v) > 1 {
			return opts, badRequest("%s is given %d times: give it once", k, len(v))
		}
	}
	for _, b := range []struct {
		name string
		to   *bool
	}{{"follow", &opts.Follow}, {"timestamps", &opts.Timestamps}} {
		if v := q.Get(b.name); v != "" {
			ok, err := strconv.ParseBool(v)
			if err != nil {
				return opts, badRequest("%s=%q: use %s=true or %s=false", b.name, v, b.name, b.name)
			}
			*b.to = ok
		}
	}
	if v := q.Get("tailLines"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return opts, badRequest("tailLines=%q: must be a whole number, 0 or more (leave it out for every line)", v)
		}
		opts.TailLines = n
	}
	secs, ts := q.Get("sinceSeconds"), q.Get("sinceTime")
	switch {
	case secs != "" && ts != "":
		return opts, badRequest("sinceSeconds and sinceTime both given: give one")
	case secs != "":
		n, err := strconv.ParseInt(secs, 10, 64)
		if err != nil || n < 1 {
			return opts, badRequest("sinceSeconds=%q: must be a whole number of seconds, 1 or more", secs)
		}
		d := maxSince
		if n < int64(maxSince/time.Second) {
			d = time.Duration(n) * time.Second
		}
		opts.Since = now.Add(-d)
	case ts != "":
		t, err := time.Parse(time.RFC3339, ts)
		if err != nil {
			return opts, badRequest("sinceTime=%q: must be an RFC 3339 time such as 2026-12-03T05:00:00Z", ts)
		}
		opts.Since = t
	}
	return opts, nil
}

// logs streams an instance's container log from the agent of its node
// (GET .../instances/{name}/log), as text, flushed as it comes, until
// the log ends or, following, the client goes away.
func (s *Server) logs(w http.ResponseWriter, r *request) error {
	opts, err := logOptions(r.query, s.now())
	if err != nil {
		return err
	}
	ctx := r.http.Context()
	inst, conn, err := s.instanceNode(r)
	if err != nil {
		return err
	}
	return streamLog(ctx, w, conn, inst, opts, s.log, func() { s.audited(r, http.StatusOK, nil) })
}

// streamLog opens inst's log through conn and streams it; started is
// called once the answer starts. The API serves it, and a node's agent
// serves it to the API (NodeHandler), with the same code.
func streamLog(ctx context.Context, w http.ResponseWriter, conn NodeConn, inst *types.Instance, opts types.LogOptions, log *slog.Logger, started func()) error {
	ref, node := inst.Namespace+"/"+inst.Name, inst.Spec.NodeName
	rc, err := conn.Logs(ctx, inst, opts)
	if errors.Is(err, fs.ErrNotExist) {
		return problem(http.StatusNotFound, "NotFound", "%v", err)
	} else if err != nil {
		return problem(http.StatusBadGateway, "BadGateway", "node %s could not read the log of instance %s: %v", node, ref, err)
	}
	defer rc.Close()
	flusher, ok := w.(http.Flusher)
	if !ok {
		return errors.New("the connection cannot stream")
	}
	started()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return errResponseStarted
			}
			flusher.Flush()
		}
		if err != nil {
			// Once the answer has started its status cannot change: a
			// stream the node broke off just ends, and is logged here.
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log.Warn("an instance's log stream broke off", "instance", ref, "node", node, "err", err)
			}
			return errResponseStarted
		}
	}
}
