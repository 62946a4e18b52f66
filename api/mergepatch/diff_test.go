package mergepatch

import "testing"

func TestDiff(t *testing.T) {
	for _, tc := range []struct{ orig, modified, want string }{
		{`{"a":1}`, `{"a":1}`, `{}`},
		{`{"a":1}`, `{"a":2}`, `{"a":2}`},
		{`{"a":1,"b":2}`, `{"a":1}`, `{"b":null}`},
		{`{"a":{"b":1,"c":2}}`, `{"a":{"b":1,"c":3,"d":4}}`, `{"a":{"c":3,"d":4}}`},
		{`{"a":[1,2]}`, `{"a":[1,3]}`, `{"a":[1,3]}`},
		{`{"a":{"b":1}}`, `{"a":"x"}`, `{"a":"x"}`},
		{`{"n":12345678901234567890}`, `{"n":12345678901234567891}`, `{"n":12345678901234567891}`},
		{`[1]`, `{"a":1}`, `{"a":1}`},
	} {
		got, err := Diff([]byte(tc.orig), []byte(tc.modified))
		if err != nil {
			t.Fatalf("%s -> %s: %v", tc.orig, tc.modified, err)
		}
		if !jsonEq(t, got, tc.want) {
			t.Errorf("Diff(%s, %s) = %s, want %s", tc.orig, tc.modified, got, tc.want)
		}
		// The patch turns the original into the modified document.
		back, err := Apply([]byte(tc.orig), got)
		if err != nil {
			t.Fatal(err)
		}
		if !jsonEq(t, back, tc.modified) {
			t.Errorf("Apply(%s, Diff) = %s, want %s", tc.orig, back, tc.modified)
		}
	}
	// A change made elsewhere survives when the diff is applied to a newer
	// version: how an edit is carried over a conflicting update.
	p, _ := Diff([]byte(`{"spec":{"image":"a","replicas":1}}`), []byte(`{"spec":{"image":"b","replicas":1}}`))
	got, _ := Apply([]byte(`{"spec":{"image":"a","replicas":5}}`), p)
	if !jsonEq(t, got, `{"spec":{"image":"b","replicas":5}}`) {
		t.Fatalf("carried over: %s", got)
	}
	if _, err := Diff([]byte(`{`), []byte(`{}`)); err == nil {
		t.Fatal("bad JSON accepted")
	}
}
