package server

import (
	"context"
	"errors"
	"strings"
	"testing"

	"nexus.dev/nexus/store/embed/embedtest"
)

// RemoveServer refuses to take the store's last voting member away, and
// names the members when asked for one that is not.
func TestRemoveServerRefusals(t *testing.T) {
	m := embedtest.Member(t)
	ctx := context.Background()
	cli := m.Client(ctx)
	defer cli.Close()
	err := RemoveServer(ctx, RemoveConfig{Client: cli, Name: "m1", Force: true})
	if !errors.Is(err, ErrQuorum) || !strings.Contains(err.Error(), "last voting member") {
		t.Fatalf("remove the last member: %v", err)
	}
	err = RemoveServer(ctx, RemoveConfig{Client: cli, Name: "s9"})
	if err == nil || !strings.Contains(err.Error(), `server "s9" is not a member of the store (members: [m1])`) {
		t.Fatalf("remove a non-member: %v", err)
	}
	if resp, err := cli.MemberList(ctx); err != nil || len(resp.Members) != 1 {
		t.Fatalf("members after the refusals: %v, %v", resp, err)
	}
}

func TestCheckQuorum(t *testing.T) {
	live := map[string]bool{"s1": true, "s2": true}
	tests := []struct {
		name   string
		voters []string
		force  bool
		want   string // error substring; "" = allowed
	}{
		{"s3", []string{"s1", "s2"}, false, ""},                               // 2 of 2 up
		{"s3", []string{"s1", "s2", "s4"}, false, ""},                         // 2 of 3 up
		{"s3", []string{"s1", "s4"}, false, "1 are up [s1]"},                  // 1 of 2 up, 2 needed
		{"s3", []string{"s4", "s5", "s1"}, false, "needs 2"},                  // 1 of 3 up
		{"s3", []string{"s1", "s4"}, true, ""},                                // forced
		{"s3", nil, true, "last voting member"},                               // never the last, even forced
		{"s3", []string{"s4"}, false, "of which 0 are up [], and it needs 1"}, // the one left is down
	}
	for _, tt := range tests {
		err := checkQuorum(tt.name, tt.voters, live, tt.force)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%v force=%v: %v", tt.voters, tt.force, err)
			}
			continue
		}
		if !errors.Is(err, ErrQuorum) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v force=%v: %v, want %q", tt.voters, tt.force, err, tt.want)
		}
	}
}
