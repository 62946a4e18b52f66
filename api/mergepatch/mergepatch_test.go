package mergepatch

import (
	"encoding/json"
	"strings"
	"testing"
)

// The examples of RFC 7386, appendix A.
func TestRFC7386Examples(t *testing.T) {
	for _, tc := range []struct{ doc, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`["a","b"]`, `["c","d"]`, `["c","d"]`},
		{`{"a":"b"}`, `["c"]`, `["c"]`},
		{`{"a":"foo"}`, `null`, `null`},
		{`{"a":"foo"}`, `"bar"`, `"bar"`},
		{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{`[1,2]`, `{"a":"b","c":null}`, `{"a":"b"}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
		{`{"n":12345678901234567890}`, `{"m":1}`, `{"m":1,"n":12345678901234567890}`},
	} {
		got, err := Apply([]byte(tc.doc), []byte(tc.patch))
		if err != nil {
			t.Fatalf("%s + %s: %v", tc.doc, tc.patch, err)
		}
		if !jsonEq(t, got, tc.want) {
			t.Errorf("%s + %s = %s, want %s", tc.doc, tc.patch, got, tc.want)
		}
	}
}

func jsonEq(t *testing.T, a []byte, b string) bool {
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}

func TestRefusesBadPatches(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100)
	for _, p := range []string{`{"a":`, `{} {}`, deep, ``} {
		if _, err := Apply([]byte(`{}`), []byte(p)); err == nil {
			t.Errorf("patch %.40q applied", p)
		}
	}
}

func FuzzApply(f *testing.F) {
	f.Add([]byte(`{"a":{"b":1}}`), []byte(`{"a":{"b":null,"c":[1]}}`))
	f.Add([]byte(`[1]`), []byte(`{"x":"y"}`))
	f.Fuzz(func(t *testing.T, doc, patch []byte) {
		out, err := Apply(doc, patch)
		if err != nil {
			return
		}
		// Applying the same patch again changes nothing (merge patches are
		// idempotent).
		again, err := Apply(out, patch)
		if err != nil {
			t.Fatalf("second apply: %v", err)
		}
		if !jsonEq(t, again, string(out)) {
			t.Fatalf("not idempotent: %s then %s", out, again)
		}
	})
}
