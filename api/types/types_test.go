package types

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"nexus.dev/nexus/scheduler"
)

const webYAML = `
apiVersion: v1
kind: Workload
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  kind: service
  replicas: 3
  template:
    labels: {app: web}
    image: nexus.local/hello
    env:
    - {name: GREETING, value: hi}
    - name: TOKEN
      valueFrom: {secretKeyRef: {name: web-secrets, key: token}}
    resources:
      requests: {cpu: 250m, memory: 64Mi}
      limits: {cpu: "1", memory: 128Mi}
    ports:
    - {name: http, port: 8080}
    readiness: {http: {port: 8080, path: /healthz}}
  placement:
    constraints: ["zone in (eu-1,eu-2)"]
    spread: {topology: zone, maxSkew: 1, hard: true}
`

func decodeValid(t *testing.T, doc string) Object {
	t.Helper()
	o, err := DecodeAny([]byte(doc))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	Default(o)
	if errs := Validate(o); len(errs) > 0 {
		t.Fatalf("validate: %v", errs)
	}
	return o
}

func TestWorkloadDecodesDefaultsAndValidates(t *testing.T) {
	w := decodeValid(t, webYAML).(*Workload)
	if *w.Spec.Replicas != 3 || w.Spec.Template.Resources.Requests.CPU != 250 || w.Spec.Template.Resources.Limits.Memory != 128<<20 {
		t.Fatalf("decoded %+v", w.Spec)
	}
	tpl := w.Spec.Template
	if tpl.RestartPolicy != RestartAlways || tpl.Isolation != IsolationContainer || *tpl.TerminationGracePeriodSeconds != 30 ||
		tpl.Ports[0].Protocol != TCP || tpl.Readiness.PeriodSeconds != 10 || tpl.Readiness.FailureThreshold != 3 {
		t.Fatalf("defaults not applied: %+v", tpl)
	}
	if w.Spec.Strategy.MaxSurge != Percent(25) || w.Spec.Strategy.MaxUnavailable != Percent(25) || w.Spec.StopOnDisconnect != nil || !w.Spec.StopsOnDisconnect() {
		t.Fatalf("strategy/stopOnDisconnect defaults: %+v %v", w.Spec.Strategy, w.Spec.StopOnDisconnect)
	}
	// Unset, stopOnDisconnect follows the replicas; set, it is as set.
	for _, tc := range []struct {
		kind     WorkloadKind
		replicas int32
		set      *bool
		want     bool
	}{
		{KindService, 1, nil, false}, {KindService, 2, nil, true}, {KindService, 3, ptr(false), false},
		{KindService, 1, ptr(true), true}, {KindJob, 5, nil, false}, {KindDaemon, 0, nil, false}, {KindDaemon, 0, ptr(true), true},
	} {
		s := WorkloadSpec{Kind: tc.kind, Replicas: &tc.replicas, StopOnDisconnect: tc.set}
		if got := s.StopsOnDisconnect(); got != tc.want {
			t.Errorf("%s with %d replicas, stopOnDisconnect %v: %v, want %v", tc.kind, tc.replicas, tc.set, got, tc.want)
		}
	}
	// The JSON form round-trips, quantities in their canonical spelling.
	js, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"cpu":"250m"`, `"memory":"64Mi"`, `"cpu":"1"`, `"maxSurge":"25%"`, `"apiVersion":"v1"`, `"kind":"Workload"`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("JSON lacks %s: %s", want, js)
		}
	}
	back, err := Decode(js, w.GetTypeMeta().resource())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, Object(w)) {
		t.Fatalf("round trip changed the object:\n%+v\n%+v", back, w)
	}
}

func (t *TypeMeta) resource() *Resource { r, _ := LookupResource(t.Kind); return r }

func TestValidationNamesFieldAndRule(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit string // replaces the first occurrence of old in webYAML
		old  string
		want []string
	}{
		{"port out of range", "- {name: http, port: 8080}\n    - {name: admin, port: 70000}", "- {name: http, port: 8080}",
			[]string{"spec.template.ports[1].port: must be 1-65535"}},
		{"bad name", "name: Web_1", "name: web", []string{"metadata.name: must be lower-case letters"}},
		{"request above limit", "cpu: 250m", "cpu: 250m", nil},
		{"request above limit", "requests: {cpu: \"2\", memory: 64Mi}", "requests: {cpu: 250m, memory: 64Mi}",
			[]string{"spec.template.resources.requests.cpu: 2 is more than the limit 1"}},
		{"two probes", "readiness: {http: {port: 8080, path: /healthz}, tcp: {port: 8080}}", "readiness: {http: {port: 8080, path: /healthz}}",
			[]string{"spec.template.readiness: must have exactly one of http, tcp and exec, not 2"}},
		{"bad constraint", `constraints: ["zone in eu"]`, `constraints: ["zone in (eu-1,eu-2)"]`,
			[]string{"spec.placement.constraints[0]: parse constraint \"zone in eu\": set must be in parentheses"}},
		{"job with always", "kind: job\n  template:\n    restartPolicy: always", "kind: service\n  replicas: 3\n  template:",
			[]string{"spec.template.restartPolicy: a job's instances must be on-failure or never"}},
		{"replicas on a job", "kind: job", "kind: service", []string{"spec.replicas: applies only to a service workload, not a job"}},
		{"bad kind", "kind: cron", "kind: service", []string{`spec.kind: must be service, job or daemon, not "cron"`}},
		{"bad env", "name: 1GREETING", "name: GREETING", []string{"spec.template.env[0].name: must be letters"}},
		{"bad image", "image: 'UPPER CASE'", "image: nexus.local/hello", []string{"spec.template.image: \"UPPER CASE\" is not an image reference"}},
		{"bad label", "labels: {app: -web}", "labels: {app: web}", []string{`metadata.labels["app"]: label value "-web" must be empty or letters`}},
		{"tolerationSeconds", `constraints: ["zone in (eu-1,eu-2)"]
    tolerations: [{key: node.nexus.dev/unreachable, exists: true, effect: NoExecute, tolerationSeconds: 30}]`, `constraints: ["zone in (eu-1,eu-2)"]`, nil},
		{"negative tolerationSeconds", `constraints: ["zone in (eu-1,eu-2)"]
    tolerations: [{key: node.nexus.dev/unreachable, exists: true, effect: NoExecute, tolerationSeconds: -1}]`, `constraints: ["zone in (eu-1,eu-2)"]`,
			[]string{"spec.placement.tolerations[0].tolerationSeconds: must not be negative"}},
		{"tolerationSeconds without NoExecute", `constraints: ["zone in (eu-1,eu-2)"]
    tolerations: [{key: gpu, exists: true, tolerationSeconds: 5}]`, `constraints: ["zone in (eu-1,eu-2)"]`,
			[]string{`spec.placement.tolerations[0].tolerationSeconds: applies only to effect NoExecute (how long an instance stays on a node after the taint appears), not "any effect"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(webYAML, tc.old, tc.edit, 1)
			if doc == webYAML && tc.want != nil {
				t.Fatalf("edit %q not applied", tc.old)
			}
			o, err := DecodeAny([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			Default(o)
			errs := Validate(o)
			if tc.want == nil {
				if len(errs) != 0 {
					t.Fatalf("unexpected errors: %v", errs)
				}
				return
			}
			for _, w := range tc.want {
				if !strings.Contains(errs.Error(), w) {
					t.Errorf("errors %q do not contain %q", errs.Error(), w)
				}
			}
		})
	}
}

func TestNodePrefixesValidation(t *testing.T) {
	const cluster = `["fd00:6e78:7400::/48", "10.71.0.0/16"]`
	for _, tc := range []struct {
		spec string
		want string // "" for valid
	}{
		{`{}`, ""},
		{`{containerPrefixes: ["fd00:6e78:7400:3::/64", "10.71.3.0/24"], clusterPrefixes: ` + cluster + `}`, ""},
		{`{containerPrefixes: ["fd00:6e78:7400:3::/64", "10.71.3.0/24"]}`, "spec.clusterPrefixes: must be an IPv6 prefix, then an IPv4 prefix (0 entries given)"},
		{`{containerPrefixes: ["10.71.3.0/24", "fd00:6e78:7400:3::/64"], clusterPrefixes: ` + cluster + `}`, `spec.containerPrefixes[0]: must be an IPv6 prefix, not "10.71.3.0/24"`},
		{`{containerPrefixes: ["fd00:6e78:7400:3::/64", "10.71.3.1/24"], clusterPrefixes: ` + cluster + `}`, `spec.containerPrefixes[1]: "10.71.3.1/24" has bits set after the first 24: use 10.71.3.0/24`},
		{`{containerPrefixes: ["fd00:6e78:7400::/56", "10.71.3.0/24"], clusterPrefixes: ` + cluster + `}`, "spec.containerPrefixes[0]: must be a /64, not a /56"},
		{`{containerPrefixes: ["fd00:6e78:7400:3::/64", "10.72.3.0/24"], clusterPrefixes: ` + cluster + `}`, "spec.containerPrefixes[1]: 10.72.3.0/24 is not inside spec.clusterPrefixes[1] 10.71.0.0/16"},
		{`{containerPrefixes: ["fd00:6e78:7400:3::/64", "nonsense"], clusterPrefixes: ` + cluster + `}`, `spec.containerPrefixes[1]: must be an address prefix such as fd00:1::/64 or 10.71.1.0/24, not "nonsense"`},
	} {
		o, err := DecodeAny([]byte("kind: Node\nmetadata: {name: n1}\nspec: " + tc.spec))
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		errs := Validate(o)
		switch {
		case tc.want == "" && len(errs) != 0:
			t.Errorf("%s: %v, want valid", tc.spec, errs)
		case tc.want != "" && !strings.Contains(errs.Error(), tc.want):
			t.Errorf("%s: %v, want an error containing %q", tc.spec, errs, tc.want)
		}
	}
}

func TestDecodeRejectsUnknownFieldsAndWrongTypes(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"unknown nested fields", strings.Replace(webYAML, "image: nexus.local/hello", "image: nexus.local/hello\n    imagePullPolicy: Always\n    prots: []", 1),
			[]string{"spec.template.imagePullPolicy: unknown field", "spec.template.prots: unknown field"}},
		{"unknown top-level", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s","namespace":"default"},"spec":{}}`, []string{"spec: unknown field"}},
		{"field case matters", `{"apiVersion":"v1","kind":"Namespace","Metadata":{"name":"x"}}`, []string{"Metadata: unknown field"}},
		{"unknown in list element", strings.Replace(webYAML, "port: 8080}\n    readiness", "port: 8080, hostIP: x}\n    readiness", 1), []string{"spec.template.ports[0].hostIP: unknown field"}},
		{"wrong type", strings.Replace(webYAML, "replicas: 3", "replicas: three", 1), []string{"spec.replicas: must be a whole number, not string"}},
		{"bad quantity", strings.Replace(webYAML, "cpu: 250m", "cpu: lots", 1), []string{`CPU amount "lots"`}},
		{"wrong apiVersion", strings.Replace(webYAML, "apiVersion: v1", "apiVersion: apps/v1", 1), []string{`apiVersion "apps/v1" is not served: use "v1"`}},
		{"unknown kind", strings.Replace(webYAML, "kind: Workload", "kind: Deployment", 1), []string{`unknown kind "Deployment"`}},
		{"no kind", "metadata: {name: x}", []string{"kind is missing"}},
		{"not an object", "- a\n- b", []string{"not an object"}},
		{"bad yaml", "kind: [", []string{"not valid YAML"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeAny([]byte(tc.doc))
			if err == nil {
				t.Fatal("decoded")
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %T %v is not a *DecodeError", err, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// Decode for one resource refuses another kind.
	r, _ := LookupResource("svc")
	if _, err := Decode([]byte(webYAML), r); err == nil || !strings.Contains(err.Error(), `kind "Workload" does not match the resource services`) {
		t.Fatalf("Decode as services: %v", err)
	}
}

func TestQuantities(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{{"500m", 500, true}, {"2", 2000, true}, {"0.25", 250, true}, {"1.5", 1500, true}, {"0.0001", 0, false}, {"-1", 0, false}, {"1e3", 0, false}, {"m", 0, false}, {"", 0, false}} {
		got, err := ParseCPU(tc.in)
		if (err == nil) != tc.ok || (tc.ok && int64(got) != tc.want) {
			t.Errorf("ParseCPU(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{{"256Mi", 256 << 20, true}, {"1Gi", 1 << 30, true}, {"1.5Gi", 3 << 29, true}, {"1G", 1e9, true}, {"1024", 1024, true}, {"128k", 128000, true},
		{"0.5", 0, false}, {"1.5", 0, false}, {"Mi", 0, false}, {"-1Mi", 0, false}, {"9Ei", 0, false}, {"1Xi", 0, false}} {
		got, err := ParseBytes(tc.in)
		if (err == nil) != tc.ok || (tc.ok && int64(got) != tc.want) {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	for _, b := range []Bytes{0, 1, 1023, 1024, 64 << 20, 3 << 29, 1e9} {
		if back, err := ParseBytes(b.String()); err != nil || back != b {
			t.Errorf("Bytes %d -> %q -> %d, %v", b, b.String(), back, err)
		}
	}
	// Numbers in JSON are cores and bytes.
	var rl ResourceList
	if err := json.Unmarshal([]byte(`{"cpu":0.5,"memory":1048576}`), &rl); err != nil || rl.CPU != 500 || rl.Memory != 1<<20 {
		t.Fatalf("numbers: %+v %v", rl, err)
	}
}

func TestLabelSelectors(t *testing.T) {
	labels := map[string]string{"app": "web", "tier": "front", "env": "prod"}
	for _, tc := range []struct {
		sel   string
		match bool
	}{
		{"", true}, {"app=web", true}, {"app==web", true}, {"app=db", false}, {"app!=db", true}, {"missing!=x", true},
		{"app in (web,db)", true}, {"app notin (web)", false}, {"tier", true}, {"!tier", false}, {"!missing", true},
		{"app=web,tier=front", true}, {"app=web,tier=back", false}, {"env in (prod, staging),app", true},
	} {
		s, err := ParseLabelSelector(tc.sel)
		if err != nil {
			t.Fatalf("%q: %v", tc.sel, err)
		}
		if got := s.Matches(labels); got != tc.match {
			t.Errorf("%q matches = %v, want %v", tc.sel, got, tc.match)
		}
		// The printed form parses to the same selector.
		again, err := ParseLabelSelector(s.String())
		if err != nil || !reflect.DeepEqual(again, s) {
			t.Errorf("%q -> %q -> %v, %v", tc.sel, s.String(), again, err)
		}
	}
	for _, bad := range []string{"app=", "=web", "app in web", "app in ()", "a=b=c", ",", "app=web,", "app in (a,b", "Bad Key=1", "app notin"} {
		if s, err := ParseLabelSelector(bad); err == nil && bad != "app=" {
			t.Errorf("%q parsed as %v", bad, s)
		}
	}
	if _, err := ParseFieldSelector("spec.nodeName in (a)"); err == nil {
		t.Error("field selectors take only = and !=")
	}
	inst := &Instance{}
	inst.Name, inst.Namespace, inst.Spec.NodeName = "web-1", "default", "n1"
	fs, err := ParseFieldSelector("spec.nodeName=n1,metadata.namespace=default")
	if err != nil || !fs.Matches(SelectableFields(inst)) {
		t.Fatalf("field selector: %v", err)
	}
	r, _ := LookupResource("instances")
	if err := CheckFieldSelector(r, fs); err != nil {
		t.Fatal(err)
	}
	bad, _ := ParseFieldSelector("spec.image=x")
	if err := CheckFieldSelector(r, bad); err == nil || !strings.Contains(err.Error(), "spec.nodeName") {
		t.Fatalf("unknown field: %v", err)
	}
}

func TestSplitDocuments(t *testing.T) {
	docs, err := SplitDocuments([]byte("# comment\n---\na: 1\n---\n\n---\nb: 2\n--- \nc: 3"))
	if err != nil || len(docs) != 3 {
		t.Fatalf("yaml: %d docs, %v", len(docs), err)
	}
	docs, err = SplitDocuments([]byte(`{"kind":"List","items":[{"a":1},{"b":2}]} {"c":3}`))
	if err != nil || len(docs) != 3 {
		t.Fatalf("json: %d docs %v", len(docs), err)
	}
}

func TestValidateUpdateKeepsImmutableFields(t *testing.T) {
	old := decodeValid(t, webYAML).(*Workload)
	upd := *old
	upd.Spec.Kind = KindDaemon
	if errs := ValidateUpdate(old, &upd); len(errs) != 1 || errs[0].Field != "spec.kind" {
		t.Fatalf("kind change: %v", errs)
	}
	inst := &Instance{Spec: InstanceSpec{NodeName: "n1", Template: old.Spec.Template}}
	moved := *inst
	moved.Spec.NodeName = "n2"
	if errs := ValidateUpdate(inst, &moved); len(errs) != 1 || errs[0].Field != "spec.nodeName" {
		t.Fatalf("rebind: %v", errs)
	}
}

func TestSchedulerInstance(t *testing.T) {
	w := decodeValid(t, webYAML).(*Workload)
	inst := &Instance{Spec: InstanceSpec{Workload: "web", Template: w.Spec.Template, Placement: w.Spec.Placement}}
	inst.Name, inst.Namespace = "web-abc", "default"
	inst.Spec.Template.Ports[0].HostPort = 18080
	si, err := SchedulerInstance(inst)
	if err != nil {
		t.Fatal(err)
	}
	if si.Group != "default/web" || si.Request.MilliCPU != 250 || si.Request.MemoryBytes != 64<<20 ||
		!slices.Equal(si.HostPorts, []scheduler.Port{18080}) || len(si.Constraints) != 1 || si.Spread == nil || !si.Spread.Hard {
		t.Fatalf("converted: %+v", si)
	}

	// Without a spread of its own, an instance spreads softly over nodes:
	// six instances of one workload on three equal, empty nodes go two to
	// each (binpack alone stacked them 3, 2, 1).
	var snap scheduler.Snapshot
	for _, n := range []string{"a1", "a2", "a3"} {
		snap.Nodes = append(snap.Nodes, scheduler.Node{ID: n, Ready: true, Capacity: scheduler.Resources{MilliCPU: 2000, MemoryBytes: 4 << 30}})
	}
	st, err := scheduler.NewState(snap)
	if err != nil {
		t.Fatal(err)
	}
	sch := scheduler.New(scheduler.Config{Seed: 1}, st)
	per := map[string]int{}
	for i := range 6 {
		plain := &Instance{Spec: InstanceSpec{Workload: "web", Template: InstanceTemplate{Image: "nexus.local/hello"}}}
		plain.Name, plain.Namespace = fmt.Sprintf("web-%d", i), "default"
		si, err := SchedulerInstance(plain)
		if err != nil {
			t.Fatal(err)
		}
		if si.Spread == nil || si.Spread.Topology != DefaultSpreadTopology || si.Spread.Hard {
			t.Fatalf("an instance without a spread: %+v, want a soft spread over %s", si.Spread, DefaultSpreadTopology)
		}
		res := sch.Place(&si)
		if res.Decision == nil {
			t.Fatalf("web-%d not placed: %+v", i, res.Unplaceable)
		}
		per[res.Decision.NodeID]++
	}
	if per["a1"] != 2 || per["a2"] != 2 || per["a3"] != 2 {
		t.Fatalf("6 instances over 3 nodes: %v, want 2 each", per)
	}
}

// decodeFastSeeds are documents on both sides of what the one-pass decoder
// takes.
var decodeFastSeeds = []struct {
	doc    []byte
	plural string
}{
	{[]byte(`{"kind":"Workload","metadata":{"name":"web","labels":{"app":"web","Name":"x"}},"spec":{"replicas":3,"template":{"image":"nexus.local/hello","ports":[{"name":"http","port":8080}]}}}`), "workloads"},
	{[]byte(`{"kind":"Workload","metadata":{"name":"web"},"Spec":{"replicas":3}}`), "workloads"},
	{[]byte(`{"kind":"Workload","metadata":{"name":"web"},"spec":{"replicas":"3"}}`), "workloads"},
	{[]byte(`{"kind":"Workload","metadata":{"name":"web"},"spec":{"replicas":3}} {}`), "workloads"},
	{[]byte(`{"kind":"Service","metadata":{"name":"web"},"spe\u0063":{}}`), "workloads"},
	{[]byte(`{"kind":"Secret","metadata":{"name":"s"},"stringData":{"k":"v"}}`), "secrets"},
	{[]byte(`{"kind":"Node","metadata":{"name":"n1"},"status":{"capacity":{"cpu":"2","memory":"1Gi"}}}`), "nodes"},
	{[]byte(`{"kind":"Service","metadata":{"name":"web"},"spec":{"type":"NodePort","selector":{"app":"web"},"ports":[{"port":80,"nodePort":30080}]}}`), "services"},
	{[]byte(`{"kind":"Endpoints","metadata":{"name":"web"},"backends":[{"instance":"web-1","Ready":true}]}`), "endpoints"},
}

// TestDecodeFastAgreesWithStrict: documents the strict decoder refuses
// (a field matched only by case, an escaped key, a wrong type, trailing
// data, a wrong kind) are refused with the strict decoder's message, and
// plain ones decode alike.
func TestDecodeFastAgreesWithStrict(t *testing.T) {
	for _, c := range []struct {
		doc     string
		plural  string
		wantErr string
	}{
		{`{"kind":"Workload","metadata":{"name":"web","labels":{"app":"web","Name":"x"}},"spec":{"replicas":3,"template":{"image":"i"}}}`, "workloads", ""},
		{`{"kind":"Workload","metadata":{"name":"web"},"Spec":{"replicas":3}}`, "workloads", "Spec: unknown field"},
		{`{"kind":"Workload","metadata":{"NAME":"web"}}`, "workloads", "metadata.NAME: unknown field"},
		{`{"kind":"Workload","metadata":{"name":"web"},"spe\u0063":{"Replicas":3}}`, "workloads", "spec.Replicas: unknown field"},
		{`{"kind":"Workload","metadata":{"name":"web"},"spec":{"replicas":"3"}}`, "workloads", "spec.replicas"},
		{`{"kind":"Service","metadata":{"name":"web"}}`, "workloads", `kind "Service" does not match`},
		{`{"apiVersion":"v2","kind":"Workload","metadata":{"name":"web"}}`, "workloads", `apiVersion "v2" is not served`},
	} {
		r, _ := LookupResource(c.plural)
		o, err := Decode([]byte(c.doc), r)
		if c.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", c.doc, err)
			} else if m := o.GetObjectMeta(); m.Name != "web" || m.Labels["Name"] != "x" {
				t.Errorf("%s: decoded %+v", c.doc, m)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%s: error %v, want one containing %q", c.doc, err, c.wantErr)
		}
	}
}
