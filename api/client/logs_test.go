package client_test

import (
	"strings"
	"testing"
	"time"

	"nexus.dev/nexus/api/client"
)

func TestParseSince(t *testing.T) {
	for _, tc := range []struct {
		in      string
		seconds int64
		since   time.Time
		err     string
	}{
		{in: "5m", seconds: 300},
		{in: "1h30m", seconds: 5400},
		{in: "1500ms", seconds: 2}, // rounded up: never less than asked for
		{in: "2026-12-03T05:00:00Z", since: time.Date(2026, 12, 3, 5, 0, 0, 0, time.UTC)},
		{in: "2026-12-03T06:00:00+01:00", since: time.Date(2026, 12, 3, 5, 0, 0, 0, time.UTC)},
		{in: "0s", err: "must be positive"},
		{in: "-5m", err: "must be positive"},
		{in: "5", err: "give a duration such as 30s"},
		{in: "yesterday", err: "or an RFC 3339 time"},
		{in: "", err: "give a duration"},
	} {
		since, secs, err := client.ParseSince(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want an error saying %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || secs != tc.seconds || !since.Equal(tc.since) {
			t.Errorf("%q: %v %d %v", tc.in, since, secs, err)
		}
	}
}
