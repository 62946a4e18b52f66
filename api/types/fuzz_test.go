package types

import (
	"encoding/json"
	"testing"
)

// FuzzDecode: any document either fails to decode with a DecodeError or
// gives an object that survives defaulting, validation and a JSON round
// trip without panicking.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(webYAML))
	f.Add([]byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"s","namespace":"d"},"spec":{"selector":{"a":"b"},"ports":[{"port":80}]}}`))
	f.Add([]byte(`{"kind":"Secret","metadata":{"name":"x","namespace":"d"},"stringData":{"k":"v"}}`))
	f.Add([]byte("kind: Node\nmetadata: {name: n1}\nstatus: {capacity: {cpu: 2, memory: 1Gi}}"))
	f.Add([]byte(`{"kind":"Workload","metadata":{"name":"w","namespace":"d"},"spec":{"template":{"image":"x"},"placement":{"tolerations":[{"key":"node.nexus.dev/unreachable","exists":true,"effect":"NoExecute","tolerationSeconds":30}]}}}`))
	f.Add([]byte(`{"kind":"Service","metadata":{"name":"s","namespace":"d"},"spec":{"type":"NodePort","selector":{"a":"b"},"virtualIPs":["fd00::a","10.0.0.1"],"sessionAffinity":"ClientIP","sessionAffinityTimeoutSeconds":60,"ports":[{"name":"h","port":80,"targetPort":8080,"nodePort":30080},{"name":"d","port":53,"protocol":"UDP"}]}}`))
	f.Add([]byte("kind: Service\nmetadata: {name: s, namespace: d}\nspec: {headless: true, selector: {app: x}}"))
	f.Add([]byte(`{"kind":"Endpoints","metadata":{"name":"s","namespace":"d"},"ports":[{"name":"h","port":8080,"protocol":"TCP"}],"backends":[{"instance":"s-1","node":"n1","addresses":["fd00::5","10.0.0.5"],"ready":true},{"instance":"s-2"}]}`))
	f.Add([]byte(`{"kind":"Node","metadata":{"name":"n1"},"spec":{"containerPrefixes":["fd00:1:2:3::/64","10.71.3.0/24"],"clusterPrefixes":["fd00:1:2::/48","10.71.0.0/16"]}}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		o, err := DecodeAny(doc)
		if err != nil {
			return
		}
		Default(o)
		errs := Validate(o)
		js, err := json.Marshal(o)
		if err != nil {
			t.Fatalf("marshal a decoded object: %v", err)
		}
		if len(errs) > 0 {
			return
		}
		back, err := Decode(js, ResourceOf(o))
		if err != nil {
			t.Fatalf("a valid object's JSON does not decode: %v\n%s", err, js)
		}
		Default(back)
		if errs := Validate(back); len(errs) > 0 {
			t.Fatalf("a valid object is invalid after a round trip: %v\n%s", errs, js)
		}
	})
}

// FuzzLabelSelector: a selector that parses prints to a string that parses
// to a selector with the same meaning.
// FuzzDecodeFast: the one-pass decoder accepts only what the strict one
// accepts, and gives the same object.
func FuzzDecodeFast(f *testing.F) {
	for _, seed := range decodeFastSeeds {
		f.Add(seed.doc, seed.plural)
	}
	f.Fuzz(func(t *testing.T, doc []byte, plural string) {
		r, ok := LookupResource(plural)
		if !ok {
			return
		}
		js, err := ToJSON(doc)
		if err != nil {
			return
		}
		fast, ok := decodeFast(js, r)
		if !ok {
			return
		}
		slow, err := decodeSlow(js, r)
		if err != nil {
			t.Fatalf("the fast decoder accepted what the strict one refuses (%v):\n%s", err, js)
		}
		a, _ := json.Marshal(fast)
		b, _ := json.Marshal(slow)
		if string(a) != string(b) {
			t.Fatalf("the decoders disagree on\n%s\nfast:   %s\nstrict: %s", js, a, b)
		}
	})
}

func FuzzLabelSelector(f *testing.F) {
	for _, s := range []string{"app=web", "a in (x,y),!b", "tier notin (db), env", "k!=v", "x==y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseLabelSelector(s)
		if err != nil {
			return
		}
		again, err := ParseLabelSelector(sel.String())
		if err != nil {
			t.Fatalf("%q printed as %q, which does not parse: %v", s, sel.String(), err)
		}
		if again.String() != sel.String() {
			t.Fatalf("%q -> %q -> %q", s, sel.String(), again.String())
		}
	})
}

// FuzzFieldSelector: a field selector that parses prints to a string that
// parses to the same selector, and checking it against a resource's
// selectable fields never panics.
func FuzzFieldSelector(f *testing.F) {
	for _, s := range []string{"metadata.name=web", "spec.node!=n1,status.phase==Running", "metadata.namespace=a,metadata.name!=b", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseFieldSelector(s)
		if err != nil {
			return
		}
		again, err := ParseFieldSelector(sel.String())
		if err != nil {
			t.Fatalf("%q printed as %q, which does not parse: %v", s, sel.String(), err)
		}
		if again.String() != sel.String() {
			t.Fatalf("%q -> %q -> %q", s, sel.String(), again.String())
		}
		for _, r := range AllResources() {
			_ = CheckFieldSelector(r, sel)
		}
	})
}

// FuzzQuantities: parsed amounts print to strings that parse back to them.
func FuzzQuantities(f *testing.F) {
	for _, s := range []string{"500m", "2", "0.25", "256Mi", "1.5Gi", "1G", "1024"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if c, err := ParseCPU(s); err == nil {
			if back, err := ParseCPU(c.String()); err != nil || back != c {
				t.Fatalf("cpu %q -> %d -> %q -> %d, %v", s, c, c.String(), back, err)
			}
		}
		if b, err := ParseBytes(s); err == nil {
			if back, err := ParseBytes(b.String()); err != nil || back != b {
				t.Fatalf("bytes %q -> %d -> %q -> %d, %v", s, b, b.String(), back, err)
			}
		}
	})
}
