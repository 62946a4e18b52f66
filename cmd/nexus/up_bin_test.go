package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/netnsutil"
	"nexus.dev/nexus/internal/testutil"
)

// upHarness runs `nexus up` as a process inside a network namespace the
// test made (its bridge, addresses and rules live there only) and the
// CLI beside it, the way a user runs both.
type upHarness struct {
	t       *testing.T
	bin     string
	ns      string // network namespace name
	nsPath  string
	dataDir string
	home    string
	apiAddr string
	peer    string

	mu   sync.Mutex
	cmd  *exec.Cmd
	logs []string // each run's log file
}

func newUpHarness(t *testing.T) *upHarness {
	testutil.RequireRoot(t)
	h := &upHarness{t: t, bin: nexusBinary(t), dataDir: t.TempDir(), home: t.TempDir()}
	h.ns = fmt.Sprintf("nxup%d", os.Getpid()%100000)
	h.nsPath = "/run/netns/" + h.ns
	_ = exec.Command("ip", "netns", "del", h.ns).Run()
	if out, err := exec.Command("ip", "netns", "add", h.ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	if out, err := exec.Command("ip", "-n", h.ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	// Ports inside the namespace are free whatever the host uses.
	h.apiAddr, h.peer = "127.0.0.1:17443", "127.0.0.1:17380"
	t.Cleanup(h.cleanup)
	return h
}

// start runs nexus up and waits for it to say it is ready.
func (h *upHarness) start() {
	h.t.Helper()
	logPath := filepath.Join(h.t.TempDir(), fmt.Sprintf("up-%d.log", len(h.logs)+1))
	logFile, err := os.Create(logPath)
	if err != nil {
		h.t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command("nsenter", "--net="+h.nsPath, h.bin, "--data-dir", h.dataDir, "up", "--name", "node1",
		"--api-addr", h.apiAddr, "--store-peer-addr", h.peer)
	cmd.Env = h.env()
	out, err := cmd.StdoutPipe()
	if err != nil {
		h.t.Fatal(err)
	}
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	h.cmd = cmd
	h.logs = append(h.logs, logPath)
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	expect := lineExpecter(ctx, h.t, out, h.log)
	expect(`^nexus up: node node1 ready; API on https://127\.0\.0\.1:17443`)
	conf := strings.TrimPrefix(expect(`^admin client configuration: `), "admin client configuration: ")
	if want := filepath.Join(h.dataDir, "admin.conf"); conf != want {
		h.t.Fatalf("admin configuration at %q, want %q", conf, want)
	}
	next := expect(`^  nexus run web --image nexus.local/hello`)
	if strings.Contains(next, "NEXUS_CONFIG") {
		h.t.Fatalf("the next commands need NEXUS_CONFIG although ~/.nexus/config is this cluster's: %q", next)
	}
}

// env is the environment of nexus up and the CLI: the test's HOME, where
// nexus up writes ~/.nexus/config and the CLI reads it.
func (h *upHarness) env() []string {
	return append(os.Environ(), "HOME="+h.home, "NEXUS_CONFIG=")
}

// kill9 kills nexus up with SIGKILL, as a crash does.
func (h *upHarness) kill9() {
	h.mu.Lock()
	cmd := h.cmd
	h.cmd = nil
	h.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
}

func (h *upHarness) log() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, p := range h.logs {
		data, _ := os.ReadFile(p)
		if len(data) > 16<<10 {
			data = data[len(data)-16<<10:]
		}
		fmt.Fprintf(&b, "--- %s (tail)\n%s", filepath.Base(p), data)
	}
	return b.String()
}

// nexus runs the CLI in the node's network namespace (where the API is),
// with the default configuration nexus up wrote to ~/.nexus/config.
func (h *upHarness) nexus(args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + h.nsPath, h.bin}, args...)...)
	cmd.Env = h.env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (h *upHarness) ok(args ...string) string {
	h.t.Helper()
	out, err := h.nexus(args...)
	if err != nil {
		h.t.Fatalf("nexus %s: %v\n%s\n%s", strings.Join(args, " "), err, out, h.log())
	}
	return out
}

// apply applies the manifest doc with nexus apply -f.
func (h *upHarness) apply(doc string) {
	h.t.Helper()
	path := filepath.Join(h.t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		h.t.Fatal(err)
	}
	h.ok("apply", "-f", path)
}

// instances lists the instances (of workload, when given).
func (h *upHarness) instances(workload string) []types.Instance {
	h.t.Helper()
	out := h.ok(instancesArgs(workload)...)
	is, err := parseInstances(out)
	if err != nil {
		h.t.Fatalf("get instances -o json: %v\n%s", err, out)
	}
	return is
}

// waitInstances polls the workload's instances until ok accepts them.
func (h *upHarness) waitInstances(workload, what string, timeout time.Duration, ok func([]types.Instance) bool) []types.Instance {
	h.t.Helper()
	return pollInstances(h.t, workload, what, timeout, func() (string, error) { return h.nexus(instancesArgs(workload)...) }, ok, h.log)
}

// pollInstances runs get (a `get instances -o json`) every 100 ms until
// ok accepts the instances it lists, and fails t with the last list (and
// detail, when given) after timeout.
func pollInstances(t testing.TB, workload, what string, timeout time.Duration, get func() (string, error), ok func([]types.Instance) bool, detail func() string) []types.Instance {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last []types.Instance
	var lastErr error
	for {
		out, err := get()
		if err == nil {
			var is []types.Instance
			if is, err = parseInstances(out); err == nil {
				last = is
				if ok(last) {
					return last
				}
			}
		} else {
			err = fmt.Errorf("%v: %s", err, out)
		}
		lastErr = err
		if time.Now().After(deadline) {
			more := ""
			if detail != nil {
				more = "\n" + detail()
			}
			t.Fatalf("%s: not %s within %v (last error: %v); instances:\n%s%s", workload, what, timeout, lastErr, describeInstances(last), more)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func instancesArgs(workload string) []string {
	args := []string{"get", "instances", "-o", "json"}
	if workload != "" {
		args = append(args, "--field-selector", "spec.workload="+workload)
	}
	return args
}

// parseInstances reads get -o json: a List, or the object itself when
// there is one.
func parseInstances(out string) ([]types.Instance, error) {
	var list struct {
		Kind  string           `json:"kind"`
		Items []types.Instance `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, err
	}
	if list.Kind == "List" {
		return list.Items, nil
	}
	var one types.Instance
	if err := json.Unmarshal([]byte(out), &one); err != nil {
		return nil, err
	}
	return []types.Instance{one}, nil
}

func describeInstances(is []types.Instance) string {
	var b strings.Builder
	for _, i := range is {
		fmt.Fprintf(&b, "  %s node=%s phase=%s ready=%v restarts=%d addrs=%v msg=%q\n", i.Name, i.Spec.NodeName, i.Status.Phase, i.Status.Ready, i.Status.Restarts, i.Status.Addresses, i.Status.Message)
	}
	return b.String()
}

func readyCount(is []types.Instance) int {
	n := 0
	for _, i := range is {
		if i.Status.Phase == types.PhaseRunning && i.Status.Ready {
			n++
		}
	}
	return n
}

// get fetches url from inside the node's network namespace.
func (h *upHarness) get(url string) (string, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return netnsutil.Dial(ctx, h.nsPath, network, addr)
	}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// containerPid is the pid of the instance's container process, as the
// runtime records it.
func (h *upHarness) containerPid(inst types.Instance) int {
	h.t.Helper()
	out := h.ok("runtime", "--root", filepath.Join(h.dataDir, "runtime"), "state", "nx-"+inst.UID)
	var st struct {
		Pid    int    `json:"pid"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Pid <= 0 {
		h.t.Fatalf("runtime state of %s: %v\n%s", inst.Name, err, out)
	}
	return st.Pid
}

// followLogs runs nexus logs -f INSTANCE, hands f a function that waits
// for its next line like a pattern, and stops it.
func (h *upHarness) followLogs(inst types.Instance, f func(expect func(string) string)) {
	h.t.Helper()
	cmd := exec.Command("nsenter", "--net="+h.nsPath, h.bin, "logs", "-f", "--tail", "0", inst.Name)
	cmd.Env = h.env()
	out, err := cmd.StdoutPipe()
	if err != nil {
		h.t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f(lineExpecter(ctx, h.t, out, func() string { return "nexus logs stderr: " + stderr.String() }))
}

// containers are the IDs of the containers in nexus up's runtime.
func (h *upHarness) containers() []string { return containersIn(h.bin, h.dataDir) }

// containersIn lists the IDs of the containers of the node whose data
// directory is dataDir, from its runtime's state.
func containersIn(bin, dataDir string) []string {
	out, err := exec.Command(bin, "runtime", "--root", filepath.Join(dataDir, "runtime"), "list", "-f", "json").Output()
	if err != nil {
		return nil
	}
	var states []struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(out, &states)
	ids := make([]string, len(states))
	for i, st := range states {
		ids[i] = st.ID
	}
	return ids
}

func (h *upHarness) cleanup() {
	// Workloads first, so the agent stops and removes their containers.
	if h.cmd != nil {
		if out, err := h.nexus("get", "workloads", "-o", "name"); err == nil {
			for _, w := range strings.Fields(out) {
				_, _ = h.nexus("delete", w)
			}
		}
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) && len(h.containers()) > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		h.mu.Lock()
		cmd := h.cmd
		h.mu.Unlock()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
		}
	}
	cleanupNodeDir(h.t, h.bin, h.dataDir)
	_ = exec.Command("ip", "netns", "del", h.ns).Run()
}

// cleanupNodeDir removes what a node's agent (nexus up or nexus agent,
// data directory dataDir) left after it was killed or a test failed: it
// kills and deletes the containers and releases their root file systems.
func cleanupNodeDir(t testing.TB, bin, dataDir string) {
	root := filepath.Join(dataDir, "runtime")
	for _, id := range containersIn(bin, dataDir) {
		t.Logf("removing container %s left behind", id)
		_ = exec.Command(bin, "runtime", "--root", root, "delete", "--force", id).Run()
	}
	prepared, _ := os.ReadDir(filepath.Join(dataDir, "images", "containers"))
	for _, d := range prepared {
		t.Logf("releasing root file system %s left behind", d.Name())
		_ = exec.Command(bin, "--data-dir", dataDir, "image", "release", d.Name()).Run()
	}
}

// TestUpEndToEnd is the single-machine promise, through the binaries: nexus
// up; run a workload of the built-in image whose instances answer HTTP on
// their IPv6 and IPv4 addresses; scale it up and down; roll out a change
// with never fewer than 2 ready; a killed process is restarted; a crash
// loop backs off; a job completes 5 runs 2 at a time; a daemon has one
// instance on the one node; nexus up killed with SIGKILL and started again
// leaves the containers running and still managed.
func TestUpEndToEnd(t *testing.T) {
	h := newUpHarness(t)
	h.start()

	// run: three instances answering on both addresses within 10 s.
	began := time.Now()
	h.ok("run", "web", "--image", "nexus.local/hello", "--replicas", "3", "--port", "8080", "--env", "GREETING=one")
	answered := map[string]bool{}
	var web []types.Instance
	for len(answered) < 6 {
		if time.Since(began) > 10*time.Second {
			t.Fatalf("after 10 s, %d of 6 address:port answered; instances:\n%s\n%s", len(answered), describeInstances(web), h.log())
		}
		web = h.instances("web")
		for _, i := range web {
			if len(i.Status.Addresses) != 2 {
				continue
			}
			for _, a := range i.Status.Addresses {
				url := "http://" + net.JoinHostPort(a, "8080") + "/"
				if answered[url] {
					continue
				}
				if body, err := h.get(url); err == nil && strings.HasPrefix(body, "hello from "+i.Name) {
					answered[url] = true
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("3 instances answered on 6 addresses %v after run", time.Since(began).Round(time.Millisecond))
	for _, i := range web {
		if !strings.Contains(i.Status.Addresses[0], ":") || strings.Contains(i.Status.Addresses[1], ":") {
			t.Fatalf("%s addresses %v: want IPv6 then IPv4", i.Name, i.Status.Addresses)
		}
	}
	ps := h.ok("ps")
	if !regexp.MustCompile(`(?m)^web-[a-z0-9]{5}\s+web\s+node1\s+fd[0-9a-f:]+,10\.71\.\d+\.\d+\s+Running\s+yes\s+0\s+\d+s$`).MatchString(ps) {
		t.Fatalf("ps:\n%s", ps)
	}

	// logs -f streams what the instance writes as it writes it.
	h.followLogs(web[0], func(expect func(string) string) {
		// Requests go on until two of them are seen in the stream (the
		// first may come before the stream is open).
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			url := "http://" + net.JoinHostPort(web[0].Status.Addresses[1], "8080") + "/followed"
			for {
				_, _ = h.get(url)
				select {
				case <-stop:
					return
				case <-time.After(300 * time.Millisecond):
				}
			}
		}()
		first := expect(`^request \d+: GET /followed from 10\.71\.`)
		if second := expect(`^request \d+: GET /followed from 10\.71\.`); second == first {
			t.Fatalf("the same line twice: %q", first)
		}
	})

	// exec runs a process in the instance's container.
	if out := h.ok("exec", web[0].Name, "--", "hostname"); out != web[0].Name+"\n" {
		t.Fatalf("exec hostname: %q, want %q", out, web[0].Name)
	}
	if _, err := h.nexus("exec", web[0].Name, "--", "/nope"); err == nil {
		t.Fatal("exec of a missing command succeeded")
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 127 {
		t.Fatalf("exec of a missing command: %v, want exit status 127", err)
	}

	// scale 5, then 2.
	h.ok("scale", "web", "5")
	h.waitInstances("web", "5 ready", 30*time.Second, func(is []types.Instance) bool { return len(is) == 5 && readyCount(is) == 5 })
	h.ok("scale", "web", "2")
	h.waitInstances("web", "down to 2", 60*time.Second, func(is []types.Instance) bool { return len(is) == 2 && readyCount(is) == 2 })

	// A rolling update never has fewer than 2 ready instances.
	h.apply(`kind: Workload
metadata: {name: web}
spec:
  kind: service
  replicas: 2
  template:
    image: nexus.local/hello
    labels: {app: web}
    ports: [{port: 8080}]
    env: [{name: GREETING, value: two}]
`)
	deadline := time.Now().Add(90 * time.Second)
	minReady := 2
	for {
		is := h.instances("web")
		if n := readyCount(is); n < minReady {
			minReady = n
			t.Errorf("during the rollout only %d ready:\n%s", n, describeInstances(is))
		}
		updated := 0
		for _, i := range is {
			if len(i.Spec.Template.Env) == 1 && i.Spec.Template.Env[0].Value == "two" && i.Status.Ready {
				updated++
			}
		}
		if updated == 2 && len(is) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout not done in 90 s:\n%s\n%s", describeInstances(is), h.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out := h.ok("rollout", "status", "web", "--timeout", "30s"); !strings.Contains(out, "successfully rolled out") {
		t.Fatalf("rollout status: %s", out)
	}

	// A SIGKILLed process restarts, and restarts goes up.
	web = h.instances("web")
	victim := web[0]
	if err := syscall.Kill(h.containerPid(victim), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.waitInstances("web", "restarted after SIGKILL", 30*time.Second, func(is []types.Instance) bool {
		for _, i := range is {
			if i.Name == victim.Name {
				return i.Status.Restarts == victim.Status.Restarts+1 && i.Status.Ready && i.Status.LastExit != nil && i.Status.LastExit.Signal != ""
			}
		}
		return false
	})

	// A crash loop backs off: 1 s, 2 s, 4 s, ... between restarts.
	h.ok("run", "crash", "--image", "nexus.local/hello", "--", "/nexus", "no-such-command")
	crashStart := time.Now()
	is := h.waitInstances("crash", "restarting with a growing delay", 40*time.Second, func(is []types.Instance) bool {
		return len(is) == 1 && is[0].Status.Restarts >= 3 && strings.Contains(is[0].Status.Message, "restarting in")
	})
	took := time.Since(crashStart)
	// Without backoff, three restarts take well under a second; with it,
	// at least 1+2 s.
	if took < 3*time.Second {
		t.Fatalf("3 restarts in %v: no backoff (%s)", took, is[0].Status.Message)
	}
	if m := regexp.MustCompile(`restarting in (\d+)s`).FindStringSubmatch(is[0].Status.Message); m == nil {
		t.Fatalf("crash loop message %q: no delay", is[0].Status.Message)
	} else if d, _ := strconv.Atoi(m[1]); d < 4 {
		t.Fatalf("after %d restarts the delay is %ds: not backing off", is[0].Status.Restarts, d)
	}
	if e := is[0].Status.LastExit; e == nil || e.Code != 1 {
		t.Fatalf("crash loop last exit %+v: want code 1", e)
	}

	desc := h.ok("describe", "instance", is[0].Name)
	if !regexp.MustCompile(`(?m)^Events:\n(?s:.*)^  Normal\s+Started\s+.*container started with addresses fd`).MatchString(desc) ||
		!regexp.MustCompile(`(?m)^  Warning\s+BackOff\s+\S+ \(x\d+ over \S+\)\s+exited with code 1; restarting it`).MatchString(desc) {
		t.Fatalf("describe of a crash-looping instance shows no event history:\n%s", desc)
	}

	// nexus top: the agent measured the web instances (running for tens
	// of seconds by now) and put it in their status.
	topRow := regexp.MustCompile(`(?m)^web-[a-z0-9]{5}\s+web\s+node1\s+\d+\s+[1-9]\d*Mi\s+<none>\s+0$`)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		top := h.ok("top", "--sort-by", "memory")
		if len(topRow.FindAllString(top, -1)) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nexus top does not show the 2 web instances' use:\n%s", top)
		}
	}

	// Mistakes say what happened in words a user can act on, and disturb
	// nothing else.
	h.ok("run", "nopull", "--image", "registry.invalid/nope:1")
	h.ok("run", "nocmd", "--image", "nexus.local/hello", "--", "/nope")
	h.waitInstances("nopull", "failing to pull", 30*time.Second, func(is []types.Instance) bool {
		return len(is) == 1 && strings.HasPrefix(is[0].Status.Message, "ImagePullFailed: pull registry.invalid/nope:1:")
	})
	h.waitInstances("nocmd", "failing to create", 30*time.Second, func(is []types.Instance) bool {
		return len(is) == 1 && strings.Contains(is[0].Status.Message, "CreateFailed") && strings.Contains(is[0].Status.Message, "/nope")
	})
	if desc := h.ok("describe", "instance", h.instances("nopull")[0].Name); !regexp.MustCompile(`Warning\s+ImagePullFailed\s+`).MatchString(desc) {
		t.Fatalf("describe of an instance whose image cannot be pulled:\n%s", desc)
	}
	h.ok("delete", "workload", "nopull")
	h.ok("delete", "workload", "nocmd")
	if n := readyCount(h.instances("web")); n != 2 {
		t.Fatalf("%d web instances ready after the mistakes, want 2", n)
	}

	// A published host port answers on the node's loopback and address;
	// a second workload cannot have the same one, and is told why.
	pubDoc := `kind: Workload
metadata: {name: pub}
spec:
  kind: service
  replicas: 1
  template:
    image: nexus.local/hello
    ports: [{port: 8080, hostPort: 18080}]
`
	h.apply(pubDoc)
	pubInst := h.waitInstances("pub", "running", 30*time.Second, func(is []types.Instance) bool { return readyCount(is) == 1 })[0]
	deadline = time.Now().Add(10 * time.Second)
	for {
		body, err := h.get("http://127.0.0.1:18080/")
		if err == nil && strings.HasPrefix(body, "hello from "+pubInst.Name) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host port 18080 on 127.0.0.1: %q %v", body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.apply(strings.Replace(pubDoc, "name: pub", "name: pub2", 1))
	h.waitInstances("pub2", "refused the taken host port", 30*time.Second, func(is []types.Instance) bool {
		return len(is) == 1 && strings.Contains(is[0].Status.Message, "18080")
	})
	h.ok("delete", "workload/pub", "workload/pub2")

	// A job: 5 completions, 2 at a time.
	h.apply(`kind: Workload
metadata: {name: batch}
spec:
  kind: job
  completions: 5
  parallelism: 2
  template:
    image: nexus.local/hello
    command: ["/nexus", "version"]
    restartPolicy: never
`)
	maxRunning := 0
	deadline = time.Now().Add(90 * time.Second)
	for {
		is := h.instances("batch")
		running, succeeded := 0, 0
		for _, i := range is {
			switch i.Status.Phase {
			case types.PhaseSucceeded:
				succeeded++
			case types.PhaseFailed:
				t.Fatalf("job instance failed:\n%s", describeInstances(is))
			default:
				running++
			}
		}
		maxRunning = max(maxRunning, running)
		if succeeded == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job not complete in 90 s:\n%s", describeInstances(is))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if maxRunning > 2 {
		t.Fatalf("job ran %d at once with parallelism 2", maxRunning)
	}
	if out := h.ok("get", "workload", "batch", "-o", "json"); !strings.Contains(out, `"succeeded": 5`) {
		t.Fatalf("job status:\n%s", out)
	}

	// A daemon: one instance on the one node.
	h.apply(`kind: Workload
metadata: {name: agentd}
spec:
  kind: daemon
  template:
    image: nexus.local/hello
    args: ["--port", "9090"]
`)
	h.waitInstances("agentd", "one running instance", 30*time.Second, func(is []types.Instance) bool {
		return len(is) == 1 && is[0].Spec.NodeName == "node1" && readyCount(is) == 1
	})

	// kill -9 of nexus up, and start again: the containers keep running
	// (same processes) and are still managed.
	web = h.instances("web")
	pids := map[string]int{}
	for _, i := range web {
		pids[i.Name] = h.containerPid(i)
	}
	h.kill9()
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("%s's process %d is gone after nexus up was killed: %v", name, pid, err)
		}
	}
	h.start()
	for _, i := range h.instances("web") {
		if pid := h.containerPid(i); pid != pids[i.Name] {
			t.Fatalf("%s: process %d after the restart, %d before: restarted", i.Name, pid, pids[i.Name])
		}
		if body, err := h.get("http://" + net.JoinHostPort(i.Status.Addresses[1], "8080") + "/"); err != nil || !strings.HasPrefix(body, "hello from "+i.Name) {
			t.Fatalf("%s after the restart: %q %v", i.Name, body, err)
		}
	}
	h.ok("scale", "web", "3")
	is = h.waitInstances("web", "3 ready after the restart", 30*time.Second, func(is []types.Instance) bool { return len(is) == 3 && readyCount(is) == 3 })
	restarted := 0
	for _, i := range is {
		if pid, ok := pids[i.Name]; ok && h.containerPid(i) != pid {
			restarted++
		}
	}
	if restarted != 0 {
		t.Fatalf("%d containers restarted by the scale after the restart", restarted)
	}
	// Still managed: a killed process is restarted by the new agent, which
	// reads its exit status from the exit recorder.
	victim = is[0]
	if err := syscall.Kill(h.containerPid(victim), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.waitInstances("web", "restarted by the new agent", 30*time.Second, func(is []types.Instance) bool {
		for _, i := range is {
			if i.Name == victim.Name {
				return i.Status.Restarts == victim.Status.Restarts+1 && i.Status.Ready
			}
		}
		return false
	})
	// Deleting a workload removes its containers.
	h.ok("delete", "workload", "crash")
	h.waitInstances("crash", "gone", 30*time.Second, func(is []types.Instance) bool { return len(is) == 0 })
}
