package raftnode

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// TestSoakLeaderKills kills and restarts the leader over and over while
// proposals run, then checks that every acknowledged proposal was applied
// everywhere. It is long: set NEXUS_SOAK=1 to run it.
func TestSoakLeaderKills(t *testing.T) {
	if testing.Short() || os.Getenv("NEXUS_SOAK") == "" {
		t.Skip("soak test: set NEXUS_SOAK=1 to run it")
	}
	cfg := fastConfig()
	cfg.SnapshotEvery, cfg.KeepEntries = 200, 50
	c := newCluster(t, 3, cfg, true, nil)
	c.waitLeader(10 * time.Second)
	var mu sync.Mutex
	var acked []string
	for round := range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w, m := range c.running() {
			node := m.node
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					v := fmt.Sprintf("r%d-w%d-%d", round, w, i)
					pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
					_, err := node.Propose(pctx, []byte(v))
					pcancel()
					if err == nil {
						mu.Lock()
						acked = append(acked, v)
						mu.Unlock()
					}
				}
			})
		}
		time.Sleep(300 * time.Millisecond)
		lead := c.waitLeader(10 * time.Second)
		c.stop(lead)
		time.Sleep(300 * time.Millisecond)
		cancel()
		wg.Wait()
		c.start(lead, false, nil)
		c.waitLeader(10 * time.Second)
	}
	log := c.waitConverged(60*time.Second, len(acked))
	have := map[string]bool{}
	for _, e := range log {
		have[e] = true
	}
	for _, v := range acked {
		if !have[v] {
			t.Fatalf("acknowledged %s lost", v)
		}
	}
	t.Logf("%d acknowledged, %d applied", len(acked), len(log))
}
