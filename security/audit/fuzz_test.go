package audit

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// goodLog is a three-record log as Write makes it.
func goodLog(f *testing.F) []byte {
	dir := f.TempDir()
	l, err := Open(Config{Dir: dir, Clock: newClock()})
	if err != nil {
		f.Fatal(err)
	}
	r := req("create", "secrets", "db")
	r.Request = json.RawMessage(`{"data":{"k":"dmFsdWU="}}`)
	for _, rec := range []Record{r, req("get", "workloads", "web"), {Event: EventAuthnFailed, Code: 401, Message: "unknown CA"}} {
		if err := l.Write(f.Context(), rec); err != nil {
			f.Fatal(err)
		}
	}
	l.Close()
	data, err := os.ReadFile(dir + "/" + CurrentFile)
	if err != nil {
		f.Fatal(err)
	}
	return data
}

func check(data []byte) (*Problem, error) {
	var c chain
	fr := &FileRange{Path: "fuzz.log"}
	p, err := c.read(fr, bytes.NewReader(data))
	if p == nil && err == nil {
		p = c.end()
	}
	return p, err
}

// FuzzVerify feeds the line parser and the chain check arbitrary files, and
// checks that any change of one byte of a valid log is found.
func FuzzVerify(f *testing.F) {
	good := goodLog(f)
	f.Add(good, uint(0), byte('x'))
	f.Add(good, uint(len(good)-1), byte(' '))
	f.Add(good[:len(good)/2], uint(7), byte('9'))
	f.Add([]byte(`{"seq":1,"prev":"`+ZeroHash+`","hash":"`+ZeroHash+"\"}\n"), uint(3), byte('2'))
	f.Add([]byte("\n\n{}\n"), uint(1), byte('{'))
	f.Fuzz(func(t *testing.T, data []byte, at uint, b byte) {
		p, err := check(data)
		if err != nil {
			t.Fatalf("reading from memory failed: %v", err)
		}
		if p != nil && (p.Line < 1 || p.Offset < 0 || p.Offset > int64(len(data)) || p.Detail == "") {
			t.Fatalf("problem out of range: %+v for %d bytes", p, len(data))
		}
		// The property: one changed byte of the good log is always caught.
		mut := bytes.Clone(good)
		i := int(at % uint(len(mut)))
		if mut[i] == b {
			return
		}
		mut[i] = b
		if p, _ := check(mut); p == nil {
			t.Fatalf("byte %d changed from %q to %q: no problem found", i, good[i], b)
		}
	})
}

// FuzzParsePolicy: ParsePolicy never panics, and a policy it accepts
// survives a round trip through its JSON form.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(`{"rules":[{"level":"None","paths":["/healthz","/debug/*"]},{"level":"Request","verbs":["create"],"resources":["workloads/scale"],"users":["a"],"groups":["g"]}],"default":"Metadata"}`))
	f.Add([]byte(`{"default":"RequestResponse"}`))
	f.Add([]byte(`{"default":"None","rules":[{"level":"x"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "audit policy: ") {
				t.Fatalf("error without context: %v", err)
			}
			return
		}
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("marshal an accepted policy: %v", err)
		}
		q, err := ParsePolicy(out)
		if err != nil {
			t.Fatalf("re-parse %s: %v", out, err)
		}
		if a, b := encodePolicy(p), encodePolicy(q); a != b {
			t.Fatalf("round trip changed the policy:\n%s\n%s", a, b)
		}
		r := req("get", "workloads", "web")
		if lvl := p.LevelOf(&r); lvl < None || lvl > RequestResponse {
			t.Fatalf("level out of range: %d", lvl)
		}
	})
}

func encodePolicy(p *Policy) string {
	b, _ := json.Marshal(p)
	return string(b)
}
