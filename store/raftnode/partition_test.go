package raftnode

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"nexus.dev/nexus/internal/testnet"
	"nexus.dev/nexus/internal/testutil"
)

// TestPartition runs three members in three network namespaces, cuts the
// leader off, expects the other two to elect a leader and keep committing
// while the old one steps down, then heals the cut and expects the old
// leader to follow and catch up.
func TestPartition(t *testing.T) {
	testutil.RequireRoot(t)
	nw := testnet.New(t, testnet.Options{Hosts: 3})
	c := newCluster(t, 3, fastConfig(), false, nw.Hosts)
	lead := c.waitLeader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 20 {
		if err := propose(ctx, lead, fmt.Sprintf("before%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c.waitConverged(10*time.Second, 20)

	nw.Partition(lead.host)
	cut := time.Now()
	var majority []*member
	for _, m := range c.running() {
		if m != lead {
			majority = append(majority, m)
		}
	}
	newLead := c.waitLeader(10*time.Second, majority...)
	t.Logf("majority elected member %d %v after the partition", newLead.peer.ID, time.Since(cut).Round(time.Millisecond))
	for i := range 20 {
		if err := propose(ctx, majority[i%2], fmt.Sprintf("during%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// CheckQuorum: the cut-off leader notices it lost its quorum.
	deadline := time.Now().Add(5 * time.Second)
	for lead.node.Status().State == "StateLeader" {
		if time.Now().After(deadline) {
			t.Fatal("the partitioned leader did not step down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	_, err := lead.node.Propose(pctx, []byte("minority"))
	pcancel()
	if err == nil || !(errors.Is(err, ErrNoLeader) || errors.Is(err, context.DeadlineExceeded)) {
		t.Fatalf("proposal on the minority side: %v, want it to fail", err)
	}

	nw.Heal(lead.host)
	healed := time.Now()
	c.waitLeader(15 * time.Second)
	log := c.waitConverged(20*time.Second, 40)
	t.Logf("old leader caught up %v after the heal (%d entries)", time.Since(healed).Round(time.Millisecond), len(log))
	for _, e := range log {
		if e == "minority" {
			t.Fatal("the proposal made on the minority side was applied")
		}
	}
}
