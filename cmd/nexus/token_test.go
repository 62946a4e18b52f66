package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/security/pki"
	"nexus.dev/nexus/security/token"
	"nexus.dev/nexus/store/embed/embedtest"
)

func TestTokenCommands(t *testing.T) {
	dataDir, _ := initCA(t)
	dd := []string{"--data-dir", dataDir}
	// The store a server on this machine would run, on its socket.
	embedtest.MemberOnSocket(t, filepath.Join(dataDir, "store.sock"))
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + filepath.Join(dataDir, "store.sock")}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	root, err := pki.Dir{Path: filepath.Join(dataDir, "pki")}.RootCert()
	if err != nil {
		t.Fatal(err)
	}

	// Text output: the token and the pin, which VerifyPin accepts for our root.
	out, err := run(t, append(dd, "token", "create", "--role", "agent", "--ttl", "30m")...)
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	tokLine := regexp.MustCompile(`(?m)^token:\s+(\S+)$`).FindStringSubmatch(out)
	pinLine := regexp.MustCompile(`(?m)^ca-pin:\s+(\S+)$`).FindStringSubmatch(out)
	if tokLine == nil || pinLine == nil {
		t.Fatalf("token create output:\n%s", out)
	}
	if err := pki.VerifyPin(root, pinLine[1]); err != nil {
		t.Fatalf("printed pin: %v", err)
	}
	agentTok, err := token.Parse(tokLine[1])
	if err != nil {
		t.Fatal(err)
	}

	// JSON output, several uses.
	out, err = run(t, append(dd, "token", "create", "--role", "server", "--uses", "3", "-o", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	var created tokenCreated
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if created.CAPin != pinLine[1] || created.Role != "server" || created.Uses != 3 || !strings.HasPrefix(created.Token, "nxt1."+created.ID+".") {
		t.Fatalf("created: %+v", created)
	}

	// The store holds no secret.
	ctx := context.Background()
	stored, err := cli.Get(ctx, token.DefaultPrefix, clientv3.WithPrefix())
	if err != nil || len(stored.Kvs) != 2 {
		t.Fatalf("stored tokens: %v, %v", stored, err)
	}
	for _, kv := range stored.Kvs {
		if strings.Contains(string(kv.Value), tokLine[1]) || strings.Contains(string(kv.Value), strings.Split(created.Token, ".")[2]) {
			t.Fatal("the store holds a token's secret")
		}
	}

	// Consuming through the store (as a join at any server does) is
	// visible in list.
	store := token.NewStore(token.StoreConfig{Client: cli})
	if _, err := store.Consume(ctx, created.Token, token.RoleServer); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, append(dd, "token", "list")...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ID", "USES LEFT", agentTok.ID + "  agent", created.ID + "  server"} {
		if !strings.Contains(out, want) {
			t.Errorf("token list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "nxt1.") || strings.Contains(out, strings.Split(created.Token, ".")[2]) {
		t.Fatalf("token list shows a secret:\n%s", out)
	}
	out, err = run(t, append(dd, "token", "list", "-o", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	var views []tokenView
	if err := json.Unmarshal([]byte(out), &views); err != nil || len(views) != 2 || views[1].UsesLeft != 2 || views[0].State != "valid" {
		t.Fatalf("list json: %v %+v", err, views)
	}
	if strings.Contains(out, "secret") {
		t.Fatalf("list json shows the secret hash:\n%s", out)
	}

	// Revoke.
	if out, err := run(t, append(dd, "token", "revoke", agentTok.ID)...); err != nil || !strings.Contains(out, "Revoked token "+agentTok.ID) {
		t.Fatalf("token revoke: %v\n%s", err, out)
	}
	if _, err := store.Consume(ctx, tokLine[1], token.RoleAgent); err == nil {
		t.Fatal("revoked token consumed")
	}
	if _, err := run(t, append(dd, "token", "revoke", agentTok.ID)...); err == nil || !strings.Contains(err.Error(), "nexus token list") {
		t.Fatalf("revoke twice: %v", err)
	}
}

func TestTokenCommandErrors(t *testing.T) {
	dataDir, _ := initCA(t)
	empty := t.TempDir()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--data-dir", dataDir, "token", "create"}, "use agent or server"},
		{[]string{"--data-dir", dataDir, "token", "create", "--role", "admin"}, "use agent or server"},
		{[]string{"--data-dir", dataDir, "token", "create", "--role", "agent", "--ttl", "0s"}, "lifetime"},
		{[]string{"--data-dir", dataDir, "token", "create", "--role", "agent", "--ttl", "720h"}, "at most"},
		{[]string{"--data-dir", dataDir, "token", "create", "--role", "agent", "--uses", "0"}, "use 1 to"},
		{[]string{"--data-dir", dataDir, "token", "create", "--role", "agent", "-o", "yaml"}, "unknown output format"},
		{[]string{"--data-dir", empty, "token", "create", "--role", "agent"}, "nexus cert init"},
		{[]string{"--data-dir", dataDir, "token", "revoke"}, "accepts 1 arg"},
		// No server runs on this machine: its store is out of reach.
		{[]string{"--data-dir", dataDir, "token", "create", "--role", "agent"}, "run this on a server whose nexus server is running"},
		{[]string{"--data-dir", dataDir, "token", "list"}, "run this on a server whose nexus server is running"},
	}
	for _, tt := range tests {
		out, err := run(t, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q\n%s", tt.args, err, tt.want, out)
		}
	}
}
