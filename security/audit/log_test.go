package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testutil"
)

func TestWriteLevels(t *testing.T) {
	dir := t.TempDir()
	policy := DefaultPolicy()
	policy.Rules = append([]Rule{{Level: RequestResponse, Resources: []string{"roles"}}, {Level: Metadata, Verbs: []string{"get"}, Resources: []string{"workloads"}}}, policy.Rules...)
	l := openLog(t, Config{Dir: dir, Policy: policy})

	body := json.RawMessage(`{"kind":"Workload","spec":{"replicas":3}}`)
	resp := json.RawMessage(`{"kind":"Workload","status":{"ready":0}}`)
	with := func(r Record) Record { r.Request, r.Response = body, resp; return r }
	health := Record{Verb: "get", URI: "/healthz", Code: 200}
	denied := req("delete", "nodes", "n1")
	denied.Code, denied.Decision.Authz = 403, &Check{Allowed: false, Reason: "no role allows delete on nodes"}

	for _, r := range []Record{
		health,
		with(req("get", "workloads", "web")),
		with(req("create", "workloads", "web")),
		with(req("update", "roles", "admin")),
		denied,
		{Event: EventCertificateIssued, User: User{Name: "n1", Kind: UserKindNode}, Annotations: map[string]string{"serial": "0a1b"}},
	} {
		mustWrite(t, l, r)
	}
	recs := readRecords(t, dir)
	want := []struct {
		event, verb, resource string
		level                 Level
		request, response     bool
	}{
		{EventRequest, "get", "workloads", Metadata, false, false},
		{EventRequest, "create", "workloads", Request, true, false},
		{EventRequest, "update", "roles", RequestResponse, true, true},
		{EventRequest, "delete", "nodes", Request, false, false},
		{EventCertificateIssued, "", "", Metadata, false, false},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d records written, want %d (the health check is not logged)", len(recs), len(want))
	}
	for i, w := range want {
		r := recs[i]
		if r.Seq != uint64(i+1) || r.Event != w.event || r.Verb != w.verb || r.Resource != w.resource || r.Level != w.level ||
			(r.Request != nil) != w.request || (r.Response != nil) != w.response {
			t.Errorf("record %d: %+v, want %+v", i+1, r, w)
		}
		if r.Time.Location() != time.UTC || r.Time.IsZero() {
			t.Errorf("record %d: time %v, want UTC", i+1, r.Time)
		}
	}
	if d := recs[3].Decision; d.Authz == nil || d.Authz.Allowed || d.Authz.Reason != "no role allows delete on nodes" || !d.Authn.Allowed {
		t.Errorf("denial's decision %+v", d)
	}
	if recs[4].Annotations["serial"] != "0a1b" {
		t.Errorf("event annotations %v", recs[4].Annotations)
	}
	if rep := verifyDir(t, dir); rep.Problem != nil || rep.Records != 5 {
		t.Fatalf("verify: %+v", rep)
	}
}

// TestPolicyCannotHide: mutations, denials and events are written even when
// the policy says None; reads follow the policy.
func TestPolicyCannotHide(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Config{Dir: dir, Policy: &Policy{Default: None}})
	denied := req("get", "secrets", "db")
	denied.Code, denied.Decision.Identity = 403, &Check{Allowed: false, Reason: "node n1 cannot read for node n2"}
	for _, r := range []Record{
		req("get", "workloads", "web"),
		req("patch", "workloads", "web"),
		denied,
		{Event: EventAuthnFailed, SourceIP: "::1", Code: 401, Message: "certificate revoked"},
		{Event: EventTokenCreated, Annotations: map[string]string{"id": "4f1c2a9b03de"}},
	} {
		mustWrite(t, l, r)
	}
	var got []string
	for _, r := range readRecords(t, dir) {
		if r.Level != Metadata {
			t.Errorf("%s %s at %s, want Metadata", r.Event, r.Verb, r.Level)
		}
		got = append(got, r.Event+"/"+r.Verb)
	}
	want := []string{"request/patch", "request/get", "authn-failed/", "token-created/"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("written %v, want %v", got, want)
	}
}

// TestSecretValuesNeverWritten: whatever the level, the body's shape and
// the redactors a caller configures, a Secret's values are not in the file.
func TestSecretValuesNeverWritten(t *testing.T) {
	const (
		v1 = "hunter2-password-value"
		v2 = "aHVudGVyMg==" // base64, as Secret data is
		v3 = "s3cret-in-annotation"
	)
	bodies := map[string]string{
		"object":      `{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db","labels":{"app":"db"}},"type":"Opaque","data":{"password":"` + v2 + `"},"stringData":{"user":"` + v1 + `"}}`,
		"list":        `{"kind":"SecretList","items":[{"metadata":{"name":"db"},"data":{"password":"` + v2 + `"}},{"metadata":{"name":"x"},"stringData":{"k":"` + v1 + `"}}]}`,
		"json patch":  `[{"op":"replace","path":"/data/password","value":"` + v2 + `"},{"op":"add","path":"/stringData/k","value":"` + v1 + `"}]`,
		"merge patch": `{"stringData":{"user":"` + v1 + `"},"data":{"password":"` + v2 + `"}}`,
		"annotation":  `{"metadata":{"name":"db","annotations":{"last-applied":"{\"stringData\":{\"k\":\"` + v3 + `\"}}"}},"data":{"k":"` + v2 + `"}}`,
		"odd shapes":  `{"kind":{"v":"` + v1 + `"},"metadata":"` + v3 + `","items":"` + v2 + `","data":["` + v1 + `",7]}`,
		"not json":    `password=` + v1,
		"error reply": `{"kind":"Status","message":"data.password: invalid value \"` + v1 + `\""}`,
	}
	leaky := func(body json.RawMessage) json.RawMessage { return body }
	for _, lvl := range []Level{None, Metadata, Request, RequestResponse} {
		for _, resource := range []string{"secrets", "Secrets", "secret"} {
			dir := t.TempDir()
			l := openLog(t, Config{Dir: dir, Policy: &Policy{Default: lvl}, Redactors: map[string]Redactor{resource: leaky}})
			for name, body := range bodies {
				for _, verb := range []string{"create", "get"} {
					r := req(verb, resource, name)
					r.Request, r.Response = json.RawMessage(body), json.RawMessage(body)
					mustWrite(t, l, r)
				}
			}
			data := allBytes(t, dir)
			for _, v := range []string{v1, v2, v3, "aHVudGVy"} {
				if bytes.Contains(data, []byte(v)) {
					t.Fatalf("level %s, resource %q: %q found in the audit files", lvl, resource, v)
				}
			}
			if lvl >= Request && (!bytes.Contains(data, []byte(`"password":"<redacted>"`)) || !bytes.Contains(data, []byte(`"name":"db"`))) {
				t.Fatalf("level %s: keys and names should stay; files:\n%s", lvl, data)
			}
			if rep := verifyDir(t, dir); rep.Problem != nil {
				t.Fatal(rep.Problem)
			}
		}
	}
}

func TestRedactors(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Config{Dir: dir, Policy: &Policy{Default: RequestResponse}, Redactors: map[string]Redactor{"tokens": RedactAll}})
	r := req("create", "tokens", "t1")
	r.Request = json.RawMessage(`{"secret":"tok-value"}`)
	mustWrite(t, l, r)
	big := req("create", "configs", "big")
	big.Request = json.RawMessage(`"` + strings.Repeat("x", maxBodyBytes) + `"`)
	mustWrite(t, l, big)
	recs := readRecords(t, dir)
	if string(recs[0].Request) != `"<redacted>"` {
		t.Errorf("token body %s", recs[0].Request)
	}
	if !strings.Contains(string(recs[1].Request), "<omitted: 262146 bytes") {
		t.Errorf("big body: %.100s", recs[1].Request)
	}
}

// TestConcurrentWriters: every acknowledged record is in the files exactly
// once, in one valid chain, across rotations.
func TestConcurrentWriters(t *testing.T) {
	const writers, each = 16, 40
	dir := t.TempDir()
	l := openLog(t, Config{Dir: dir, MaxBytes: 64 << 10, MaxFiles: 100})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := l.Write(context.Background(), req("create", "workloads", fmt.Sprintf("w%d-%d", w, i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for _, r := range readRecords(t, dir) {
		seen[r.Name]++
	}
	for w := range writers {
		for i := range each {
			if n := seen[fmt.Sprintf("w%d-%d", w, i)]; n != 1 {
				t.Errorf("w%d-%d written %d times", w, i, n)
			}
		}
	}
	rep := verifyDir(t, dir)
	if rep.Problem != nil || rep.Records != writers*each || len(rep.Files) < 3 {
		t.Fatalf("verify: %v, %d records in %d files", rep.Problem, rep.Records, len(rep.Files))
	}
	t.Logf("%d records, %d fdatasyncs, %d files", rep.Records, l.Syncs(), len(rep.Files))
}

func TestReopenResumesChain(t *testing.T) {
	dir := t.TempDir()
	for round := range 3 {
		l := openLog(t, Config{Dir: dir, MaxBytes: 2200})
		for i := range 4 {
			mustWrite(t, l, req("update", "workloads", fmt.Sprintf("r%d-%d", round, i)))
		}
		if seq, _ := l.Head(); seq != uint64(4*(round+1)) {
			t.Fatalf("round %d: head seq %d", round, seq)
		}
		l.Close()
	}
	// A crash between renaming audit.log and creating the next one.
	cur := filepath.Join(dir, CurrentFile)
	ends, err := readEnds(cur)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(cur, filepath.Join(dir, rotatedName(ends.firstSeq, ends.lastSeq))); err != nil {
		t.Fatal(err)
	}
	l := openLog(t, Config{Dir: dir, MaxBytes: 2200})
	mustWrite(t, l, req("update", "workloads", "after"))
	rep := verifyDir(t, dir)
	if rep.Problem != nil || rep.First != 1 || rep.Last != 13 {
		t.Fatalf("verify after reopens: %v, seq %d..%d", rep.Problem, rep.First, rep.Last)
	}
}

// TestTornTailRecovered: an incomplete last line (a crash mid-write) is cut
// at Open, which says so in the log; the chain goes on intact.
func TestTornTailRecovered(t *testing.T) {
	cur := buildLog(t, 3, 0)[0]
	dir := filepath.Dir(cur)
	before, _ := os.ReadFile(cur)
	f, err := os.OpenFile(cur, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	const torn = `{"seq":4,"time":"2026-03-01T11:00:00Z","level":"Req`
	f.WriteString(torn)
	f.Close()
	if rep := verifyDir(t, dir); rep.Problem == nil || rep.Problem.Kind != ProblemTorn {
		t.Fatalf("before reopen: %v, want a torn line", rep.Problem)
	}

	l := openLog(t, Config{Dir: dir})
	recs := readRecords(t, dir)
	if len(recs) != 4 || recs[3].Event != EventLogRecovered || recs[3].Seq != 4 ||
		recs[3].Message != fmt.Sprintf("cut %d bytes of an incomplete last line at offset %d of audit.log (a write interrupted by a crash, never acknowledged)", len(torn), len(before)) {
		t.Fatalf("records after recovery: %+v", recs[len(recs)-1])
	}
	mustWrite(t, l, req("create", "workloads", "after"))
	if rep := verifyDir(t, dir); rep.Problem != nil || rep.Records != 5 {
		t.Fatalf("after recovery: %v, %d records", rep.Problem, rep.Records)
	}
}

// TestDamagedTailRefused: a complete last line that is not a valid record
// is not what a crash leaves; Open refuses, naming the file and offset.
func TestDamagedTailRefused(t *testing.T) {
	for name, damage := range map[string]func([]byte) []byte{
		"edited":  func(b []byte) []byte { return bytes.Replace(b, []byte(`"name":"web-3"`), []byte(`"name":"web-9"`), 1) },
		"garbage": func(b []byte) []byte { return append(b, "not a record\n"...) },
	} {
		t.Run(name, func(t *testing.T) {
			cur := buildLog(t, 3, 0)[0]
			dir := filepath.Dir(cur)
			data, _ := os.ReadFile(cur)
			lastOff := bytes.LastIndexByte(data[:len(data)-1], '\n') + 1
			if name == "garbage" {
				lastOff = len(data)
			}
			if err := os.WriteFile(cur, damage(data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(Config{Dir: dir})
			if err == nil || !strings.Contains(err.Error(), cur) || !strings.Contains(err.Error(), fmt.Sprintf("offset %d", lastOff)) {
				t.Fatalf("Open: %v, want a refusal naming %s at offset %d", err, cur, lastOff)
			}
		})
	}
}

func TestOpenLocksAndPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	l := openLog(t, Config{Dir: dir, MaxBytes: 1000})
	mustWrite(t, l, req("create", "workloads", "a"))
	mustWrite(t, l, req("create", "workloads", "b"))
	if _, err := Open(Config{Dir: dir}); err == nil || !strings.Contains(err.Error(), "another process holds its lock") {
		t.Fatalf("second Open: %v", err)
	}
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", fi.Mode().Perm())
	}
	files, _ := Files(dir)
	if len(files) != 2 {
		t.Fatalf("files %v, want one rotated and audit.log", files)
	}
	for _, f := range files {
		if fi, _ := os.Stat(f); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", f, fi.Mode().Perm())
		}
	}
	l.Close()
	if err := l.Write(context.Background(), req("create", "workloads", "c")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// TestFullDisk: a log that cannot be written returns an error from Write
// (the caller answers 503), keeps the file a valid chain, and writes again
// once there is room.
func TestFullDisk(t *testing.T) {
	testutil.RequireRoot(t)
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=64k,mode=0700"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	dir := filepath.Join(mnt, "audit")
	l := openLog(t, Config{Dir: dir})
	filler := filepath.Join(mnt, "filler")
	// Fill the file system but for a few records' worth of room.
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1k", "count=58").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, out)
	}

	var acked, failed []string
	for i := 0; len(failed) < 3; i++ {
		if i > 100 {
			t.Fatal("100 writes on a full file system all succeeded")
		}
		name := fmt.Sprint("r", i)
		if err := l.Write(context.Background(), req("create", "workloads", name)); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("write %s: %v, want ENOSPC", name, err)
			}
			failed = append(failed, name)
			continue
		}
		acked = append(acked, name)
	}
	if l.Healthy() == nil {
		t.Fatal("Healthy() = nil after a failed write")
	}
	if rep := verifyDir(t, dir); rep.Problem != nil || rep.Records != len(acked) {
		t.Fatalf("full disk: %v, %d records, %d acknowledged", rep.Problem, rep.Records, len(acked))
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, l, req("create", "workloads", "after"))
	acked = append(acked, "after")
	if err := l.Healthy(); err != nil {
		t.Fatalf("Healthy() after room was made: %v", err)
	}
	var names []string
	for _, r := range readRecords(t, dir) {
		names = append(names, r.Name)
	}
	if strings.Join(names, " ") != strings.Join(acked, " ") {
		t.Fatalf("records %v, want exactly the acknowledged %v", names, acked)
	}
	if rep := verifyDir(t, dir); rep.Problem != nil {
		t.Fatal(rep.Problem)
	}
}

// TestCloseWhileWriting: writers racing with Close either land a record or
// get ErrClosed, and the files hold exactly the acknowledged records.
func TestCloseWhileWriting(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Config{Dir: dir})
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		acked int
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				err := l.Write(context.Background(), req("create", "workloads", "w"))
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked++
				mu.Unlock()
			}
		}()
	}
	for {
		if seq, _ := l.Head(); seq >= 50 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if rep := verifyDir(t, dir); rep.Problem != nil || rep.Records != acked {
		t.Fatalf("after close: %v, %d records, %d acknowledged", rep.Problem, rep.Records, acked)
	}
}

// TestEnqueueWritesWithoutWaiting: an allowed read is recorded in the chain
// at once and on disk within FlushDelay (or at Close), while a change, a
// denial or a failure enqueued goes through Write and is on disk on return.
func TestEnqueueWritesWithoutWaiting(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Config{Dir: dir, Policy: &Policy{Default: Metadata}}) // reads recorded
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	read := Record{User: User{Name: "alice"}, Verb: "get", Resource: "workloads", Name: "web", Code: 200}
	syncs := l.Syncs()
	for range 10 {
		if err := l.Enqueue(ctx, read); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for seq, _ := l.Head(); seq != 10; seq, _ = l.Head() {
		if time.Now().After(deadline) {
			t.Fatalf("enqueued records not on disk after 5 s (durable head %d)", seq)
		}
		time.Sleep(time.Millisecond)
	}
	if l.Syncs()-syncs > 2 {
		t.Errorf("10 enqueued records took %d syncs", l.Syncs()-syncs)
	}
	// A denial enqueued is synced before Enqueue returns.
	denied := read
	denied.Code, denied.Decision = 403, Decision{Authz: &Check{Allowed: false, Reason: "no"}}
	before := l.Syncs()
	if err := l.Enqueue(ctx, denied); err != nil {
		t.Fatal(err)
	}
	if l.Syncs() == before {
		t.Fatal("a denial was not synced before Enqueue returned")
	}
	// Enqueued reads still in memory at Close are written.
	for range 3 {
		_ = l.Enqueue(ctx, read)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(filepath.Join(dir, CurrentFile))
	if err != nil || rep.Records != 14 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}
