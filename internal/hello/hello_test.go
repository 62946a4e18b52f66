package hello

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"nexus.dev/nexus/internal/testutil"
)

func testHandler(t *testing.T, logs io.Writer) *Handler {
	t.Helper()
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := start
	var mu sync.Mutex
	return NewHandler(Config{
		Message:  "greetings",
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Hostname: func() (string, error) { return "box-1", nil },
		Addresses: func() ([]Address, error) {
			return []Address{{"eth0", "fd00::2/64", false}, {"lo", "127.0.0.1/8", true}}, nil
		},
		Now: func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			now = now.Add(time.Second)
			return now
		},
	})
}

func get(t *testing.T, h http.Handler, path, accept string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest("GET", path, nil)
	r.Header.Set("X-Probe", "p1")
	if accept != "" {
		r.Header.Set("Accept", accept)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestTextReportCountsRequests(t *testing.T) {
	h := testHandler(t, io.Discard)
	for i, want := range []string{"request 1: GET /a?b=c from", "request 2: GET /a?b=c from"} {
		w := get(t, h, "/a?b=c", "")
		body := w.Body.String()
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
			t.Fatalf("request %d: status %d, type %q", i+1, w.Code, w.Header().Get("Content-Type"))
		}
		for _, s := range []string{"hello from box-1\n", "greetings\n", want, "eth0", "fd00::2/64", "127.0.0.1/8", "X-Probe: p1", "started 2026-01-02T03:04:06Z"} {
			if !strings.Contains(body, s) {
				t.Errorf("request %d: answer lacks %q:\n%s", i+1, s, body)
			}
		}
	}
}

func TestJSONReportOnAccept(t *testing.T) {
	h := testHandler(t, io.Discard)
	get(t, h, "/", "")
	for _, accept := range []string{"application/json", "text/html, application/json;q=0.9"} {
		w := get(t, h, "/x", accept)
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("Accept %q: Content-Type %q", accept, ct)
		}
		var rep Report
		if err := json.Unmarshal(w.Body.Bytes(), &rep); err != nil {
			t.Fatalf("Accept %q: %v\n%s", accept, err, w.Body)
		}
		if rep.Hostname != "box-1" || rep.Path != "/x" || rep.Method != "GET" || rep.Message != "greetings" ||
			len(rep.Addresses) != 2 || rep.Headers["X-Probe"][0] != "p1" || rep.Uptime == "" {
			t.Errorf("Accept %q: report %+v", accept, rep)
		}
	}
	// Requests are counted whatever their form.
	var rep Report
	json.Unmarshal(get(t, h, "/", "application/json").Body.Bytes(), &rep)
	if rep.Request != 4 {
		t.Errorf("fourth request reported as %d", rep.Request)
	}
	if w := get(t, h, "/", "application/json;q=0, text/plain"); !strings.HasPrefix(w.Body.String(), "hello from") {
		t.Errorf("JSON refused with q=0 still got %q", w.Body)
	}
}

func TestHealthz(t *testing.T) {
	var logs bytes.Buffer
	h := testHandler(t, &logs)
	w := get(t, h, "/healthz", "")
	if w.Code != 200 || w.Body.String() != "ok\n" {
		t.Fatalf("healthz: %d %q", w.Code, w.Body)
	}
	if !strings.Contains(logs.String(), "level=DEBUG msg=request method=GET path=/healthz") {
		t.Errorf("no debug line per request: %q", logs.String())
	}
}

// TestBytes: /bytes?n=N answers N zero bytes with their length, and a
// client reads several such answers over one kept-alive connection (what
// bench/services' throughput figure relies on); none is in the access log.
func TestBytes(t *testing.T) {
	var access bytes.Buffer
	h := NewHandler(Config{AccessLog: &access, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewUnstartedServer(h)
	var conns sync.Map
	srv.Config.ConnState = func(c net.Conn, _ http.ConnState) { conns.Store(c, true) }
	srv.Start()
	defer srv.Close()
	for _, n := range []int{0, 1, 65536, 1<<20 + 3} {
		resp, err := srv.Client().Get(fmt.Sprintf("%s/bytes?n=%d", srv.URL, n))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.ContentLength != int64(n) || len(body) != n {
			t.Fatalf("n=%d: status %d, Content-Length %d, %d bytes read", n, resp.StatusCode, resp.ContentLength, len(body))
		}
		if !bytes.Equal(body, make([]byte, n)) {
			t.Fatalf("n=%d: the body is not all zero bytes", n)
		}
	}
	count := 0
	conns.Range(func(any, any) bool { count++; return true })
	if count != 1 {
		t.Errorf("4 requests in turn took %d connections, want 1 (kept alive)", count)
	}
	if access.Len() != 0 {
		t.Errorf("/bytes wrote to the access log: %q", access.String())
	}
}

func TestBytesRejectsBadSizes(t *testing.T) {
	h := NewHandler(Config{Logger: slog.New(slog.DiscardHandler)})
	for _, q := range []string{"", "?n=", "?n=-1", "?n=abc", "?n=1.5", fmt.Sprintf("?n=%d", MaxBytes+1)} {
		w := get(t, h, "/bytes"+q, "")
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "give a whole number of bytes from 0 to 1073741824") {
			t.Errorf("/bytes%s: %d %q, want 400 saying what to give", q, w.Code, w.Body)
		}
	}
}

// TestAccessLog: every report served is one line of the access log (what
// `nexus logs` shows of the built-in image); health checks are not.
func TestAccessLog(t *testing.T) {
	var access bytes.Buffer
	h := NewHandler(Config{AccessLog: &access, Logger: slog.New(slog.DiscardHandler)})
	get(t, h, "/a", "")
	get(t, h, "/healthz", "")
	get(t, h, "/b?c=d", "application/json")
	want := "request 1: GET /a from 192.0.2.1:1234\nrequest 2: GET /b?c=d from 192.0.2.1:1234\n"
	if access.String() != want {
		t.Fatalf("access log:\n%s\nwant:\n%s", access.String(), want)
	}
}

func TestConcurrentRequestsGetDistinctNumbers(t *testing.T) {
	h := testHandler(t, io.Discard)
	const n = 50
	seen := make(chan uint64, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			var rep Report
			json.Unmarshal(get(t, h, "/", "application/json").Body.Bytes(), &rep)
			seen <- rep.Request
		})
	}
	wg.Wait()
	close(seen)
	got := map[uint64]bool{}
	for r := range seen {
		got[r] = true
	}
	for i := uint64(1); i <= n; i++ {
		if !got[i] {
			t.Fatalf("request number %d never given: %v", i, got)
		}
	}
}

func TestReportSurvivesHostnameFailure(t *testing.T) {
	h := NewHandler(Config{
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Hostname:  func() (string, error) { return "", errors.New("no uts") },
		Addresses: func() ([]Address, error) { return nil, errors.New("no netlink") },
	})
	w := get(t, h, "/", "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), "hello from unknown (no uts)") {
		t.Fatalf("%d %q", w.Code, w.Body)
	}
}

func TestInterfaceAddressesListsLoopbackLast(t *testing.T) {
	addrs, err := InterfaceAddresses()
	if err != nil {
		t.Fatal(err)
	}
	sawLoopback := false
	for _, a := range addrs {
		if a.Loopback {
			sawLoopback = true
		} else if sawLoopback {
			t.Fatalf("non-loopback %v after a loopback address: %v", a, addrs)
		}
	}
	if !sawLoopback {
		testutil.Missing(t, "no loopback interface is up here")
	}
}

func TestServeShutsDownWhenContextEnds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, testHandler(t, io.Discard)) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(ShutdownTimeout + 2*time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("still accepting connections after shutdown")
	}
}

// TestHostnameApplet: the built-in image's hostname prints the host name
// and refuses arguments (it does not set the name).
func TestHostnameApplet(t *testing.T) {
	want, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := Hostname(nil, &out, &errOut); code != 0 || out.String() != want+"\n" {
		t.Fatalf("hostname: code %d, %q (stderr %q); want %q", code, out.String(), errOut.String(), want)
	}
	out.Reset()
	if code := Hostname([]string{"other"}, &out, &errOut); code != 2 || out.Len() != 0 || !strings.Contains(errOut.String(), "no arguments") {
		t.Fatalf("hostname other: code %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
}

// TestFetchApplet: fetch prints the body of a 2xx answer and exits 0, and
// exits 1 for an error status or a refused connection and 2 for bad
// arguments, saying why on stderr.
func TestFetchApplet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.Error(w, "no such page", http.StatusNotFound)
			return
		}
		fmt.Fprintf(w, "page %s", r.URL.Path)
	}))
	defer srv.Close()
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := Fetch(args, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	if code, out, errOut := run(srv.URL + "/hello"); code != 0 || out != "page /hello" {
		t.Fatalf("fetch /hello: code %d, %q (stderr %q)", code, out, errOut)
	}
	if code, _, errOut := run(srv.URL + "/missing"); code != 1 || !strings.Contains(errOut, "404") {
		t.Fatalf("fetch /missing: code %d, stderr %q", code, errOut)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/"
	ln.Close()
	if code, _, errOut := run(closed); code != 1 || !strings.Contains(errOut, "refused") {
		t.Fatalf("fetch of a closed port: code %d, stderr %q", code, errOut)
	}
	for _, args := range [][]string{nil, {"a", "b"}, {"https://example.test/"}} {
		if code, _, errOut := run(args...); code != 2 || errOut == "" {
			t.Fatalf("fetch %q: code %d, stderr %q; want 2 and a reason", args, code, errOut)
		}
	}
}
