package printers

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/authz"
)

var now = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func meta(o types.Object, ns, name string, age time.Duration) types.Object {
	r := types.ResourceOf(o)
	*o.GetTypeMeta() = types.TypeMeta{APIVersion: "v1", Kind: r.Kind}
	m := o.GetObjectMeta()
	m.Name, m.Namespace, m.CreationTimestamp = name, ns, now.Add(-age)
	m.ResourceVersion, m.UID = "42", "u-1"
	return o
}

func ptr[T any](v T) *T { return &v }

func objects() map[string]types.Object {
	wl := &types.Workload{Spec: types.WorkloadSpec{Kind: types.KindService, Replicas: ptr[int32](3),
		Template: types.InstanceTemplate{Image: "nexus.local/hello", Ports: []types.Port{{Port: 8080}, {Port: 53, Protocol: types.UDP, HostPort: 5353}}, Isolation: types.IsolationSandbox, Labels: map[string]string{"app": "web"}}},
		Status: types.WorkloadStatus{ReadyReplicas: 2, UpdatedReplicas: 3}}
	job := &types.Workload{Spec: types.WorkloadSpec{Kind: types.KindJob, Completions: ptr[int32](5), Template: types.InstanceTemplate{Image: "batch"}},
		Status: types.WorkloadStatus{Succeeded: 4}}
	inst := &types.Instance{Spec: types.InstanceSpec{Workload: "web", NodeName: "n1", Template: types.InstanceTemplate{Image: "nexus.local/hello"}},
		Status: types.InstanceStatus{Phase: types.PhaseRunning, Ready: true, Restarts: 2, Addresses: []string{"fd00::5", "10.0.0.5"},
			LastExit: &types.ExitInfo{Code: 137, OOMKilled: true}}}
	node := &types.Node{Spec: types.NodeSpec{Unschedulable: true}, Status: types.NodeStatus{
		Capacity:   types.ResourceList{CPU: 4000, Memory: 8 << 30},
		Conditions: []types.Condition{{Type: "Ready", Status: types.ConditionTrue, Reason: "AgentReady", Message: "heartbeat fresh", LastTransitionTime: now.Add(-time.Hour)}},
		Addresses:  []types.NodeAddress{{Type: "Hostname", Address: "n1"}, {Type: "InternalIP", Address: "10.0.0.1"}},
		Versions:   types.NodeVersions{Nexus: "v0.3.0", Kernel: "6.1.0", OS: "Debian 12"}, Tiers: []types.Isolation{"container", "sandbox"}, ServiceDataPath: "ebpf",
		CertificateExpiry: now.Add(11 * time.Hour)}}
	node.Labels = map[string]string{NodeRoleLabelPrefix + "server": "", NodeRoleLabelPrefix + "agent": "", "zone": "eu"}
	svc := &types.Service{Spec: types.ServiceSpec{Type: types.ServiceNodePort, Selector: map[string]string{"app": "web", "tier": "fe"}, VirtualIPs: []string{"fd00:1::1", "10.71.255.3"},
		Ports: []types.ServicePort{{Port: 80, TargetPort: 8080, Protocol: types.TCP, NodePort: 30080}, {Port: 53, Protocol: types.UDP}}, SessionAffinity: "None"}}
	ep := &types.Endpoints{Ports: []types.EndpointPort{{Port: 8080, Protocol: types.TCP}}, Backends: []types.EndpointBackend{
		{Instance: "web-a", Node: "n1", Addresses: []string{"fd00::5", "10.0.0.5"}, Ready: true},
		{Instance: "web-b", Node: "n2", Addresses: []string{"fd00::6"}},
		{Instance: "web-c", Node: "n2", Addresses: []string{"10.0.0.7"}, Ready: true},
	}}
	sec := &types.Secret{Type: "Opaque", Data: map[string][]byte{"password": []byte("s3cret"), "user": []byte("admin")}}
	ns := &types.Namespace{Status: types.NamespaceStatus{Phase: "Active"}}
	rb := &types.RoleBinding{RoleRef: authz.RoleRef{Kind: "ClusterRole", Name: "edit"}, Subjects: []authz.Subject{{Kind: "User", Name: "alice"}, {Kind: "ServiceAccount", Namespace: "ci", Name: "bot"}}}
	return map[string]types.Object{
		"wl":   meta(wl, "default", "web", 90*time.Second),
		"job":  meta(job, "default", "batch", 5*time.Minute+3*time.Second),
		"inst": meta(inst, "default", "web-x1", 3*time.Hour),
		"node": meta(node, "", "n1", 50*time.Hour),
		"svc":  meta(svc, "default", "web", 400*24*time.Hour),
		"ep":   meta(ep, "default", "web", 400*24*time.Hour),
		"sec":  meta(sec, "default", "db", time.Minute),
		"ns":   meta(ns, "", "web", 10*time.Second),
		"rb":   meta(rb, "default", "devs", time.Minute),
	}
}

func print(t *testing.T, o Options, objs ...types.Object) string {
	t.Helper()
	var b bytes.Buffer
	o.Now = func() time.Time { return now }
	if err := New(&b, o).Print(objs, len(objs) == 1); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestTables(t *testing.T) {
	objs := objects()
	for _, tc := range []struct {
		name string
		o    Options
		objs []string
		want string
	}{
		{"workloads", Options{}, []string{"wl", "job"}, `
NAME    KIND      READY   UP-TO-DATE   IMAGE               AGE
web     service   2/3     3            nexus.local/hello   90s
batch   job       4/5     0            batch               5m3s
`},
		{"workloads wide", Options{Format: Wide}, []string{"wl"}, `
NAME   KIND      READY   UP-TO-DATE   IMAGE               AGE   PORTS                  ISOLATION   SELECTOR
web    service   2/3     3            nexus.local/hello   90s   8080/TCP,5353:53/UDP   sandbox     app=web
`},
		{"instances", Options{}, []string{"inst"}, `
NAME     PHASE     READY   NODE   RESTARTS   ADDRESS   AGE
web-x1   Running   1/1     n1     2          fd00::5   3h
`},
		{"instances wide", Options{Format: Wide, AllNamespaces: true}, []string{"inst"}, `
NAMESPACE   NAME     PHASE     READY   NODE   RESTARTS   ADDRESS   AGE   WORKLOAD   IMAGE               LAST-EXIT
default     web-x1   Running   1/1     n1     2          fd00::5   3h    web        nexus.local/hello   code 137 (OOM)
`},
		{"nodes", Options{AllNamespaces: true}, []string{"node"}, `
NAME   STATUS                     ROLES          VERSION   ADDRESS    AGE
n1     Ready,SchedulingDisabled   agent,server   v0.3.0    10.0.0.1   2d2h
`},
		{"nodes wide", Options{Format: Wide}, []string{"node"}, `
NAME   STATUS                     ROLES          VERSION   ADDRESS    AGE    CPU   MEMORY   TIERS               KERNEL   OS          SERVICE-DATAPATH   CERT-EXPIRES
n1     Ready,SchedulingDisabled   agent,server   v0.3.0    10.0.0.1   2d2h   4     8Gi      container,sandbox   6.1.0    Debian 12   ebpf               in 11h
`},
		{"services", Options{Endpoints: []*types.Endpoints{objs["ep"].(*types.Endpoints)}}, []string{"svc"}, `
NAME   TYPE       VIRTUAL-IPS             PORTS                       ENDPOINTS   AGE
web    NodePort   fd00:1::1,10.71.255.3   80->8080:30080/TCP,53/UDP   2/3         400d
`},
		{"services wide without endpoints", Options{Format: Wide}, []string{"svc"}, `
NAME   TYPE       VIRTUAL-IPS             PORTS                       ENDPOINTS   AGE    SELECTOR          AFFINITY
web    NodePort   fd00:1::1,10.71.255.3   80->8080:30080/TCP,53/UDP   <none>      400d   app=web,tier=fe   None
`},
		{"endpoints", Options{}, []string{"ep"}, `
NAME   READY   BACKENDS                       AGE
web    2/3     [fd00::5]:8080,10.0.0.7:8080   400d
`},
		{"secrets", Options{}, []string{"sec"}, `
NAME   TYPE     DATA   AGE
db     Opaque   2      60s
`},
		{"namespaces", Options{}, []string{"ns"}, `
NAME   STATUS   AGE
web    Active   10s
`},
		{"bindings", Options{NoHeaders: true}, []string{"rb"}, `
devs   ClusterRole/edit   User/alice,ServiceAccount/ci/bot   60s
`},
		{"two kinds", Options{}, []string{"wl", "svc"}, `
NAME   KIND      READY   UP-TO-DATE   IMAGE               AGE
web    service   2/3     3            nexus.local/hello   90s

NAME   TYPE       VIRTUAL-IPS             PORTS                       ENDPOINTS   AGE
web    NodePort   fd00:1::1,10.71.255.3   80->8080:30080/TCP,53/UDP   <none>      400d
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var list []types.Object
			for _, k := range tc.objs {
				list = append(list, objs[k])
			}
			got := print(t, tc.o, list...)
			if got != strings.TrimPrefix(tc.want, "\n") {
				t.Fatalf("got:\n%s\nwant:\n%s", got, strings.TrimPrefix(tc.want, "\n"))
			}
		})
	}
}

func TestSecretValuesAreNeverShown(t *testing.T) {
	sec := objects()["sec"]
	var b bytes.Buffer
	if err := Describe(&b, sec, nil, now); err != nil {
		t.Fatal(err)
	}
	out := print(t, Options{Format: Wide}, sec) + b.String()
	for _, v := range []string{"s3cret", "czNjcmV0", "YWRtaW4"} {
		if strings.Contains(out, v) {
			t.Fatalf("a secret value is shown:\n%s", out)
		}
	}
	if !strings.Contains(b.String(), "password: 6 bytes") {
		t.Fatalf("describe does not list the keys with their sizes:\n%s", b.String())
	}
}

func TestJSONYAMLAndName(t *testing.T) {
	objs := objects()
	one := print(t, Options{Format: JSON}, objs["wl"])
	var w types.Workload
	if err := json.Unmarshal([]byte(one), &w); err != nil || w.Name != "web" || w.Kind != "Workload" {
		t.Fatalf("json of one object: %v\n%s", err, one)
	}
	many := print(t, Options{Format: JSON}, objs["wl"], objs["svc"])
	var l struct {
		Kind  string
		Items []map[string]any
	}
	if err := json.Unmarshal([]byte(many), &l); err != nil || l.Kind != "List" || len(l.Items) != 2 {
		t.Fatalf("json of two: %v\n%s", err, many)
	}
	if got := print(t, Options{Format: JSON}); !strings.Contains(got, `"items": []`) {
		t.Fatalf("json of none: %s", got)
	}
	y := print(t, Options{Format: YAML}, objs["wl"])
	if !strings.HasPrefix(y, "apiVersion: v1\nkind: Workload\nmetadata:\n") || !strings.Contains(y, "image: nexus.local/hello") {
		t.Fatalf("yaml:\n%s", y)
	}
	if got := print(t, Options{Format: Name}, objs["wl"], objs["node"]); got != "workload/web\nnode/n1\n" {
		t.Fatalf("name: %q", got)
	}
	if _, err := ParseFormat("xml"); err == nil || !strings.Contains(err.Error(), "table, wide, json, yaml or name") {
		t.Fatalf("bad format: %v", err)
	}
}

func TestWatchOutput(t *testing.T) {
	objs := objects()
	long := meta(&types.Workload{Spec: types.WorkloadSpec{Kind: types.KindService, Replicas: ptr[int32](1), Template: types.InstanceTemplate{Image: "a-much-longer-image-name"}}}, "default", "w", time.Second)
	var b bytes.Buffer
	p := New(&b, Options{WatchEvents: true, Now: func() time.Time { return now }})
	p.PrintEvent(client.Event{Type: client.Added, Object: objs["wl"]})
	p.PrintEvent(client.Event{Type: client.Deleted, Object: long})
	want := "" +
		"EVENT   NAME   KIND      READY   UP-TO-DATE   IMAGE               AGE\n" +
		"ADDED   web    service   2/3     3            nexus.local/hello   90s\n" +
		"DELETED   w      service   0/1     0            a-much-longer-image-name   1s\n"
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	p = New(&b, Options{WatchEvents: true, Now: func() time.Time { return now }})
	p.PrintInitial([]types.Object{objs["wl"], objs["job"]})
	if want := "" +
		"EVENT   NAME    KIND      READY   UP-TO-DATE   IMAGE               AGE\n" +
		"ADDED   web     service   2/3     3            nexus.local/hello   90s\n" +
		"ADDED   batch   job       4/5     0            batch               5m3s\n"; b.String() != want {
		t.Fatalf("initial table:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	p = New(&b, Options{Format: JSON})
	p.PrintInitial([]types.Object{objs["wl"], objs["job"]})
	dec := json.NewDecoder(&b)
	for _, name := range []string{"web", "batch"} {
		var w types.Workload
		if err := dec.Decode(&w); err != nil || w.Name != name {
			t.Fatalf("initial JSON: want one document per object, %s next: %v", name, err)
		}
	}
	b.Reset()
	p = New(&b, Options{Format: YAML})
	p.PrintEvent(client.Event{Type: client.Added, Object: objs["wl"]})
	p.PrintEvent(client.Event{Type: client.Modified, Object: objs["wl"]})
	if strings.Count(b.String(), "---\n") != 1 || strings.Count(b.String(), "kind: Workload") != 2 {
		t.Fatalf("yaml events:\n%s", b.String())
	}
	b.Reset()
	p = New(&b, Options{Format: JSON, WatchEvents: true})
	p.PrintEvent(client.Event{Type: client.Deleted, Object: objs["wl"]})
	var ev struct {
		Type   string
		Object map[string]any
	}
	if err := json.Unmarshal(b.Bytes(), &ev); err != nil || ev.Type != "DELETED" || ev.Object["kind"] != "Workload" {
		t.Fatalf("json event: %v %s", err, b.String())
	}
}

func TestDescribe(t *testing.T) {
	objs := objects()
	var b bytes.Buffer
	if err := Describe(&b, objs["node"], []types.Object{objs["inst"]}, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Name:             n1\n",
		"Kind:             Node\n",
		"Labels:           node-role.nexus.dev/agent=\n                  node-role.nexus.dev/server=\n                  zone=eu\n",
		"Created:          2026-04-29T10:00:00Z (2d2h ago)\n",
		"Spec:\n  unschedulable: true\n",
		"Status:\n  addresses:\n",
		"Conditions:\n  TYPE    STATUS   REASON       AGE   MESSAGE\n  Ready   True ",
		"AgentReady   60m   heartbeat fresh\n",
		"Instances:\n  NAME     PHASE     READY   NODE",
		"  web-x1   Running",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "conditions:") {
		t.Errorf("conditions shown twice:\n%s", out)
	}
	b.Reset()
	Describe(&b, objs["wl"], nil, now)
	if !strings.Contains(b.String(), "Instances:\n  <none>\n") || !strings.Contains(b.String(), "Namespace:        default\n") {
		t.Errorf("workload without instances:\n%s", b.String())
	}
}

// TestDescribeInstanceEvents: an instance's events are a table of their
// own (a repeat shows its count and span), not YAML in the status.
func TestDescribeInstanceEvents(t *testing.T) {
	inst := objects()["inst"].(*types.Instance)
	inst.Status.Events = []types.InstanceEvent{
		{Type: types.EventNormal, Reason: "Started", Message: "container started (pid 42)", Count: 1, FirstTime: now.Add(-90 * time.Second), LastTime: now.Add(-90 * time.Second)},
		{Type: types.EventWarning, Reason: "BackOff", Message: "exited with code 1; restarting it", Count: 4, FirstTime: now.Add(-60 * time.Second), LastTime: now.Add(-5 * time.Second)},
	}
	var b bytes.Buffer
	if err := Describe(&b, inst, nil, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Events:\n  TYPE      REASON    AGE                MESSAGE\n",
		"  Normal    Started   90s                container started (pid 42)\n",
		"  Warning   BackOff   5s (x4 over 60s)   exited with code 1; restarting it\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "events:") {
		t.Errorf("events shown in the status too:\n%s", out)
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-5 * time.Second: "<invalid>", 0: "0s", 119 * time.Second: "119s", 3*time.Minute + 12*time.Second: "3m12s",
		5 * time.Minute: "5m", 150 * time.Minute: "150m", 5*time.Hour + 30*time.Minute: "5h30m", 30 * time.Hour: "30h",
		(3*24 + 5) * time.Hour: "3d5h", 40 * 24 * time.Hour: "40d", 3 * 365 * 24 * time.Hour: "3y", 9 * 365 * 24 * time.Hour: "9y",
	} {
		if got := HumanDuration(d); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
	}
}

// TestDescribeService: the spec (type, addresses, ports), every backend
// with its node, addresses and readiness, and the conditions.
func TestDescribeService(t *testing.T) {
	objs := objects()
	svc := objs["svc"].(*types.Service)
	svc.Status.Conditions = []types.Condition{{Type: types.ServiceConditionEndpoints, Status: types.ConditionTrue, Reason: types.ReasonReadyInstances, Message: "ready instances serve it", LastTransitionTime: now.Add(-time.Minute)}}
	var b bytes.Buffer
	if err := Describe(&b, svc, []types.Object{objs["ep"]}, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Kind:             Service\n",
		"  type: NodePort\n",
		"  virtualIPs:\n  - fd00:1::1\n  - 10.71.255.3\n",
		"  - nodePort: 30080\n    port: 80\n",
		"Conditions:\n  TYPE        STATUS   REASON           AGE   MESSAGE\n  Endpoints   True     ReadyInstances   60s   ready instances serve it\n",
		"Backends:         2/3 ready\n  INSTANCE   NODE   ADDRESSES          READY\n  web-a      n1     fd00::5,10.0.0.5   true\n  web-b      n2     fd00::6            false\n  web-c      n2     10.0.0.7           true\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("describe service lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	if err := Describe(&b, svc, nil, now); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "Backends:         <none> (no Endpoints yet") {
		t.Errorf("describe service without endpoints:\n%s", b.String())
	}
}
