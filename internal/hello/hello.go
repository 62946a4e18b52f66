// Package hello is a small HTTP server that reports where it runs: the
// hostname, the interface addresses, a request counter and the request as it
// arrived. It is the entrypoint of Nexus's built-in image (`nexus hello`), so
// demos and tests can start a real, networked container without a registry,
// and see from the answer which container served them.
package hello

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// ShutdownTimeout bounds how long Serve waits for requests in flight once
// its context ends; a container runtime sends SIGKILL soon after SIGTERM.
const ShutdownTimeout = 5 * time.Second

// Config configures a Handler.
type Config struct {
	// Message is an optional line added to every report.
	Message string
	// Logger receives one debug line per request; nil means slog.Default().
	Logger *slog.Logger
	// AccessLog, when set, receives one line per report served ("request
	// 3: GET / from 10.0.0.1:4711"), as web servers write access logs to
	// stdout; health checks are left out, or every probe period would add
	// a line. Requests are served concurrently, so it takes concurrent
	// writes (os.Stdout does: one write(2) per line).
	AccessLog io.Writer
	// Hostname and Addresses default to the machine's (os.Hostname and
	// net.InterfaceAddrs); tests replace them.
	Hostname  func() (string, error)
	Addresses func() ([]Address, error)
	// Now defaults to time.Now.
	Now func() time.Time
}

// Address is one address of one network interface.
type Address struct {
	Interface string `json:"interface"`
	Address   string `json:"address"` // in CIDR form, e.g. "10.0.0.2/24"
	Loopback  bool   `json:"loopback"`
}

// Report is what the server answers on "/", as text or as JSON.
type Report struct {
	Message    string              `json:"message,omitempty"`
	Hostname   string              `json:"hostname"`
	Addresses  []Address           `json:"addresses"`
	Request    uint64              `json:"request"` // 1 for the first request this server answered
	Method     string              `json:"method"`
	Path       string              `json:"path"`
	RemoteAddr string              `json:"remoteAddr"`
	Headers    map[string][]string `json:"headers"`
	Started    time.Time           `json:"started"`
	Uptime     string              `json:"uptime"`
}

// MaxBytes bounds the body "/bytes?n=N" sends: a gibibyte is seconds of
// traffic even between containers on one node, and a bound keeps a typo
// from streaming for hours.
const MaxBytes = 1 << 30

// Handler serves "/" (the report), "/healthz" ("ok", or 503 after
// "/healthz/fail" until "/healthz/pass") and "/bytes?n=N" (N zero bytes, a
// body of known size for throughput measurements).
type Handler struct {
	cfg      Config
	started  time.Time
	requests atomic.Uint64
	failing  atomic.Bool // /healthz answers 503
	mux      *http.ServeMux
	zeros    []byte // what /bytes writes, one chunk at a time
}

// NewHandler returns a Handler whose uptime counts from now.
func NewHandler(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Hostname == nil {
		cfg.Hostname = os.Hostname
	}
	if cfg.Addresses == nil {
		cfg.Addresses = InterfaceAddresses
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cfg: cfg, started: cfg.Now(), zeros: make([]byte, 64<<10)}
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if h.failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "failing (GET /healthz/pass to undo)\n")
			return
		}
		io.WriteString(w, "ok\n")
	})
	// A test turns the health check off and on from outside, to see a
	// readiness probe fail.
	h.mux.HandleFunc("/healthz/fail", func(w http.ResponseWriter, _ *http.Request) {
		h.failing.Store(true)
		io.WriteString(w, "/healthz now answers 503\n")
	})
	h.mux.HandleFunc("/healthz/pass", func(w http.ResponseWriter, _ *http.Request) {
		h.failing.Store(false)
		io.WriteString(w, "/healthz now answers ok\n")
	})
	h.mux.HandleFunc("/bytes", h.serveBytes)
	h.mux.HandleFunc("/", h.serveReport)
	return h
}

// ServeHTTP logs the request and dispatches it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.cfg.Logger.Debug("request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) serveReport(w http.ResponseWriter, r *http.Request) {
	rep := h.report(r)
	if h.cfg.AccessLog != nil {
		fmt.Fprintf(h.cfg.AccessLog, "request %d: %s %s from %s\n", rep.Request, rep.Method, rep.Path, rep.RemoteAddr)
	}
	if wantsJSON(r.Header.Get("Accept")) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, rep.Text())
}

// serveBytes answers "/bytes?n=N" with N zero bytes and their
// Content-Length, so that the connection stays open for the next request
// (bench/services measures bulk throughput with it). Like health checks
// it is left out of the access log: a line per answer would add a write
// to the container's log, and its cost, to every measured request.
func (h *Handler) serveBytes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("n")
	n, err := strconv.ParseInt(q, 10, 64)
	if err != nil || n < 0 || n > MaxBytes {
		http.Error(w, fmt.Sprintf("/bytes?n=N: n is %q: give a whole number of bytes from 0 to %d", q, MaxBytes), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	if r.Method == http.MethodHead {
		return
	}
	for n > 0 {
		k := min(n, int64(len(h.zeros)))
		if _, err := w.Write(h.zeros[:k]); err != nil {
			return // the client went away; nothing to answer it
		}
		n -= k
	}
}

// report counts the request and describes it. A failure to read the
// hostname or the addresses is reported in the answer rather than failing
// it: the counter and the echo are still worth having.
func (h *Handler) report(r *http.Request) Report {
	now := h.cfg.Now()
	rep := Report{
		Message:    h.cfg.Message,
		Request:    h.requests.Add(1),
		Method:     r.Method,
		Path:       r.URL.RequestURI(),
		RemoteAddr: r.RemoteAddr,
		Headers:    map[string][]string(r.Header.Clone()),
		Started:    h.started.UTC(),
		Uptime:     now.Sub(h.started).Round(time.Millisecond).String(),
	}
	if r.Host != "" {
		rep.Headers["Host"] = []string{r.Host}
	}
	var err error
	if rep.Hostname, err = h.cfg.Hostname(); err != nil {
		rep.Hostname = "unknown (" + err.Error() + ")"
	}
	if rep.Addresses, err = h.cfg.Addresses(); err != nil {
		h.cfg.Logger.Warn("list interface addresses", "err", err)
	}
	if rep.Addresses == nil {
		rep.Addresses = []Address{}
	}
	return rep
}

// Text renders the report for people and for curl.
func (rep Report) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "hello from %s\n", rep.Hostname)
	if rep.Message != "" {
		fmt.Fprintf(&b, "%s\n", rep.Message)
	}
	fmt.Fprintf(&b, "request %d: %s %s from %s\n", rep.Request, rep.Method, rep.Path, rep.RemoteAddr)
	b.WriteString("addresses:\n")
	for _, a := range rep.Addresses {
		fmt.Fprintf(&b, "  %-10s %s\n", a.Interface, a.Address)
	}
	b.WriteString("headers:\n")
	for _, k := range slices.Sorted(maps.Keys(rep.Headers)) {
		for _, v := range rep.Headers[k] {
			fmt.Fprintf(&b, "  %s: %s\n", k, v)
		}
	}
	fmt.Fprintf(&b, "started %s, up %s\n", rep.Started.Format(time.RFC3339), rep.Uptime)
	return b.String()
}

// wantsJSON reports whether an Accept header prefers JSON to text. Any
// listed JSON type counts unless it is refused with q=0.
func wantsJSON(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if mt == "application/json" && params["q"] != "0" {
			return true
		}
	}
	return false
}

// InterfaceAddresses lists the addresses of every interface that is up,
// non-loopback interfaces first, each group in name order.
func InterfaceAddresses() ([]Address, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	var out []Address
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", ifc.Name, err)
		}
		for _, a := range addrs {
			out = append(out, Address{Interface: ifc.Name, Address: a.String(), Loopback: ifc.Flags&net.FlagLoopback != 0})
		}
	}
	slices.SortStableFunc(out, func(a, b Address) int {
		if a.Loopback != b.Loopback {
			if a.Loopback {
				return 1
			}
			return -1
		}
		return strings.Compare(a.Interface, b.Interface)
	})
	return out, nil
}

// Serve answers HTTP on ln with h until ctx ends, then shuts down
// gracefully: it stops accepting, lets requests in flight finish for up to
// ShutdownTimeout and closes what remains. It returns nil after a shutdown
// that ctx asked for.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		srv.Close()
		err = nil // requests cut short are the cost of a bounded stop, not a failure
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), serr)
	}
	return err
}

// applets are the built-in image's programs besides its server, by the
// name the image links to its executable under (runtime/image/builtin):
// called by that name, the executable runs the applet, as busybox does,
// so that `nexus exec INSTANCE -- hostname` has something to run in an
// image without a shell. Each returns its exit code.
var applets = map[string]func(args []string, stdout, stderr io.Writer) int{
	"hostname": Hostname,
	"fetch":    Fetch,
	"resolve":  Resolve,
}

// Applet returns the applet called name, if there is one.
func Applet(name string) (run func(args []string, stdout, stderr io.Writer) int, ok bool) {
	run, ok = applets[name]
	return run, ok
}

// AppletNames are the names of the applets, sorted.
func AppletNames() []string { return slices.Sorted(maps.Keys(applets)) }

// Hostname is the built-in image's `hostname` applet: like hostname(1)
// without arguments it prints the host name (in a container, the
// instance's name). It returns the exit code.
func Hostname(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "hostname: this hostname only prints the host name; it takes no arguments")
		return 2
	}
	h, err := os.Hostname()
	if err != nil {
		fmt.Fprintln(stderr, "hostname:", err)
		return 1
	}
	fmt.Fprintln(stdout, h)
	return 0
}
