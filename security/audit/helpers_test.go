package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// stepClock advances one millisecond per reading.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

func newClock() *stepClock {
	return &stepClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600))}
}

func allowed(reason string) *Check { return &Check{Allowed: true, Reason: reason} }

// req is a request record as the API server would pass it.
func req(verb, resource, name string) Record {
	return Record{
		User:     User{Name: "alice", Groups: []string{"admins"}, Kind: UserKindUser, ID: "spiffe://test/user/alice"},
		SourceIP: "::1", Verb: verb, Resource: resource, Namespace: "default", Name: name,
		URI:  "/v1/namespaces/default/" + resource + "/" + name,
		Code: 200,
		Decision: Decision{
			Authn:    allowed("certificate chains to the current bundle"),
			Identity: allowed("user acts for itself"),
			Authz:    allowed("role admin allows " + verb),
		},
	}
}

func openLog(t *testing.T, cfg Config) *Log {
	t.Helper()
	if cfg.Clock == nil {
		cfg.Clock = newClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	l, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func mustWrite(t *testing.T, l *Log, r Record) {
	t.Helper()
	if err := l.Write(context.Background(), r); err != nil {
		t.Fatalf("write %s %s: %v", r.Verb, r.Name, err)
	}
}

// readRecords parses every line of the log's files, oldest first.
func readRecords(t *testing.T, dir string) []Record {
	t.Helper()
	files, err := Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []Record
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			var r Record
			if err := json.Unmarshal(line, &r); err != nil {
				t.Fatalf("%s: %v: %s", f, err, line)
			}
			out = append(out, r)
		}
	}
	return out
}

// allBytes is the content of every file in dir.
func allBytes(t *testing.T, dir string) []byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, data...)
	}
	return b
}

func verifyDir(t *testing.T, dir string) Report {
	t.Helper()
	files, err := Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(files...)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}
