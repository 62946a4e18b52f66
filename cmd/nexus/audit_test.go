package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"nexus.dev/nexus/security/audit"
)

// writeAuditLog writes n records to <dataDir>/audit, rotating every few.
func writeAuditLog(t *testing.T, dataDir string, n int) string {
	t.Helper()
	dir := filepath.Join(dataDir, "audit")
	l, err := audit.Open(audit.Config{Dir: dir, MaxBytes: 2000})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := 1; i <= n; i++ {
		r := audit.Record{User: audit.User{Name: "alice", Kind: audit.UserKindUser}, Verb: "create", Resource: "workloads",
			Namespace: "default", Name: fmt.Sprintf("web-%d", i), Code: 201}
		if err := l.Write(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// tamper applies f to the lines (with newlines) of path.
func tamper(t *testing.T, path string, f func([][]byte) [][]byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	lines[len(lines)-1] = append(lines[len(lines)-1], '\n')
	if err := os.WriteFile(path, bytes.Join(f(lines), nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestAuditVerify(t *testing.T) {
	dataDir := t.TempDir()
	dir := writeAuditLog(t, dataDir, 12)
	files, err := audit.Files(dir)
	if err != nil || len(files) < 3 {
		t.Fatalf("files %v, %v: want a rotated log", files, err)
	}

	for _, args := range [][]string{
		{"--data-dir", dataDir, "audit", "verify"},
		{"audit", "verify", dir},
		append([]string{"audit", "verify"}, files...),
	} {
		out, err := run(t, args...)
		if err != nil || !strings.Contains(out, "ok: 12 records, seq 1..12, chain intact") || !strings.Contains(out, "seq 1 is the log's first record") {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	// Without its oldest file, the chain is anchored on a trusted hash.
	out, err := run(t, append([]string{"audit", "verify"}, files[1:]...)...)
	if err != nil || !strings.Contains(out, "continues from") || !strings.Contains(out, "head:   seq 12 has hash ") {
		t.Fatalf("without the oldest file: %v\n%s", err, out)
	}
	out, err = run(t, "audit", "verify", "-o", "json", dir)
	var rep audit.Report
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || rep.Records != 12 || rep.Problem != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}

	cur := filepath.Join(dir, audit.CurrentFile)
	tamper(t, cur, func(ls [][]byte) [][]byte {
		ls[0] = bytes.Replace(ls[0], []byte("alice"), []byte("alicf"), 1)
		return ls
	})
	out, err = run(t, "audit", "verify", "-o", "json", dir)
	if err == nil || json.Unmarshal([]byte(out), &rep) != nil || rep.Problem == nil || rep.Problem.Kind != audit.ProblemEdited {
		t.Fatalf("-o json on an edited log: %v\n%s", err, out)
	}

	for _, tt := range []struct{ args, want string }{
		{"-o yaml", "unknown output format"},
		{filepath.Join(dataDir, "nope"), "no such file"},
		{dataDir, "holds no audit files"},
	} {
		_, err := run(t, append([]string{"audit", "verify"}, strings.Fields(tt.args)...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.args, err, tt.want)
		}
	}
}

// TestAuditVerifyBinary drives bin/nexus on a good log and on copies with
// an edited, a deleted and a reordered record.
func TestAuditVerifyBinary(t *testing.T) {
	bin := nexusBinary(t)
	tests := []struct {
		name   string
		tamper func([][]byte) [][]byte
		want   string
	}{
		{"intact", nil, "ok: 6 records, seq 1..6, chain intact"},
		{"edited", func(ls [][]byte) [][]byte {
			ls[2] = bytes.Replace(ls[2], []byte(`"code":201`), []byte(`"code":200`), 1)
			return ls
		}, "audit.log:3: record seq 3 was changed after it was written"},
		{"deleted", func(ls [][]byte) [][]byte { return append(ls[:1:1], ls[2:]...) },
			"audit.log:2: seq jumps from 1 (line 1) to 3: records 2..2 are missing"},
		{"reordered", func(ls [][]byte) [][]byte { ls[3], ls[4] = ls[4], ls[3]; return ls },
			"audit.log:4: records out of order: seq 5 comes before seq 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			dir := filepath.Join(dataDir, "audit")
			l, err := audit.Open(audit.Config{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 6 {
				if err := l.Write(context.Background(), audit.Record{Verb: "create", Resource: "workloads", Name: fmt.Sprint(i), Code: 201}); err != nil {
					t.Fatal(err)
				}
			}
			l.Close()
			if tt.tamper != nil {
				tamper(t, filepath.Join(dir, audit.CurrentFile), tt.tamper)
			}
			cmd := exec.Command(bin, "--data-dir", dataDir, "audit", "verify")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err = cmd.Run()
			if tt.tamper == nil {
				if err != nil || !strings.Contains(stdout.String(), tt.want) {
					t.Fatalf("exit %v\nstdout: %s\nstderr: %s", err, &stdout, &stderr)
				}
				return
			}
			if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, want 1 and %q\nstdout: %s\nstderr: %s", code, tt.want, &stdout, &stderr)
			}
		})
	}
}
