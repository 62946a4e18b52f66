package manifest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nexus.dev/nexus/api/types"
)

const web = `apiVersion: v1
kind: Workload
metadata: {name: web}
spec: {template: {image: a}}
`

func write(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func summary(docs []Document) []string {
	var out []string
	for _, d := range docs {
		s := d.Where() + ": "
		if d.Err != nil {
			s += "error: " + d.Err.Error()
		} else {
			s += d.Object.GetTypeMeta().Kind + "/" + d.Object.GetObjectMeta().Name
		}
		out = append(out, s)
	}
	return out
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	multi := write(t, dir, "app/multi.yaml", web+"---\n# only a comment\n---\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n---\nkind: Workload\nmetadata: {name: bad}\nspec: {replcas: 2}\n")
	write(t, dir, "app/list.json", `{"kind":"List","items":[{"kind":"Namespace","metadata":{"name":"a"}},{"kind":"Workloads","metadata":{"name":"b"}}]}`)
	write(t, dir, "app/README.md", "not a manifest")
	write(t, dir, "app/sub/more.yml", "kind: Namespace\nmetadata: {name: deep}\n")
	docs, err := Read([]string{filepath.Join(dir, "app"), "-"}, false, strings.NewReader(`[{"kind":"Namespace","metadata":{"name":"in"}}]`))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(summary(docs), "\n")
	want := strings.Join([]string{
		filepath.Join(dir, "app/list.json") + " (document 1): Namespace/a",
		filepath.Join(dir, "app/list.json") + ` (document 2): error: unknown kind "Workloads" (kinds: ` + kinds() + ")",
		multi + " (document 1): Workload/web",
		multi + " (document 2): Service/web",
		multi + " (document 3): error: bad fields: spec.replcas: unknown field",
		"standard input (document 1): Namespace/in",
	}, "\n")
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	docs, err = Read([]string{filepath.Join(dir, "app")}, true, nil)
	if err != nil || len(docs) != 6 || docs[5].Object.GetObjectMeta().Name != "deep" {
		t.Fatalf("recursive: %v\n%s", err, strings.Join(summary(docs), "\n"))
	}
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "nope.yaml"), "no such file"},
		{write(t, dir, "empty/x.txt", ""), ""},
	} {
		_, err := Read([]string{tc.path}, false, nil)
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v", tc.path, err)
		}
	}
	if _, err := Read([]string{filepath.Join(dir, "empty")}, false, nil); err == nil || !strings.Contains(err.Error(), "holds no .yaml, .yml or .json file") {
		t.Errorf("empty directory: %v", err)
	}
	huge := write(t, dir, "huge.yaml", "")
	if err := os.Truncate(huge, 10<<30); err != nil { // sparse: 10 GiB that take no disk
		t.Fatal(err)
	}
	if _, err := Read([]string{huge}, false, nil); err == nil || !strings.Contains(err.Error(), huge) || !strings.Contains(err.Error(), "more than 64 MiB") {
		t.Errorf("10 GiB file: %v", err)
	}
}

func kinds() string {
	var k []string
	for _, r := range types.AllResources() {
		k = append(k, r.Kind)
	}
	return strings.Join(k, ", ")
}

func TestNamespacePlacement(t *testing.T) {
	doc := func(ns string) types.Object {
		o, err := types.DecodeAny([]byte(web))
		if err != nil {
			t.Fatal(err)
		}
		o.GetObjectMeta().Namespace = ns
		return o
	}
	nsObj, _ := types.DecodeAny([]byte("kind: Namespace\nmetadata: {name: x}\n"))
	for _, tc := range []struct {
		ns       Namespace
		obj      types.Object
		want     string
		wantFail bool
	}{
		{Namespace{Default: "default"}, doc(""), "default", false},
		{Namespace{Default: "dev"}, doc("prod"), "prod", false},
		{Namespace{Default: "dev", Explicit: true}, doc("prod"), "", true},
		{Namespace{Default: "dev", Explicit: true}, doc("dev"), "dev", false},
		{Namespace{Default: "dev", Explicit: true}, nsObj, "", false},
	} {
		err := tc.ns.place(tc.obj)
		if (err != nil) != tc.wantFail || (err == nil && tc.obj.GetObjectMeta().Namespace != tc.want) {
			t.Errorf("%+v: %v, namespace %q", tc.ns, err, tc.obj.GetObjectMeta().Namespace)
		}
		if err != nil && !strings.Contains(err.Error(), `workload/web names namespace "prod", but namespace "dev" was asked for`) {
			t.Errorf("message: %v", err)
		}
	}
}
