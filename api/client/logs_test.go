package client_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/api"
	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/api/types"
)

func TestParseSince(t *testing.T) {
	for _, tc := range []struct {
		in      string
		seconds int64
		since   time.Time
		err     string
	}{
		{in: "5m", seconds: 300},
		{in: "1h30m", seconds: 5400},
		{in: "1500ms", seconds: 2}, // rounded up: never less than asked for
		{in: "2026-12-03T05:00:00Z", since: time.Date(2026, 12, 3, 5, 0, 0, 0, time.UTC)},
		{in: "2026-12-03T06:00:00+01:00", since: time.Date(2026, 12, 3, 5, 0, 0, 0, time.UTC)},
		{in: "0s", err: "must be positive"},
		{in: "-5m", err: "must be positive"},
		{in: "5", err: "give a duration such as 30s"},
		{in: "yesterday", err: "or an RFC 3339 time"},
		{in: "", err: "give a duration"},
	} {
		since, secs, err := client.ParseSince(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want an error saying %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || secs != tc.seconds || !since.Equal(tc.since) {
			t.Errorf("%q: %v %d %v", tc.in, since, secs, err)
		}
	}
}

// logNode is node n1's connection (api.NodeConn) in TestLogs: each read
// of a log hands the test what it was asked for and the writing end of
// its stream, which ends when the test closes it or, as the agent's
// does, when the request's context ends. Instance "gone" has no log on
// the node, and reading "broken" fails there.
type logNode struct{ reads chan logRead }

type logRead struct {
	opts  types.LogOptions
	w     *io.PipeWriter
	ended chan struct{} // closed when the request's context ends
}

func (n *logNode) Logs(ctx context.Context, inst *types.Instance, opts types.LogOptions) (io.ReadCloser, error) {
	switch inst.Name {
	case "gone":
		return nil, fmt.Errorf("instance default/gone has no log on node n1 yet: %w", fs.ErrNotExist)
	case "broken":
		return nil, errors.New("read container.log: input/output error")
	}
	pr, pw := io.Pipe()
	ended := make(chan struct{})
	context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()); close(ended) })
	n.reads <- logRead{opts: opts, w: pw, ended: ended}
	return pr, nil
}

func (n *logNode) Exec(context.Context, *types.Instance, types.ExecOptions, types.ExecStreams) (int, error) {
	return -1, errors.New("node n1 of TestLogs runs no processes")
}

// TestLogs: what Logs is given reaches the node's agent as the options
// of its read (since as a time or as seconds by the server's clock,
// tail, timestamps, follow); the log streams back as the node writes it,
// flushed line by line while followed; a follower counts against its
// identity's watch limit and gives its slot back, and ends the node's
// read, when it goes; a node without the log is NotFound, one that fails
// 502 saying why.
func TestLogs(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{
		Limits: api.Limits{RequestsPerSecond: 1000, Burst: 1000, MaxInFlight: 64, MaxBodyBytes: 1 << 20, MaxWatches: 2}})
	cli := newClient(t, settings(t, c, false, "admin"))
	for _, name := range []string{"web-1", "gone", "broken"} {
		inst := &types.Instance{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Instance"},
			ObjectMeta: types.ObjectMeta{Name: name, Namespace: "default"}}
		inst.Spec.NodeName, inst.Spec.Template.Image = "n1", "a"
		mustCreate(t, cli, inst)
	}
	node := &logNode{reads: make(chan logRead, 8)}
	t.Cleanup(c.Server.Nodes().Register("n1", node))
	ctx := context.Background()
	nextRead := func() logRead {
		t.Helper()
		select {
		case r := <-node.reads:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("the node was not asked for the log within 10 s")
			return logRead{}
		}
	}

	// A read to the log's end: the options as the node gets them.
	before := time.Now()
	rc, err := cli.Logs(ctx, "default", "web-1", client.LogOptions{TailLines: 5, SinceSeconds: 300, Timestamps: true})
	if err != nil {
		t.Fatal(err)
	}
	r := nextRead()
	if o := r.opts; o.Follow || o.TailLines != 5 || !o.Timestamps ||
		o.Since.Before(before.Add(-300*time.Second).Add(-time.Second)) || o.Since.After(time.Now().Add(-300*time.Second)) {
		t.Errorf("tail 5, the last 300 s, timestamps: the node was asked for %+v", o)
	}
	go func() { io.WriteString(r.w, "a\nb\n"); r.w.Close() }()
	if b, err := io.ReadAll(rc); err != nil || string(b) != "a\nb\n" {
		t.Errorf("the log read %q, %v; want the node's \"a\\nb\\n\"", b, err)
	}
	rc.Close()

	since := time.Date(2026, 12, 3, 6, 0, 0, 123456789, time.FixedZone("CET", 3600))
	rc, err = cli.Logs(ctx, "default", "web-1", client.LogOptions{TailLines: -1, Since: since})
	if err != nil {
		t.Fatal(err)
	}
	r = nextRead()
	if o := r.opts; o.TailLines != -1 || !o.Since.Equal(since) || o.Timestamps {
		t.Errorf("every line since %v: the node was asked for %+v", since, o)
	}
	r.w.Close()
	rc.Close()

	if _, err := cli.Logs(ctx, "default", "web-1", client.LogOptions{TailLines: -1, Since: since, SinceSeconds: 60}); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("Since and SinceSeconds both: %v", err)
	}

	// Followed: each line arrives while the stream stays open.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	follower, err := cli.Logs(fctx, "default", "web-1", client.LogOptions{Follow: true, TailLines: 0})
	if err != nil {
		t.Fatal(err)
	}
	first := nextRead()
	if !first.opts.Follow || first.opts.TailLines != 0 {
		t.Errorf("follow from the end: the node was asked for %+v", first.opts)
	}
	lines := bufio.NewReader(follower)
	for _, want := range []string{"one\n", "two\n"} {
		go io.WriteString(first.w, want)
		got := make(chan string, 1)
		go func() { l, _ := lines.ReadString('\n'); got <- l }()
		select {
		case l := <-got:
			if l != want {
				t.Fatalf("followed %q, want %q", l, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q written by the node did not reach a follower within 10 s", want)
		}
	}

	// The watch limit (2): a second follower is let in, a third is not,
	// and a read that does not follow does not count.
	second, err := cli.Logs(ctx, "default", "web-1", client.LogOptions{Follow: true, TailLines: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	nextRead()
	hc := c.HTTPClient(t, c.User(t, "admin"), false)
	hc.Timeout = 10 * time.Second // were it let in, it would not end
	resp, err := hc.Get(c.URL() + "/v1/namespaces/default/instances/web-1/log?follow=true")
	if err != nil {
		t.Fatalf("a third follower with a limit of 2: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "2 watches, followed logs and execs open") {
		t.Errorf("a third follower with a limit of 2: %d %s", resp.StatusCode, body)
	}
	_, err = cli.Logs(ctx, "default", "gone", client.LogOptions{TailLines: -1})
	if !client.IsNotFound(err) || !strings.Contains(err.Error(), "instance default/gone has no log on node n1 yet") {
		t.Errorf("a log the node does not have, at the watch limit: %v", err)
	}
	var ae *client.APIError
	_, err = cli.Logs(ctx, "default", "broken", client.LogOptions{TailLines: -1})
	if !errors.As(err, &ae) || ae.Status != http.StatusBadGateway || !strings.Contains(ae.Detail, "node n1 could not read the log of instance default/broken: read container.log: input/output error") {
		t.Errorf("a log the node fails to read: %v", err)
	}

	// A follower that goes away ends the node's read and frees its slot
	// (the client waits out the 429s until it is free).
	cancel()
	follower.Close()
	select {
	case <-first.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the node's read went on 10 s after its follower went away")
	}
	third, err := cli.Logs(ctx, "default", "web-1", client.LogOptions{Follow: true, TailLines: 0})
	if err != nil {
		t.Fatalf("a follower after one went away: %v", err)
	}
	third.Close()
}
