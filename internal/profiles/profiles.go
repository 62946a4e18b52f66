// Package profiles serves Go's runtime profiles (net/http/pprof: CPU,
// heap, goroutines, traces) on a mux of the caller's, never on
// http.DefaultServeMux, for `nexus store --enable-pprof` and
// `nexus up --pprof-addr`.
package profiles

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"time"
)

// Register adds the profiles under /debug/pprof/ to mux.
func Register(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// ServeLoopback serves the profiles on addr (host:port), which must be a
// loopback address: they need no authentication, so anyone who reaches
// them can read them. It returns their URL and a function that stops
// serving them.
func ServeLoopback(addr string) (url string, stop func(), err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, fmt.Errorf("%q: %w (want host:port, e.g. 127.0.0.1:6060)", addr, err)
	}
	if ip, perr := netip.ParseAddr(host); host != "localhost" && (perr != nil || !ip.IsLoopback()) {
		return "", nil, fmt.Errorf("%s: must be a loopback address, e.g. 127.0.0.1:6060: the profiles are served without authentication", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	Register(mux)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/debug/pprof/", func() { _ = srv.Close() }, nil
}
