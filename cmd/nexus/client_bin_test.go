package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/pki"
)

// e2e is a real API server in the test process (real mutual TLS, HTTP/2
// and HTTP/3 on one port) and a config file for it, which the nexus
// binary is run against the way a user runs it.
type e2e struct {
	t      *testing.T
	c      *servertest.Cluster
	dir    string
	config string
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	e := &e2e{t: t, c: c, dir: t.TempDir()}
	e.config = e.writeConfig("config", c.URL(), c.Root.Cert, c.User(t, "admin"))
	return e
}

// writeConfig writes a config for server, trusting ca, with a user's
// certificate.
func (e *e2e) writeConfig(name, server string, ca *x509.Certificate, cert *tls.Certificate) string {
	e.t.Helper()
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	key, err := pki.MarshalKey(cert.PrivateKey.(*ecdsa.PrivateKey), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg, err := client.NewConfig(client.ContextEntry{Name: "test", Server: server, CA: pki.EncodeCertificates(ca), Certificate: chain, Key: key})
	if err != nil {
		e.t.Fatal(err)
	}
	p := filepath.Join(e.dir, name)
	if err := cfg.Write(p); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// command is the nexus binary with args, run in the test's directory with
// a clean environment: HOME is the test's, the config comes from
// $NEXUS_CONFIG, plus env.
func (e *e2e) command(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, nexusBinary(e.t), args...)
	cmd.Dir = e.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + e.dir, "NEXUS_CONFIG=" + e.config}
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// run runs the binary to its end, with stdin.
func (e *e2e) run(env []string, stdin string, args ...string) binResult {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.command(ctx, env, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		e.t.Fatalf("run nexus %v: %v", args, err)
	}
	return binResult{stdout: stdout.String(), stderr: stderr.String(), exit: cmd.ProcessState.ExitCode()}
}

// ok runs the binary and fails the test unless it exits 0.
func (e *e2e) ok(args ...string) string {
	e.t.Helper()
	r := e.run(nil, "", args...)
	if r.exit != 0 {
		e.t.Fatalf("nexus %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.exit, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails runs the binary and fails the test unless it exits 1 with every
// want in its standard error.
func (e *e2e) fails(want []string, args ...string) binResult {
	e.t.Helper()
	r := e.run(nil, "", args...)
	if r.exit != 1 {
		e.t.Fatalf("nexus %s: exit %d, want 1\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.exit, r.stdout, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			e.t.Errorf("nexus %s: stderr lacks %q:\n%s", strings.Join(args, " "), w, r.stderr)
		}
	}
	return r
}

func (e *e2e) file(name, data string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

const webManifest = `apiVersion: v1
kind: Workload
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  template:
    image: nexus.local/hello
    labels: {app: web}
    ports: [{name: http, port: 8080}]
---
# the service in front of it
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`

// TestClientCommands drives apply, get (every format), describe, delete,
// create namespace and completion through the binary.
func TestClientCommands(t *testing.T) {
	e := newE2E(t)
	web := e.file("web.yaml", webManifest)

	if out := e.ok("apply", "-f", web); out != "workload/web created\nservice/web created\n" {
		t.Fatalf("first apply:\n%s", out)
	}
	if out := e.ok("apply", "-f", web); out != "workload/web unchanged\nservice/web unchanged\n" {
		t.Fatalf("second apply:\n%s", out)
	}
	scaled := e.file("scaled.yaml", strings.Replace(webManifest, "replicas: 2", "replicas: 3", 1))
	if out := e.ok("apply", "-f", scaled); out != "workload/web configured\nservice/web unchanged\n" {
		t.Fatalf("apply of a change:\n%s", out)
	}

	table := e.ok("get", "workloads")
	if !regexp.MustCompile(`^NAME +KIND +READY +UP-TO-DATE +IMAGE +AGE\nweb +service +0/3 +0 +nexus.local/hello +\d+s\n$`).MatchString(table) {
		t.Fatalf("get workloads:\n%s", table)
	}
	if out := e.ok("get", "wl", "-o", "wide"); !strings.Contains(out, "PORTS") || !strings.Contains(out, "8080/TCP") || !strings.Contains(out, "container") {
		t.Fatalf("get -o wide:\n%s", out)
	}
	var w types.Workload
	if err := json.Unmarshal([]byte(e.ok("get", "workload", "web", "-o", "json")), &w); err != nil || w.Name != "web" || *w.Spec.Replicas != 3 || w.ResourceVersion == "" {
		t.Fatalf("get -o json: %v %+v", err, w)
	}
	y := e.ok("get", "wl", "web", "-o", "yaml")
	if o, err := types.Decode([]byte(y), mustResource(t, "workloads")); err != nil || o.GetObjectMeta().Name != "web" {
		t.Fatalf("get -o yaml does not read back: %v\n%s", err, y)
	}
	if out := e.ok("get", "wl,svc", "-o", "name"); out != "workload/web\nservice/web\n" {
		t.Fatalf("get wl,svc -o name: %q", out)
	}
	var list struct {
		Kind  string
		Items []json.RawMessage
	}
	if err := json.Unmarshal([]byte(e.ok("get", "svc", "-o", "json")), &list); err != nil || list.Kind != "List" || len(list.Items) != 1 {
		t.Fatalf("get svc -o json: %v %+v", err, list)
	}
	if out := e.ok("get", "svc"); !regexp.MustCompile(`^NAME +TYPE +VIRTUAL-IPS +PORTS +ENDPOINTS +AGE\nweb +ClusterIP +fd00:6e78:7400:ff::[0-9a-f]+,10\.71\.255\.\d+ +80->8080/TCP +<none> +\d+s\n$`).MatchString(out) {
		t.Fatalf("get svc:\n%s", out)
	}
	if out := e.ok("get", "wl", "-A"); !strings.HasPrefix(out, "NAMESPACE ") || !strings.Contains(out, "default ") {
		t.Fatalf("get -A:\n%s", out)
	}
	if out := e.ok("get", "wl", "-l", "app=web", "-o", "name"); out != "workload/web\n" {
		t.Fatalf("get -l app=web: %q", out)
	}
	if r := e.run(nil, "", "get", "wl", "-l", "app=db"); r.exit != 0 || r.stdout != "" || !strings.Contains(r.stderr, "No wl found in namespace default.") {
		t.Fatalf("get of nothing: %+v", r)
	}
	// Where a list found nothing: the namespace, or the cluster for -A and
	// for kinds that have no namespace.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "wl", "-A", "-l", "app=db"}, "No wl found in the cluster.\n"},
		{[]string{"get", "nodes", "-l", "app=db"}, "No nodes found in the cluster.\n"},
		{[]string{"ps", "-n", "nothing-here"}, "No instances in namespace nothing-here.\n"},
		{[]string{"ps", "-A", "-l", "app=db"}, "No instances in the cluster.\n"},
	} {
		if r := e.run(nil, "", tc.args...); r.exit != 0 || r.stdout != "" || r.stderr != tc.want {
			t.Errorf("nexus %v: %+v, want %q on stderr", tc.args, r, tc.want)
		}
	}
	if out := e.ok("get", "namespaces", "--field-selector", "metadata.name=default", "--no-headers"); !regexp.MustCompile(`^default +Active +\d+s\n$`).MatchString(out) {
		t.Fatalf("get ns --field-selector: %q", out)
	}

	d := e.ok("describe", "wl", "web")
	for _, want := range []string{"Name:             web\n", "Namespace:        default\n", "Kind:             Workload\n", "Labels:           app=web\n", "Spec:\n", "  replicas: 3\n", "Instances:\n  <none>\n"} {
		if !strings.Contains(d, want) {
			t.Errorf("describe lacks %q:\n%s", want, d)
		}
	}

	// Secrets: values never in tables or descriptions.
	e.file("secret.yaml", "kind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2-very-secret}\n")
	e.ok("apply", "-f", "secret.yaml")
	out := e.ok("get", "secrets") + e.ok("describe", "secret", "db")
	if !strings.Contains(out, "Opaque") || !strings.Contains(out, "password: 19 bytes") || strings.Contains(out, "hunter2") || strings.Contains(out, "aHVudGVyMi") {
		t.Fatalf("secret shown:\n%s", out)
	}

	// Namespaces: create one and apply into it.
	if out := e.ok("create", "namespace", "shop"); out != "namespace/shop created\n" {
		t.Fatalf("create namespace: %q", out)
	}
	e.ok("apply", "-f", web, "-n", "shop")
	if out := e.ok("get", "wl", "-n", "shop", "-o", "name"); out != "workload/web\n" {
		t.Fatalf("get -n shop: %q", out)
	}
	// Standard input, and a JSON list.
	if out := e.run(nil, `[{"kind":"Namespace","metadata":{"name":"from-stdin"}}]`, "apply", "-f", "-"); out.exit != 0 || out.stdout != "namespace/from-stdin created\n" {
		t.Fatalf("apply -f -: %+v", out)
	}

	// Delete by name, with a stale resourceVersion, and by file.
	e.fails([]string{"the object was modified (resourceVersion 1, current"}, "delete", "wl", "web", "--resource-version", "1")
	if out := e.ok("delete", "workload", "web"); out != "workload/web deleted\n" {
		t.Fatalf("delete: %q", out)
	}
	e.fails([]string{`workloads/web in namespace default: not found`}, "get", "wl", "web")
	if out := e.ok("delete", "-f", web, "--ignore-not-found"); out != "service/web deleted\n" {
		t.Fatalf("delete -f --ignore-not-found: %q", out)
	}
	e.fails([]string{"document 1) workload/web", "not found", "1 of 3 documents were not deleted"}, "delete", "-f", web, "-n", "shop", "-f", e.file("only-wl.yaml", strings.Split(webManifest, "---")[0]))
	// KIND/NAME, as get -o name prints them.
	e.ok("apply", "-f", web, "-n", "shop")
	if out := e.ok("delete", "workload/web", "service/web", "-n", "shop"); out != "workload/web deleted\nservice/web deleted\n" {
		t.Fatalf("delete KIND/NAME...: %q", out)
	}
	e.fails([]string{`"web": give every object as KIND/NAME (e.g. workload/web), or KIND NAME... without slashes`}, "delete", "workload/web", "web")
	e.fails([]string{`"workload/": give every object as KIND/NAME`}, "delete", "workload/")
	e.fails([]string{`unknown resource type "nope"`}, "delete", "nope/x")

	// Completion: kinds, then names from the server.
	e.ok("apply", "-f", web)
	if out := e.ok("__complete", "get", "w"); !strings.Contains(out, "workloads\nworkload\nwl\n") {
		t.Fatalf("complete kinds: %q", out)
	}
	if out := e.ok("__complete", "get", "wl,s"); !strings.Contains(out, "wl,services\n") || !strings.Contains(out, "wl,svc\n") {
		t.Fatalf("complete a kind list: %q", out)
	}
	if out := e.ok("__complete", "describe", "wl", ""); !strings.HasPrefix(out, "web\n") {
		t.Fatalf("complete names: %q", out)
	}
	if out := e.ok("__complete", "delete", "svc", "-n", "sh"); !strings.HasPrefix(out, "shop\n") {
		t.Fatalf("complete namespaces: %q", out)
	}
	if out := e.ok("completion", "bash"); !strings.Contains(out, "__start_nexus") {
		t.Fatalf("completion bash: %.200s", out)
	}
}

func mustResource(t *testing.T, name string) *types.Resource {
	t.Helper()
	r, ok := types.LookupResource(name)
	if !ok {
		t.Fatalf("no resource %s", name)
	}
	return r
}

// TestClientWatchSeesApply: `nexus get -w` started first shows a change
// made by a later `nexus apply`, over HTTP/2 and over HTTP/3.
func TestClientWatchSeesApply(t *testing.T) {
	e := newE2E(t)
	for _, h3 := range []bool{false, true} {
		t.Run(fmt.Sprintf("http3=%v", h3), func(t *testing.T) {
			ns := fmt.Sprintf("watch-%v", h3)
			e.ok("create", "namespace", ns)
			web := e.file(ns+".yaml", webManifest)
			e.ok("apply", "-f", web, "-n", ns)

			args := []string{"--log-level", "debug", "get", "wl", "-w", "--output-watch-events", "-n", ns}
			if h3 {
				args = append(args, "--http3")
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := e.command(ctx, nil, args...)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			expect := lineExpecter(ctx, t, stdout, func() string { return "stderr: " + stderr.String() })
			expect(`^EVENT +NAME +KIND +READY`)
			expect(`^ADDED +web +service +0/2 +0 +nexus.local/hello `)
			e.ok("apply", "-f", e.file(ns+"-v2.yaml", strings.Replace(webManifest, "image: nexus.local/hello", "image: nexus.local/hello:2", 1)), "-n", ns)
			expect(`^MODIFIED +web +service +0/2 +0 +nexus.local/hello:2 `)
			e.ok("delete", "wl", "web", "-n", ns)
			expect(`^DELETED +web `)
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("get -w after Ctrl-C: %v\n%s", err, stderr.String())
			}
			proto := "proto=HTTP/2.0"
			if h3 {
				proto = "proto=HTTP/3.0"
			}
			if !strings.Contains(stderr.String(), "watch=true") || !strings.Contains(stderr.String(), proto) {
				t.Fatalf("the watch did not go over %s:\n%s", proto, stderr.String())
			}
		})
	}
}

// editorScript writes an $EDITOR that runs the numbered steps of a shell
// case statement, one per opening, and keeps a copy of what each opening
// showed (seen-N).
func (e *e2e) editorScript(name, steps string) (editor, state string) {
	e.t.Helper()
	state = filepath.Join(e.dir, name+"-state")
	if err := os.MkdirAll(state, 0o755); err != nil {
		e.t.Fatal(err)
	}
	script := fmt.Sprintf(`#!/bin/sh
set -e
state=%q
n=$(cat "$state/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$state/count"
cp "$1" "$state/seen-$n"
case $n in
%s
*) echo "opened $n times" >&2; exit 1 ;;
esac
`, state, steps)
	editor = filepath.Join(e.dir, name+".sh")
	if err := os.WriteFile(editor, []byte(script), 0o755); err != nil {
		e.t.Fatal(err)
	}
	return editor, state
}

func TestClientEdit(t *testing.T) {
	e := newE2E(t)
	web := e.file("web.yaml", webManifest)
	e.ok("apply", "-f", web)
	scaled := e.file("scaled.yaml", strings.Replace(webManifest, "replicas: 2", "replicas: 5", 1))

	// Someone scales the workload while the editor is open: the edit is
	// carried over to the new version, shown again, and saved.
	editor, state := e.editorScript("conflict", fmt.Sprintf(`1) %q --config %q apply -f %q >/dev/null
   sed -i 's#image: nexus.local/hello$#image: nexus.local/hello:2#' "$1" ;;
2) ;;`, nexusBinary(t), e.config, scaled))
	r := e.run([]string{"EDITOR=" + editor}, "", "edit", "wl", "web")
	if r.exit != 0 || !strings.Contains(r.stdout, "workload/web changed on the server while you edited it") || !strings.HasSuffix(r.stdout, "workload/web edited\n") {
		t.Fatalf("edit with a conflict: %+v", r)
	}
	second, _ := os.ReadFile(filepath.Join(state, "seen-2"))
	if !strings.Contains(string(second), "# The object changed on the server") || !strings.Contains(string(second), "image: nexus.local/hello:2") || !strings.Contains(string(second), "replicas: 5") {
		t.Fatalf("the second opening:\n%s", second)
	}
	var w types.Workload
	json.Unmarshal([]byte(e.ok("get", "wl", "web", "-o", "json")), &w)
	if w.Spec.Template.Image != "nexus.local/hello:2" || *w.Spec.Replicas != 5 {
		t.Fatalf("stored: image %s, replicas %d: the edit or the concurrent change was lost", w.Spec.Template.Image, *w.Spec.Replicas)
	}

	// Broken YAML and a refused value reopen the editor with the problem.
	editor, state = e.editorScript("problems", `1) sed -i 's#^  replicas: 5$#  replicas: [5#' "$1" ;;
2) grep -q "could not be saved" "$1"; sed -i 's#^  replicas: \[5$#  replicas: 5#; s#port: 8080#port: 70000#' "$1" ;;
3) grep -q "spec.template.ports\[0\].port: must be 1-65535" "$1"; sed -i 's#port: 70000#port: 8081#' "$1" ;;`)
	r = e.run([]string{"VISUAL=" + editor}, "", "edit", "workload", "web")
	if r.exit != 0 || !strings.HasSuffix(r.stdout, "workload/web edited\n") {
		t.Fatalf("edit with problems: %+v", r)
	}
	if first, _ := os.ReadFile(filepath.Join(state, "seen-2")); !strings.Contains(string(first), "not valid YAML or JSON") {
		t.Fatalf("the YAML error was not shown:\n%s", first)
	}
	json.Unmarshal([]byte(e.ok("get", "wl", "web", "-o", "json")), &w)
	if w.Spec.Template.Ports[0].Port != 8081 {
		t.Fatalf("stored port %d", w.Spec.Template.Ports[0].Port)
	}

	// An editor that changes nothing cancels; a failing one is reported.
	if r := e.run([]string{"EDITOR=true"}, "", "edit", "wl", "web"); r.exit != 0 || r.stdout != "Edit cancelled: no changes made.\n" {
		t.Fatalf("unchanged: %+v", r)
	}
	if r := e.run([]string{"EDITOR=false"}, "", "edit", "wl", "web"); r.exit != 1 || !strings.Contains(r.stderr, "the editor failed") {
		t.Fatalf("failing editor: %+v", r)
	}
}

// TestClientBadInput: every refusal exits 1 with the problem and the field.
func TestClientBadInput(t *testing.T) {
	e := newE2E(t)
	bad := e.file("bad.yaml", `kind: Workload
metadata: {name: good}
spec: {template: {image: a}}
---
kind: Workload
metadata: {name: typo}
spec: {replica: 2, template: {image: a}}
---
kind: Workload
metadata: {name: port}
spec: {template: {image: a, ports: [{port: 80}, {port: 70000}]}}
---
kind: Workloads
metadata: {name: kind}
---
kind: Workload
metadata: {name: Bad_Name}
spec: {template: {image: a}}
`)
	r := e.fails([]string{
		"Error: " + bad + " (document 2): bad fields: spec.replica: unknown field\n",
		"Error: " + bad + ` (document 3) workload/port: Workload "port" is invalid: spec.template.ports[1].port: must be 1-65535` + "\n",
		"Error: " + bad + ` (document 4): unknown kind "Workloads"`,
		"Error: " + bad + ` (document 5) workload/Bad_Name: Workload "Bad_Name" is invalid: metadata.name: must be lower-case letters`,
		"Error: 4 of 5 documents were not applied: " + bad + " (document 2); " + bad + " (document 3) workload/port; ",
	}, "apply", "-f", bad)
	if r.stdout != "workload/good created\n" {
		t.Fatalf("the good document: %q", r.stdout)
	}
	e.file("many.yaml", "kind: Service\nmetadata: {name: s}\nspec: {selector: {app: x}, ports: [{port: 0}, {port: 70000}]}\n")
	e.fails([]string{"Error: many.yaml (document 1) service/s: Service \"s\" is invalid:\n  * spec.ports[0].name: must be set when a service has more than one port\n  * spec.ports[0].port: must be 1-65535, not 0\n"}, "apply", "-f", "many.yaml")
	e.file("typos.yaml", "kind: Workload\nmetadata: {name: t}\nspec: {replica: 2, template: {image: a, imgae: b}}\n")
	e.fails([]string{"Error: typos.yaml (document 1): bad fields:\n  * spec.replica: unknown field\n  * spec.template.imgae: unknown field\n"}, "apply", "-f", "typos.yaml")
	e.fails([]string{"labelSelector", "app in web"}, "get", "wl", "-l", "app in web")
	e.fails([]string{"cannot be selected"}, "get", "wl", "--field-selector", "spec.image=x")
	e.fails([]string{`unknown resource type "deployments": use one of namespaces (ns), nodes (no), servers, workloads (wl)`}, "get", "deployments")
	e.fails([]string{`workload name "Web_1": must be lower-case letters`}, "get", "wl", "Web_1")
	e.fails([]string{`--namespace "Shop": must be lower-case`}, "get", "wl", "-n", "Shop")
	e.fails([]string{`unknown output format "xml"`}, "get", "wl", "-o", "xml")
	e.fails([]string{"name the kind of objects, e.g. nexus get workloads (kinds: namespaces (ns)"}, "get")
	e.fails([]string{"namespace nope does not exist: create it first (nexus create namespace nope)"}, "apply", "-f", bad, "-n", "nope")
	e.file("prod.yaml", "kind: Workload\nmetadata: {name: w, namespace: prod}\nspec: {template: {image: a}}\n")
	e.fails([]string{`workload/w names namespace "prod", but namespace "dev" was asked for`}, "apply", "-f", "prod.yaml", "-n", "dev")
	e.fails([]string{"no such file or directory"}, "apply", "-f", "nope.yaml")
	e.fails([]string{"-f FILE"}, "apply")
	// A user of another cluster is told the server did not accept them.
	other, err := pki.NewRoot(pki.RootConfig{Cluster: "other"})
	if err != nil {
		t.Fatal(err)
	}
	stranger := e.writeConfig("stranger", e.c.URL(), e.c.Root.Cert, &tls.Certificate{Certificate: [][]byte{other.Cert.Raw}, PrivateKey: other.Key})
	if r := e.run(nil, "", "--config", stranger, "get", "wl"); r.exit != 1 || !strings.Contains(r.stderr, `The server did not accept user "test" of context "test"`) {
		t.Fatalf("unknown certificate: %+v", r)
	}
	// The refused documents left nothing behind.
	if out := e.ok("get", "wl", "-o", "name"); out != "workload/good\n" {
		t.Fatalf("stored after the refusals: %q", out)
	}
}

// TestClientConfig: config files that are missing, unsafe or wrong are
// refused with the file and what to do; config view never shows keys.
func TestClientConfig(t *testing.T) {
	e := newE2E(t)
	missing := filepath.Join(e.dir, "nope")
	if r := e.run([]string{"NEXUS_CONFIG=" + missing}, "", "get", "wl"); r.exit != 1 || !strings.Contains(r.stderr, "no client config at "+missing+" (from $NEXUS_CONFIG)") || !strings.Contains(r.stderr, "admin.conf") {
		t.Fatalf("missing config: %+v", r)
	}
	if r := e.run([]string{"NEXUS_CONFIG="}, "", "get", "wl"); r.exit != 1 || !strings.Contains(r.stderr, "no client config at "+filepath.Join(e.dir, ".nexus", "config")+" (from the default path)") {
		t.Fatalf("no default config: %+v", r)
	}
	// ~/.nexus/config is used when nothing else is given.
	os.MkdirAll(filepath.Join(e.dir, ".nexus"), 0o700)
	data, _ := os.ReadFile(e.config)
	os.WriteFile(filepath.Join(e.dir, ".nexus", "config"), data, 0o600)
	if r := e.run([]string{"NEXUS_CONFIG="}, "", "get", "ns", "default", "-o", "name"); r.exit != 0 || r.stdout != "namespace/default\n" {
		t.Fatalf("default config: %+v", r)
	}
	// --config wins over $NEXUS_CONFIG.
	if r := e.run([]string{"NEXUS_CONFIG=" + missing}, "", "--config", e.config, "get", "ns", "default", "-o", "name"); r.exit != 0 {
		t.Fatalf("--config: %+v", r)
	}
	readable := filepath.Join(e.dir, "readable")
	os.WriteFile(readable, data, 0o644)
	e.fails([]string{"client config " + readable + ": holds a private key or token and is readable by group or others (mode 0644): run chmod 600 " + readable}, "--config", readable, "get", "wl")
	broken := filepath.Join(e.dir, "broken")
	os.WriteFile(broken, bytes.Replace(data, []byte("server:"), []byte("sever:"), 1), 0o600)
	e.fails([]string{"client config " + broken + ": ", "clusters[0].sever: unknown field"}, "--config", broken, "get", "wl")
	e.fails([]string{"client config " + e.dir + ": not a regular file"}, "--config", e.dir, "get", "wl")
	e.fails([]string{`no context "nope" (contexts: test)`}, "get", "wl", "--context", "nope")

	view := e.ok("config", "view")
	if !strings.Contains(view, "clientKeyData: REDACTED") || !strings.Contains(view, "certificateAuthorityData: DATA+OMITTED") || strings.Contains(view, "LS0t") {
		t.Fatalf("config view:\n%s", view)
	}
	if raw := e.ok("config", "view", "--raw"); !strings.Contains(raw, "clientKeyData: LS0t") {
		t.Fatalf("config view --raw:\n%s", raw)
	}
	if out := e.ok("config", "get-contexts"); !regexp.MustCompile(`CURRENT +NAME +CLUSTER +USER +NAMESPACE\n\* +test +test +test`).MatchString(out) {
		t.Fatalf("get-contexts:\n%s", out)
	}
	if out := e.ok("config", "current-context"); out != "test\n" {
		t.Fatalf("current-context: %q", out)
	}
	// A second context, and switching to it.
	cfg, err := client.LoadConfig(e.config)
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Users[0]
	cfg.AddContext(client.ContextEntry{Name: "shop", Cluster: "test", User: "test", Server: cfg.Clusters[0].Server, CA: cfg.Clusters[0].CertificateAuthorityData, Certificate: u.ClientCertificateData, Key: u.ClientKeyData, Namespace: "shop"})
	cfg.Write(e.config)
	e.ok("create", "namespace", "shop")
	if out := e.ok("config", "use-context", "shop"); out != "Switched to context \"shop\".\n" {
		t.Fatalf("use-context: %q", out)
	}
	e.file("w.yaml", "kind: Workload\nmetadata: {name: w}\nspec: {template: {image: a}}\n")
	e.ok("apply", "-f", "w.yaml")
	if out := e.ok("get", "wl", "-A", "-o", "name"); out != "workload/w\n" {
		t.Fatalf("after use-context: %q", out)
	}
	if out := e.ok("get", "wl", "-A", "--no-headers"); !strings.HasPrefix(out, "shop ") {
		t.Fatalf("the workload went to %q, want the context's namespace shop", out)
	}
	e.fails([]string{`no context "nope"`}, "config", "use-context", "nope")
}

// TestClientServerDown: a server that does not answer is named, with what
// to check.
func TestClientServerDown(t *testing.T) {
	e := newE2E(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "https://" + l.Addr().String()
	l.Close()
	cfg := e.writeConfig("down", down, e.c.Root.Cert, e.c.User(t, "admin"))
	start := time.Now()
	e.fails([]string{"cannot reach the API server at " + down + " (HTTP/2)", "connection refused", "Is the Nexus server running there?", cfg}, "--config", cfg, "get", "wl")
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("a refused connection took %s to report", d)
	}
	// A config whose CA did not sign the server's certificate.
	other, err := pki.NewRoot(pki.RootConfig{Cluster: "other"})
	if err != nil {
		t.Fatal(err)
	}
	wrong := e.writeConfig("wrong-ca", e.c.URL(), other.Cert, e.c.User(t, "admin"))
	e.fails([]string{"is not trusted", "has the cluster's CA certificate and this server's address"}, "--config", wrong, "get", "wl")
}
