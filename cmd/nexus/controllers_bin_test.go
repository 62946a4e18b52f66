package main

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/controller"
	"nexus.dev/nexus/controller/controllertest"
)

// TestRunScaleRolloutPs drives a workload's life through the binary the
// way a user does, against a whole server (with its controllers) in the
// test's process and an agent stand-in: run, rollout status, ps, scale,
// a template change, rollout history and undo, and the mistakes a user
// makes on the way.
func TestRunScaleRolloutPs(t *testing.T) {
	srv := controllertest.Start(t, controllertest.Options{})
	srv.AddNode(t, "n1", 4000, nil, nil)
	srv.AddNode(t, "n2", 4000, nil, nil)
	controllertest.StartAgent(t, srv.Client, controllertest.Running(50*time.Millisecond))
	e := &e2e{t: t, dir: t.TempDir(), config: srv.AdminConfig}

	if out := e.ok("run", "web", "--image", "nexus.local/hello", "--replicas", "3", "--port", "8080", "--env", "GREETING=hello"); out != "workload/web created\n" {
		t.Fatalf("run: %q", out)
	}
	if out := e.ok("rollout", "status", "web", "--timeout", "30s"); !strings.Contains(out, `workload "web" successfully rolled out`) {
		t.Fatalf("rollout status: %q", out)
	}
	ps := func(want int) {
		t.Helper()
		out := e.ok("ps")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != want+1 || !regexp.MustCompile(`^NAME\s+WORKLOAD\s+NODE\s+ADDRESSES\s+PHASE\s+READY\s+RESTARTS\s+AGE$`).MatchString(lines[0]) {
			t.Fatalf("ps, want %d instances:\n%s", want, out)
		}
		row := regexp.MustCompile(`^web-[a-z0-9]{5}\s+web\s+n[12]\s+fd00::1,10\.0\.0\.1\s+Running\s+yes\s+0\s+\d+s$`)
		for _, l := range lines[1:] {
			if !row.MatchString(l) {
				t.Fatalf("ps line %q:\n%s", l, out)
			}
		}
	}
	ps(3)
	if out := e.ok("scale", "web", "5"); out != "workload/web scaled to 5\n" {
		t.Fatalf("scale: %q", out)
	}
	e.ok("rollout", "status", "web", "--timeout", "30s")
	ps(5)
	e.ok("scale", "web", "2")
	e.ok("rollout", "status", "web", "--timeout", "30s")
	ps(2)

	// A template change rolls out, recorded with its change cause.
	wl := mustResource(t, "workloads")
	for {
		o, err := srv.Client.Get(context.Background(), wl, "default", "web")
		if err != nil {
			t.Fatal(err)
		}
		w := o.(*types.Workload)
		w.Spec.Template.Env[0].Value = "bonjour"
		w.Annotations = map[string]string{controller.AnnotationChangeCause: "say bonjour"}
		if _, err = srv.Client.Update(context.Background(), w); err == nil {
			break
		}
	}
	e.ok("rollout", "status", "web", "--timeout", "30s")
	hist := e.ok("rollout", "history", "web")
	if !regexp.MustCompile(`(?s)^REVISION\s+IMAGE\s+CREATED\s+CHANGE-CAUSE\n1\s+nexus.local/hello\s+\S+ ago\s+<none>\n2\s+nexus.local/hello\s+\S+ ago\s+say bonjour\n$`).MatchString(hist) {
		t.Fatalf("history:\n%s", hist)
	}
	if out := e.ok("rollout", "undo", "web"); out != "workload/web rolled back to revision 1\n" {
		t.Fatalf("undo: %q", out)
	}
	e.ok("rollout", "status", "web", "--timeout", "30s")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.ok("rollout", "history", "web"), "\n3 ") {
		if time.Now().After(deadline) {
			t.Fatalf("the undone template is not revision 3:\n%s", e.ok("rollout", "history", "web"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out := e.ok("rollout", "history", "web", "--revision", "3"); !strings.Contains(out, "value: hello") || !strings.Contains(out, "image: nexus.local/hello") {
		t.Fatalf("revision 3 template:\n%s", out)
	}
	if out := e.ok("rollout", "undo", "web", "--to-revision", "3"); !strings.Contains(out, "skipped rollback") {
		t.Fatalf("undo to the current revision: %q", out)
	}
	e.fails([]string{`workload "web" has no revision 9: it keeps 2, 3`}, "rollout", "undo", "web", "--to-revision", "9")
	objs, _, err := srv.Client.List(context.Background(), mustResource(t, "instances"), "default", client.ListOptions{FieldSelector: "spec.workload=web"})
	if err != nil || len(objs) != 2 {
		t.Fatalf("instances after undo: %d, %v", len(objs), err)
	}
	for _, o := range objs {
		if i := o.(*types.Instance); i.Spec.Template.Env[0].Value != "hello" {
			t.Fatalf("after undo, %s has %+v", i.Name, i.Spec.Template.Env)
		}
	}

	// The command after "--" replaces the entrypoint.
	e.ok("run", "sleeper", "--image", "busybox", "--", "sleep", "3600")
	o, err := srv.Client.Get(context.Background(), wl, "default", "sleeper")
	if err != nil || !slices.Equal(o.(*types.Workload).Spec.Template.Command, []string{"sleep", "3600"}) {
		t.Fatalf("sleeper: %v %v", o, err)
	}
	if out := e.ok("ps", "sleeper", "--no-headers"); !strings.HasPrefix(out, "sleeper-") || strings.Count(out, "\n") != 1 {
		t.Fatalf("ps sleeper: %q", out)
	}

	e.fails([]string{"give the image to run with --image"}, "run", "x")
	e.fails([]string{`--env "NOEQUALS": must be NAME=VALUE`}, "run", "x", "--image", "busybox", "--env", "NOEQUALS")
	e.fails([]string{"put the command after \"--\""}, "run", "x", "sleep", "1", "--image", "busybox")
	e.fails([]string{`Workload "Bad_Name" is invalid`, "metadata.name"}, "run", "Bad_Name", "--image", "busybox")
	e.fails([]string{`replicas "-1": must be a whole number`}, "scale", "web", "--", "-1")
	e.fails([]string{"workloads/nope in namespace default: not found"}, "scale", "nope", "2")
	e.fails([]string{"name one workload"}, "rollout", "status")
}

// TestRunScaleRolloutPsHelp: each command's help explains it with examples.
func TestRunScaleRolloutPsHelp(t *testing.T) {
	for _, args := range [][]string{{"run"}, {"scale"}, {"rollout"}, {"rollout", "status"}, {"rollout", "history"}, {"rollout", "undo"}, {"ps"}} {
		out, err := run(t, append(args, "--help")...)
		if err != nil || !strings.Contains(out, "Examples:\n  nexus "+args[0]) || !strings.Contains(out, "Usage:") {
			t.Fatalf("nexus %s --help: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
