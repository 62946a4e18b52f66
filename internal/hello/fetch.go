package hello

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"syscall"
	"time"
)

// FetchTimeout bounds one fetch: connecting, the request and the body.
const FetchTimeout = 10 * time.Second

// maxFetchBody bounds what fetch copies to stdout.
const maxFetchBody = 1 << 20

// maxFetchCount bounds -n.
const maxFetchCount = 100_000

const fetchUsage = `usage: fetch [-4|-6] [-n N | -hold DURATION [-every INTERVAL]] http://HOST:PORT/PATH
  (IPv6 hosts in brackets)
  -4, -6          connect over IPv4 or IPv6 only (a name resolving to both)
  -n N            N requests, each on a new connection; print how many answers
                  began with each first line ("hello from <instance>" for the
                  built-in server) and each error, as "COUNT LINE" lines
  -hold DURATION  one kept-alive connection, a request every -every (default
                  100ms) for DURATION; print the tally as -n does, and fail if
                  a request fails or the connection had to be made again`

// Fetch is the built-in image's `fetch URL` applet, a minimal `wget -qO-`:
// it GETs an http:// URL, writes the body to stdout and returns 0 for a
// 2xx answer, 1 for any other answer or a failed request (the reason on
// stderr) and 2 for bad arguments. It lets a test or a user check from
// inside one container that another answers (`nexus exec web-x -- fetch
// http://[fd00::5]:8080/`) in an image without a shell. With -n it makes
// many connections and tallies who answered (how a service spreads new
// connections); with -hold it keeps one connection for a while (that an
// established connection lives through a change of the service).
func Fetch(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fetch", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	v4 := fs.Bool("4", false, "")
	v6 := fs.Bool("6", false, "")
	count := fs.Int("n", 0, "")
	hold := fs.Duration("hold", 0, "")
	every := fs.Duration("every", 100*time.Millisecond, "")
	bad := func(msg string) int {
		fmt.Fprintf(stderr, "fetch: %s\n%s\n", msg, fetchUsage)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		return bad(err.Error())
	}
	switch {
	case fs.NArg() != 1:
		return bad("want one URL")
	case !strings.HasPrefix(fs.Arg(0), "http://"):
		return bad(fmt.Sprintf("%q: only http:// URLs", fs.Arg(0)))
	case *v4 && *v6:
		return bad("-4 and -6 exclude each other")
	case *count < 0 || *count > maxFetchCount:
		return bad(fmt.Sprintf("-n %d: want 1 to %d", *count, maxFetchCount))
	case *count > 0 && *hold > 0:
		return bad("-n and -hold exclude each other")
	case *hold < 0 || *every <= 0:
		return bad("-hold and -every want positive durations")
	}
	network := "tcp"
	if *v4 {
		network = "tcp4"
	} else if *v6 {
		network = "tcp6"
	}
	f := &fetcher{url: fs.Arg(0), network: network, stdout: stdout, stderr: stderr}
	switch {
	case *count > 0:
		return f.many(*count)
	case *hold > 0:
		return f.hold(*hold, *every)
	}
	return f.once()
}

type fetcher struct {
	url, network   string
	stdout, stderr io.Writer
}

func (f *fetcher) client(keepAlive bool) *http.Client {
	d := &net.Dialer{Timeout: FetchTimeout}
	return &http.Client{Timeout: FetchTimeout, Transport: &http.Transport{
		DisableKeepAlives: !keepAlive,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return d.DialContext(ctx, f.network, addr)
		},
	}}
}

// get sends one request; it returns the body (up to limit) of a 2xx
// answer.
func (f *fetcher) get(ctx context.Context, c *http.Client, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, fmt.Errorf("reading the body: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body) // keep the connection reusable
	if resp.StatusCode/100 != 2 {
		return body, fmt.Errorf("%s answered %s", f.url, resp.Status)
	}
	return body, nil
}

func (f *fetcher) once() int {
	ctx, cancel := context.WithTimeout(context.Background(), FetchTimeout)
	defer cancel()
	body, err := f.get(ctx, f.client(false), maxFetchBody)
	f.stdout.Write(body)
	if err != nil {
		fmt.Fprintln(f.stderr, "fetch:", err)
		return 1
	}
	return 0
}

// many makes n requests, each on its own connection, and prints the tally.
func (f *fetcher) many(n int) int {
	c := f.client(false)
	tally := map[string]int{}
	failed := 0
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), FetchTimeout)
		body, err := f.get(ctx, c, 4096)
		cancel()
		if err != nil {
			failed++
			tally["error: "+errorKind(err)]++
			continue
		}
		tally[firstLine(body)]++
	}
	printTally(f.stdout, tally)
	if failed > 0 {
		fmt.Fprintf(f.stderr, "fetch: %d of %d requests failed\n", failed, n)
		return 1
	}
	return 0
}

// hold keeps one connection for d, a request every interval.
func (f *fetcher) hold(d, interval time.Duration) int {
	c := f.client(true)
	tally := map[string]int{}
	conns, failed := 0, 0
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if !i.Reused {
			conns++
		}
	}}
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		ctx, cancel := context.WithTimeout(httptrace.WithClientTrace(context.Background(), trace), FetchTimeout)
		body, err := f.get(ctx, c, 4096)
		cancel()
		if err != nil {
			failed++
			tally["error: "+errorKind(err)]++
		} else {
			tally[firstLine(body)]++
		}
		time.Sleep(interval)
	}
	printTally(f.stdout, tally)
	switch {
	case failed > 0:
		fmt.Fprintf(f.stderr, "fetch: %d requests failed on the held connection\n", failed)
		return 1
	case conns != 1:
		fmt.Fprintf(f.stderr, "fetch: the connection was made %d times: it did not live through\n", conns)
		return 1
	}
	return 0
}

func firstLine(body []byte) string {
	line, _, _ := strings.Cut(string(body), "\n")
	return strings.TrimSpace(line)
}

// errorKind names a failed request's cause shortly, so that the tally
// groups alike failures (the addresses in the message differ).
func errorKind(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return "timed out"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	return err.Error()
}

func printTally(w io.Writer, tally map[string]int) {
	for _, k := range slices.Sorted(maps.Keys(tally)) {
		fmt.Fprintf(w, "%d %s\n", tally[k], k)
	}
}
