package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"nexus.dev/nexus/api/types"
)

// LogOptions select what of an instance's log to read.
type LogOptions struct {
	// Follow keeps the stream open, delivering new output as it is
	// written, until ctx ends, the stream is closed or the instance goes.
	Follow bool
	// TailLines is how many of the last lines to read; negative for all.
	TailLines int
	// Since drops lines written before it; SinceSeconds (by the server's
	// clock, so a client's wrong clock does not matter) instead drops
	// those older than that many seconds. Zero for neither.
	Since        time.Time
	SinceSeconds int64
	// Timestamps starts each line with the time it was written
	// (RFC 3339 with nanoseconds, UTC).
	Timestamps bool
}

// Logs opens the log of instance name in ns, as text, one line of the
// container's stdout and stderr per line. The caller closes it. Errors
// of the request (no such instance, not scheduled yet, its node's agent
// not connected, no permission) are returned here.
func (c *Client) Logs(ctx context.Context, ns, name string, opts LogOptions) (io.ReadCloser, error) {
	instances, _ := types.LookupResource("instances")
	p, err := path(instances, ns, name)
	if err != nil {
		return nil, err
	}
	if !opts.Since.IsZero() && opts.SinceSeconds != 0 {
		return nil, fmt.Errorf("log of instance %s/%s: give Since or SinceSeconds, not both", ns, name)
	}
	q := url.Values{}
	if opts.Follow {
		q.Set("follow", "true")
	}
	if opts.TailLines >= 0 {
		q.Set("tailLines", strconv.Itoa(opts.TailLines))
	}
	if !opts.Since.IsZero() {
		q.Set("sinceTime", opts.Since.UTC().Format(time.RFC3339Nano))
	}
	if opts.SinceSeconds != 0 {
		q.Set("sinceSeconds", strconv.FormatInt(opts.SinceSeconds, 10))
	}
	if opts.Timestamps {
		q.Set("timestamps", "true")
	}
	resp, err := c.do(ctx, request{method: http.MethodGet, path: p + "/log", query: q, stream: true})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// ParseSince reads a --since value: a duration back from now ("5m",
// "1h30m"), returned as whole seconds (LogOptions.SinceSeconds, counted by
// the server's clock), or an RFC 3339 time (LogOptions.Since).
func ParseSince(s string) (since time.Time, seconds int64, err error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return since, 0, fmt.Errorf("since %q: a duration must be positive, e.g. 5m", s)
		}
		return since, int64((d + time.Second - 1) / time.Second), nil
	}
	since, err = time.Parse(time.RFC3339, s)
	if err != nil {
		return since, 0, fmt.Errorf("since %q: give a duration such as 30s, 5m or 2h, or an RFC 3339 time such as 2026-12-03T05:00:00Z", s)
	}
	return since, 0, nil
}
