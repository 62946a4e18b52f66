package edit_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"

	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/client/edit"
	"nexus.dev/nexus/api/servertest"
	"nexus.dev/nexus/api/types"
)

// step is one opening of the editor: it sees the file and may change it.
type step func(t *testing.T, file string) string

// script is an editor that runs its steps in turn, and fails the test if
// it is opened more often.
func script(t *testing.T, steps ...step) (edit.Editor, *[]string) {
	seen := &[]string{}
	return func(_ context.Context, path string) error {
		if len(*seen) >= len(steps) {
			t.Fatalf("the editor was opened %d times, expected %d", len(*seen)+1, len(steps))
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		*seen = append(*seen, string(data))
		out := steps[len(*seen)-1](t, string(data))
		return os.WriteFile(path, []byte(out), 0o600)
	}, seen
}

func replace(old, new string) step {
	return func(t *testing.T, file string) string {
		if !strings.Contains(file, old) {
			t.Fatalf("the file lacks %q:\n%s", old, file)
		}
		return strings.Replace(file, old, new, 1)
	}
}

func keep(t *testing.T, file string) string { return file }

func TestEdit(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	pool := x509.NewCertPool()
	pool.AddCert(c.Root.Cert)
	cl, err := client.New(client.Settings{Server: c.URL(), RootCAs: pool, Certificate: c.User(t, "admin")})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	wl, _ := types.LookupResource("wl")
	create := func(name string) types.Object {
		w := &types.Workload{TypeMeta: types.TypeMeta{Kind: "Workload"}}
		w.Name, w.Namespace = name, "default"
		w.Spec.Template = types.InstanceTemplate{Image: "nexus.local/hello", Ports: []types.Port{{Port: 8080}}}
		o, err := cl.Create(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	image := func(name string) string {
		o, err := cl.Get(ctx, wl, "default", name)
		if err != nil {
			t.Fatal(err)
		}
		return o.(*types.Workload).Spec.Template.Image
	}
	run := func(name string, ed edit.Editor) (string, edit.Result, error) {
		var out bytes.Buffer
		r, err := edit.Run(ctx, edit.Options{Client: cl, Resource: wl, Namespace: "default", Name: name, Editor: ed, Out: &out, TempDir: t.TempDir()})
		return out.String(), r, err
	}

	t.Run("change", func(t *testing.T) {
		create("a")
		ed, seen := script(t, replace("image: nexus.local/hello", "image: nexus.local/hello:2"))
		out, r, err := run("a", ed)
		if err != nil || r.Object == nil || out != "workload/a edited\n" || image("a") != "nexus.local/hello:2" {
			t.Fatalf("%v %q %s", err, out, image("a"))
		}
		if !strings.HasPrefix((*seen)[0], "# Edit the object below") || !strings.Contains((*seen)[0], "resourceVersion:") {
			t.Fatalf("the file shown:\n%s", (*seen)[0])
		}
	})
	t.Run("unchanged and empty cancel", func(t *testing.T) {
		before := create("b").GetObjectMeta().ResourceVersion
		ed, _ := script(t, keep)
		if out, r, err := run("b", ed); err != nil || r.Object != nil || out != "Edit cancelled: no changes made.\n" {
			t.Fatalf("unchanged: %v %q", err, out)
		}
		ed, _ = script(t, func(*testing.T, string) string { return "# just comments\n\n" })
		if out, _, err := run("b", ed); err != nil || out != "Edit cancelled: the saved file was empty.\n" {
			t.Fatalf("empty: %v %q", err, out)
		}
		if o, _ := cl.Get(ctx, wl, "default", "b"); o.GetObjectMeta().ResourceVersion != before {
			t.Fatal("a cancelled edit wrote the object")
		}
	})
	t.Run("problems reopen the editor", func(t *testing.T) {
		create("c")
		ed, seen := script(t,
			replace("image: nexus.local/hello", "image: [broken"),                    // not YAML
			replace("image: [broken", "image: nexus.local/hello:3\n    colour: red"), // an unknown field
			func(t *testing.T, file string) string { // the server refuses the port
				return replace("port: 8080", "port: 70000")(t, replace("    colour: red\n", "")(t, file))
			},
			replace("port: 70000", "port: 8081"),
		)
		out, r, err := run("c", ed)
		if err != nil || r.Object == nil || !strings.HasSuffix(out, "workload/c edited\n") {
			t.Fatalf("%v %q", err, out)
		}
		for i, want := range []string{"", "not valid YAML or JSON", "spec.template.colour: unknown field", "spec.template.ports[0].port: must be 1-65535"} {
			if want == "" {
				continue
			}
			if !strings.Contains((*seen)[i], "# The object could not be saved:") || !strings.Contains((*seen)[i], want) {
				t.Errorf("opening %d lacks the problem %q:\n%s", i+1, want, (*seen)[i])
			}
		}
		got, _ := cl.Get(ctx, wl, "default", "c")
		if w := got.(*types.Workload); w.Spec.Template.Image != "nexus.local/hello:3" || w.Spec.Template.Ports[0].Port != 8081 {
			t.Fatalf("stored: %+v", w.Spec.Template)
		}
	})
	t.Run("a problem saved again gives up and keeps the file", func(t *testing.T) {
		create("d")
		ed, _ := script(t, replace("port: 8080", "port: 0"), keep)
		_, _, err := run("d", ed)
		if !errors.Is(err, edit.ErrCancelled) {
			t.Fatalf("%v", err)
		}
		path := err.Error()[strings.LastIndex(err.Error(), " ")+1:]
		if data, rerr := os.ReadFile(path); rerr != nil || !strings.Contains(string(data), "port: 0") {
			t.Fatalf("the changes were not kept in %q: %v", path, rerr)
		}
	})
	t.Run("renaming is refused", func(t *testing.T) {
		create("e")
		ed, seen := script(t, replace("name: e", "name: e2"), replace("name: e2", "name: e"))
		if out, _, err := run("e", ed); err != nil || !strings.Contains(out, "no changes") {
			t.Fatalf("%v %q", err, out)
		}
		if !strings.Contains((*seen)[1], `metadata.name: cannot change from "e" to "e2"`) {
			t.Fatalf("second opening:\n%s", (*seen)[1])
		}
	})
	t.Run("conflict", func(t *testing.T) {
		create("f")
		ed, seen := script(t,
			func(t *testing.T, file string) string {
				// While the editor is open, someone else scales the workload.
				if _, err := cl.Patch(ctx, wl, "default", "f", []byte(`{"spec":{"replicas":4}}`)); err != nil {
					t.Fatal(err)
				}
				return replace("image: nexus.local/hello", "image: nexus.local/hello:4")(t, file)
			},
			keep, // the carried-over edit is saved as shown
		)
		out, r, err := run("f", ed)
		if err != nil || r.Object == nil {
			t.Fatalf("%v %q", err, out)
		}
		second := (*seen)[1]
		if !strings.Contains(second, "changed on the server while you edited it") || !strings.Contains(second, "image: nexus.local/hello:4") || !strings.Contains(second, "replicas: 4") {
			t.Fatalf("the file after the conflict does not hold both changes:\n%s", second)
		}
		if !strings.Contains(out, "workload/f changed on the server") || !strings.HasSuffix(out, "workload/f edited\n") {
			t.Fatalf("messages: %q", out)
		}
		w := r.Object.(*types.Workload)
		if w.Spec.Template.Image != "nexus.local/hello:4" || *w.Spec.Replicas != 4 {
			t.Fatalf("stored: image %s replicas %d", w.Spec.Template.Image, *w.Spec.Replicas)
		}
	})
	t.Run("missing object", func(t *testing.T) {
		ed, _ := script(t)
		if _, _, err := run("nope", ed); !client.IsNotFound(err) {
			t.Fatalf("%v", err)
		}
	})
}
