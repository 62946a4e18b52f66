// Command apibench is the driver of bench/api: it runs a real `nexus server`
// (embedded store) and measures, in one run and interleaved with its peer:
//
//   - authenticated GET of one object (requests/s, p50, p99) against a bare
//     net/http handler serving the same bytes over the same TLS (mutual, the
//     server's own certificate), in this process, to the same clients (one
//     identity and connection each);
//   - create throughput (objects/s) against raw etcd-client puts of the same
//     bytes to the same store;
//   - the time for one update to reach W watchers (p50, p99, max);
//   - the server's resident memory, idle and after the runs.
//
// Run it through bench/api, which builds the binary.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"nexus.dev/nexus/internal/proc"
	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
)

func main() {
	var (
		nexusBin = flag.String("nexus", "bin/nexus", "nexus binary")
		duration = flag.Duration("duration", 5*time.Second, "length of each throughput phase")
		clients  = flag.Int("clients", 32, "concurrent clients of the GET and create phases")
		conns    = flag.Int("conns", 4, "HTTP/2 connections of the admin's client (each load client has its own)")
		watchers = flag.Int("watchers", 10000, "watchers of the fan-out phase")
		updates  = flag.Int("updates", 5, "updates timed in the fan-out phase")
		rounds   = flag.Int("rounds", 3, "rounds of the GET and create phases (nexus and its peer take turns)")
	)
	flag.Parse()
	if err := run(*nexusBin, *duration, *clients, *conns, *watchers, *updates, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "apibench:", err)
		os.Exit(1)
	}
}

type bench struct {
	dir       string
	api       string // https://host:port
	storeURL  string
	proc      *exec.Cmd
	root      *x509.Certificate
	issuer    *pki.Issuer
	serving   tls.Certificate
	userCerts []tls.Certificate
}

func freePort(network string) int {
	if network == "udp" {
		c, _ := net.ListenPacket("udp", "[::1]:0")
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func run(bin string, d time.Duration, clients, conns, watchers, updates, rounds int) error {
	dir, err := os.MkdirTemp("", "nexus-bench-api")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{dir: dir}
	apiAddr := fmt.Sprintf("127.0.0.1:%d", freePort("tcp"))
	b.api = "https://" + apiAddr
	b.storeURL = fmt.Sprintf("http://127.0.0.1:%d", freePort("tcp"))
	b.proc = exec.Command(bin, "--data-dir", dir, "--log-level", "warn", "server", "--name", "bench", "--cluster", "bench",
		"--api-addr", apiAddr, "--store-peer-addr", fmt.Sprintf("[::1]:%d", freePort("udp")), "--store-client-urls", b.storeURL)
	logf, _ := os.Create(filepath.Join(dir, "server.log"))
	b.proc.Stdout, b.proc.Stderr = logf, logf
	b.proc.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.proc.Start(); err != nil {
		return err
	}
	defer func() { _ = b.proc.Process.Kill(); _ = b.proc.Wait() }()
	if err := b.waitServing(); err != nil {
		log, _ := os.ReadFile(logf.Name())
		return fmt.Errorf("%w\n%s", err, log)
	}
	if err := b.loadPKI(1 + clients + (watchers+watchersPerUser-1)/watchersPerUser); err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	idle := rssMiB(b.proc.Process.Pid)
	fmt.Printf("nexus server idle resident memory: %.1f MiB\n\n", idle)

	admin := b.client(b.userCerts[0], conns)
	// One identity per client, as many clients are: the API limits each
	// identity's rate (200/s), which one identity would hit at once.
	// The bare handler gets the same clients: a connection each, so the two
	// differ only in the server (over 4 shared connections, HTTP/2 would
	// batch many clients' frames into each read and write: about half the
	// CPU per request, for the bare handler alone).
	var each, bareEach []*pooled
	for c := range clients {
		each = append(each, b.client(b.userCerts[1+c], 1))
		bareEach = append(bareEach, b.client(b.userCerts[1+c], 1))
	}
	if err := b.do(admin, "POST", "/v1/namespaces", `{"kind":"Namespace","metadata":{"name":"bench"}}`, 201); err != nil {
		return err
	}
	obj := `{"kind":"Workload","metadata":{"name":"web","labels":{"app":"web"}},"spec":{"replicas":3,"template":{"image":"nexus.local/hello","ports":[{"name":"http","port":8080}]}}}`
	if err := b.do(admin, "POST", "/v1/namespaces/bench/workloads", obj, 201); err != nil {
		return err
	}
	body, err := b.fetch(admin, "/v1/namespaces/bench/workloads/web")
	if err != nil {
		return err
	}
	bare, bareURL, err := b.bareServer(body)
	if err != nil {
		return err
	}
	defer bare.Close()

	var apiGet, bareGet, apiCreate, rawPut []result
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{b.storeURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	for r := range rounds {
		fmt.Printf("round %d\n", r+1)
		apiGet = append(apiGet, load(d, clients, b.proc.Process.Pid, func(c, _ int) error { return b.do(each[c], "GET", "/v1/namespaces/bench/workloads/web", "", 200) }))
		bareGet = append(bareGet, load(d, clients, b.proc.Process.Pid, func(c, _ int) error { return getURL(bareEach[c], bareURL) }))
		fmt.Printf("  GET     api %s | bare %s\n", apiGet[r], bareGet[r])
		apiCreate = append(apiCreate, load(d, clients, b.proc.Process.Pid, func(c, i int) error {
			name := fmt.Sprintf("r%d-c%d-%d", r, c, i)
			return b.do(each[c], "POST", "/v1/namespaces/bench/workloads", strings.Replace(obj, `"name":"web"`, `"name":"`+name+`"`, 1), 201)
		}))
		rawPut = append(rawPut, load(d, clients, b.proc.Process.Pid, func(c, i int) error {
			_, err := cli.Put(context.Background(), fmt.Sprintf("/bench/raw/r%d-c%d-%d", r, c, i), string(body))
			return err
		}))
		fmt.Printf("  create  api %s | raw put %s\n", apiCreate[r], rawPut[r])
	}
	g, bg := median(apiGet, func(r result) float64 { return r.rate }), median(bareGet, func(r result) float64 { return r.rate })
	c, rp := median(apiCreate, func(r result) float64 { return r.rate }), median(rawPut, func(r result) float64 { return r.rate })
	fmt.Printf("\nmedians over %d rounds (%d clients, %s each):\n", rounds, clients, d)
	fmt.Printf("  GET one object: api %.0f/s (p50 %.2f ms, p99 %.2f ms), bare handler %.0f/s (p50 %.2f ms, p99 %.2f ms): %.0f%% (target >= 50%%)\n",
		g, median(apiGet, p50), median(apiGet, p99), bg, median(bareGet, p50), median(bareGet, p99), 100*g/bg)
	fmt.Printf("    CPU per GET (clients + server): api %.0f µs, bare %.0f µs: the API's rate would be %.0f%% of the bare handler's if CPU alone decided\n",
		median(apiGet, cpu), median(bareGet, cpu), 100*median(bareGet, cpu)/median(apiGet, cpu))
	fmt.Printf("  create: api %.0f objects/s (p50 %.2f ms, p99 %.2f ms), raw store put %.0f/s (p50 %.2f ms, p99 %.2f ms): %.0f%% (target >= 70%%)\n",
		c, median(apiCreate, p50), median(apiCreate, p99), rp, median(rawPut, p50), median(rawPut, p99), 100*c/rp)
	fmt.Printf("    CPU per write (clients + server + store): api %.0f µs, raw put %.0f µs: %.0f%% if CPU alone decided\n",
		median(apiCreate, cpu), median(rawPut, cpu), 100*median(rawPut, cpu)/median(apiCreate, cpu))

	fan, err := b.fanout(admin, watchers, updates)
	if err != nil {
		return err
	}
	fmt.Printf("  fan-out: one update to %d watchers: p50 %.0f ms, p99 %.0f ms, max %.0f ms over %d updates (target p99 < 1 s)\n",
		watchers, fan[0], fan[1], fan[2], updates)
	fmt.Printf("\nnexus server resident memory: idle %.1f MiB (target < 60), after the runs %.1f MiB\n", idle, rssMiB(b.proc.Process.Pid))
	return nil
}

func (b *bench) waitServing() error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(b.dir, "pki", "api.crt")); err == nil {
			c, err := tls.Dial("tcp", strings.TrimPrefix(b.api, "https://"), &tls.Config{InsecureSkipVerify: true})
			if err == nil {
				c.Close()
				return nil
			}
		}
		if b.proc.ProcessState != nil {
			return fmt.Errorf("nexus server exited")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("nexus server did not serve within 60 s")
}

// watchersPerUser watchers share an identity: each identity may open
// watches at its request rate (bursts of 400) and hold 1,000.
const watchersPerUser = 100

// loadPKI issues n user certificates from the server's CA (the admin, one
// per client, one per watchersPerUser watchers) and reads its serving
// certificate for the bare handler. All are in group "loadgen", bound to
// cluster-admin.
func (b *bench) loadPKI(n int) error {
	d := pki.Dir{Path: filepath.Join(b.dir, "pki")}
	var err error
	if b.root, err = d.RootCert(); err != nil {
		return err
	}
	if b.issuer, err = d.Issuer(0); err != nil {
		return err
	}
	if b.serving, err = tls.LoadX509KeyPair(filepath.Join(d.Path, "api.crt"), filepath.Join(d.Path, "api.key")); err != nil {
		return err
	}
	for i := range n {
		name := "admin"
		if i > 0 {
			name = fmt.Sprintf("user%d", i)
		}
		key, _ := pki.GenerateKey()
		id := identity.User("bench", name)
		csr, _ := pki.CreateCSR(key, id)
		chain, err := b.issuer.SignLeaf(csr, id, pki.LeafOptions{Groups: []string{"loadgen"}})
		if err != nil {
			return err
		}
		cert := tls.Certificate{PrivateKey: key}
		for _, c := range chain {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
		b.userCerts = append(b.userCerts, cert)
	}
	admin := b.client(b.userCerts[0], 1)
	for {
		err := b.do(admin, "POST", "/v1/clusterrolebindings", `{"kind":"ClusterRoleBinding","metadata":{"name":"bench"},"subjects":[{"kind":"Group","name":"loadgen"}],"roleRef":{"kind":"ClusterRole","name":"cluster-admin"}}`, 201)
		if err == nil || strings.Contains(err.Error(), "409") {
			return nil
		}
		if !strings.Contains(err.Error(), "503") {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// client is an HTTP/2 client over conns connections with cert.
type pooled struct {
	clients []*http.Client
	next    atomic.Uint64
}

func (p *pooled) get() *http.Client { return p.clients[p.next.Add(1)%uint64(len(p.clients))] }

func (b *bench) client(cert tls.Certificate, conns int) *pooled {
	pool := x509.NewCertPool()
	pool.AddCert(b.root)
	p := &pooled{}
	for range conns {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13},
			ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 1}
		p.clients = append(p.clients, &http.Client{Transport: tr, Timeout: 30 * time.Second})
	}
	return p
}

func (b *bench) do(p *pooled, method, path, body string, want int) error {
	req, _ := http.NewRequest(method, b.api+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
		if method == "PATCH" {
			req.Header.Set("Content-Type", "application/merge-patch+json")
		}
	}
	resp, err := p.get().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d: %s", method, path, resp.StatusCode, out)
	}
	return nil
}

func (b *bench) fetch(p *pooled, path string) ([]byte, error) {
	resp, err := p.get().Get(b.api + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func getURL(p *pooled, url string) error {
	resp, err := p.get().Get(url)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	return nil
}

// bareServer serves body over the same TLS as the API (TLS 1.3, the API's
// certificate, a client certificate asked for), with nothing else.
func (b *bench) bareServer(body []byte) (*http.Server, string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		}),
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{b.serving}, ClientAuth: tls.RequestClientCert, NextProtos: []string{"h2", "http/1.1"}},
	}
	go hs.ServeTLS(l, "", "")
	return hs, "https://" + l.Addr().String() + "/", nil
}

type result struct {
	rate, p50, p99 float64 // per second; ms
	// cpu is the CPU time per operation (µs) of this process (the clients,
	// and the bare handler) and the nexus server together: on a machine
	// where clients, server and store share the cores, what decides the
	// rate, and what other load on the machine does not change.
	cpu    float64
	errors int
}

func (r result) String() string {
	s := fmt.Sprintf("%7.0f/s p50 %5.2f ms p99 %6.2f ms cpu %5.0f µs/op", r.rate, r.p50, r.p99, r.cpu)
	if r.errors > 0 {
		s += fmt.Sprintf(" (%d errors)", r.errors)
	}
	return s
}

// cpuSeconds is the CPU time (user and system) process pid has used.
func cpuSeconds(pid int) float64 {
	st, _ := proc.ReadStat(pid)
	return st.CPU.Seconds()
}

// load runs f from n goroutines for d and reports the rate, latency and
// CPU per operation of this process and process server together.
func load(d time.Duration, n int, server int, f func(client, i int) error) result {
	cpu0 := cpuSeconds(os.Getpid()) + cpuSeconds(server)
	var mu sync.Mutex
	var lats []time.Duration
	var errs atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range n {
		wg.Go(func() {
			var mine []time.Duration
			for i := 0; time.Now().Before(stop); i++ {
				t := time.Now()
				if err := f(c, i); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	el := time.Since(start)
	cpu := cpuSeconds(os.Getpid()) + cpuSeconds(server) - cpu0
	if e := firstErr.Load(); e != nil {
		fmt.Fprintf(os.Stderr, "  first error: %v\n", e)
	}
	slices.Sort(lats)
	pct := func(p float64) float64 {
		if len(lats) == 0 {
			return 0
		}
		return float64(lats[int(p*float64(len(lats)-1))].Microseconds()) / 1000
	}
	var perOp float64
	if len(lats) > 0 {
		perOp = cpu / float64(len(lats)) * 1e6
	}
	return result{rate: float64(len(lats)) / el.Seconds(), p50: pct(0.5), p99: pct(0.99), cpu: perOp, errors: int(errs.Load())}
}

func p50(r result) float64 { return r.p50 }
func cpu(r result) float64 { return r.cpu }
func p99(r result) float64 { return r.p99 }

func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// fanout opens w watches of the "web" workload, then patches it u times,
// each time waiting until every watcher has seen the change, and returns
// p50, p99 and max of the delivery times (ms) over all deliveries.
func (b *bench) fanout(admin *pooled, w, u int) ([3]float64, error) {
	// 100 watches per HTTP/2 connection (Go's server allows 250 streams).
	const perConn = 100
	type watcher struct{ got chan time.Time }
	ws := make([]*watcher, w)
	// The watchers' identities are the last certificates issued.
	first := len(b.userCerts) - (w+watchersPerUser-1)/watchersPerUser
	var clients []*pooled
	for i := range (w + perConn - 1) / perConn {
		clients = append(clients, b.client(b.userCerts[first+i*perConn/watchersPerUser], 1))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Watch from a list's revision, as a client that lists, then watches.
	body, err := b.fetch(admin, "/v1/namespaces/bench/workloads?fieldSelector=metadata.name%3Dweb")
	if err != nil {
		return [3]float64{}, err
	}
	var meta struct {
		Metadata struct{ ResourceVersion string }
	}
	if err := json.Unmarshal(body, &meta); err != nil || meta.Metadata.ResourceVersion == "" {
		return [3]float64{}, fmt.Errorf("list before watching: %v: %.300s", err, body)
	}
	var ready sync.WaitGroup
	var failed atomic.Int64
	for i := range w {
		ws[i] = &watcher{got: make(chan time.Time, u+1)}
		ready.Add(1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", b.api+"/v1/namespaces/bench/workloads?watch=true&fieldSelector=metadata.name%3Dweb&resourceVersion="+meta.Metadata.ResourceVersion, nil)
			resp, err := clients[i/perConn].get().Do(req)
			ready.Done()
			if err != nil || resp.StatusCode != 200 {
				if failed.Add(1) == 1 {
					if err == nil {
						b, _ := io.ReadAll(resp.Body)
						err = fmt.Errorf("%d: %s", resp.StatusCode, b)
					}
					fmt.Fprintf(os.Stderr, "  first watch failure: %v\n", err)
				}
				return
			}
			defer resp.Body.Close()
			dec := json.NewDecoder(resp.Body)
			for {
				var ev struct{ Type string }
				if dec.Decode(&ev) != nil {
					return
				}
				if ev.Type == "MODIFIED" {
					ws[i].got <- time.Now()
				}
			}
		}()
	}
	ready.Wait()
	if n := failed.Load(); n > 0 {
		return [3]float64{}, fmt.Errorf("%d of %d watches failed to open", n, w)
	}
	time.Sleep(2 * time.Second) // let every watch reach the store
	var all []float64
	for k := range u {
		t0 := time.Now()
		if err := b.do(admin, "PATCH", "/v1/namespaces/bench/workloads/web", `{"spec":{"replicas":`+strconv.Itoa(10+k)+`}}`, 200); err != nil {
			return [3]float64{}, err
		}
		timeout := time.After(60 * time.Second)
		for i, wt := range ws {
			select {
			case at := <-wt.got:
				all = append(all, float64(at.Sub(t0).Microseconds())/1000)
			case <-timeout:
				return [3]float64{}, fmt.Errorf("update %d: watcher %d (and maybe more) saw nothing within 60 s", k, i)
			}
		}
	}
	slices.Sort(all)
	return [3]float64{all[len(all)/2], all[int(0.99*float64(len(all)-1))], all[len(all)-1]}, nil
}

// rssMiB is pid's resident memory, 0 when it cannot be read.
func rssMiB(pid int) float64 {
	m, _ := proc.ReadMemory(pid)
	return float64(m.RSS) / (1 << 20)
}
