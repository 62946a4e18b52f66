package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
		check   func(t *testing.T, out string)
	}{
		{name: "json at info drops debug", cfg: Config{Level: "info", Format: "json"}, check: func(t *testing.T, out string) {
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 1 {
				t.Fatalf("want 1 line (debug dropped), got %d: %q", len(lines), out)
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
				t.Fatalf("output is not JSON: %v", err)
			}
			if rec["msg"] != "shown" {
				t.Fatalf("msg = %v", rec["msg"])
			}
		}},
		{name: "text at debug keeps debug", cfg: Config{Level: "DEBUG", Format: "text"}, check: func(t *testing.T, out string) {
			if !strings.Contains(out, "msg=hidden") || !strings.Contains(out, "msg=shown") {
				t.Fatalf("want both records in text form, got %q", out)
			}
		}},
		{name: "bad level", cfg: Config{Level: "loud"}, wantErr: `unknown log level "loud"`},
		{name: "bad format", cfg: Config{Format: "xml"}, wantErr: `unknown log format "xml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := New(&buf, tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			l.Debug("hidden")
			l.Info("shown")
			tt.check(t, buf.String())
		})
	}
}
