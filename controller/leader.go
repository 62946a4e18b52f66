package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Leader election: the controllers and the scheduler run on one server at
// a time, the one that holds the election on ElectionKey, as Kubernetes'
// controller-manager holds a lease. Each candidate campaigns with a
// session (a store lease of LeaderTTL kept alive by its client); the
// oldest key under the prefix is the leader, and its value is the
// leader's name.
//
// Timing, measured with the embedded store (TestLeaderTakeover): leases
// count in whole seconds and the store's leader checks deadlines every
// 250 ms, so with a TTL of 1 s a leader that dies (kill -9, no resign) is
// replaced 1.0-1.5 s later: the lease runs out, the store deletes its key
// and the next candidate's watch sees it. A leader that stops cleanly
// resigns and is replaced at once. When the dead server was also the
// store's raft leader, a new raft leader is elected first (1-2 s) and
// extends every lease by 1 s (store/mvcc Promote) before it counts them
// down, so leadership moves 3.4-4.4 s after the death in that case
// (store/server TestElectionAcrossLeaderDeath).
//
// A leader stops its controllers the moment it may no longer be leader:
// when its keep-alives go unanswered for three quarters of the TTL (before
// the store can let the lease run out), when its session ends, or when
// its key is deleted (seen by a watch, as fast as the next candidate sees
// it). Binding stays a compare-and-swap besides, so even controllers that
// overlapped would never bind an instance twice.
const (
	ElectionKey = "/nexus/leader/controllers"
	LeaderTTL   = 1 // seconds
)

// ElectionConfig configures RunElected.
type ElectionConfig struct {
	// Store is where the election is held (the server's store client).
	Store *clientv3.Client
	// Name is this candidate's name: the election key's value while it
	// leads.
	Name string
	// Key is the election's prefix (default ElectionKey).
	Key string
	// TTL is the session's lease in seconds (default LeaderTTL).
	TTL int
	// Lead runs while this candidate leads; its context ends when
	// leadership is lost (or RunElected's context ends). A new term calls
	// it again.
	Lead   func(ctx context.Context) error
	Logger *slog.Logger
	// Metrics, when set, gets nexus_controllers_leader (1 while leading)
	// and nexus_controllers_leader_terms_total.
	Metrics prometheus.Registerer
}

// RunElected campaigns for leadership until ctx ends and runs cfg.Lead
// for each term won. It returns nil when ctx ends; an error of Lead is
// logged and ends the term (resigning, so another candidate takes over).
func RunElected(ctx context.Context, cfg ElectionConfig) error {
	if cfg.Store == nil || cfg.Lead == nil || cfg.Name == "" {
		return errors.New("leader election: a store client, a name and a function to run are required")
	}
	if cfg.Key == "" {
		cfg.Key = ElectionKey
	}
	if cfg.TTL <= 0 {
		cfg.TTL = LeaderTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("election", cfg.Key, "candidate", cfg.Name)
	leading := prometheus.NewGauge(prometheus.GaugeOpts{Name: "nexus_controllers_leader", Help: "1 while this server leads the controllers and the scheduler, 0 otherwise."})
	terms := prometheus.NewCounter(prometheus.CounterOpts{Name: "nexus_controllers_leader_terms_total", Help: "Terms this server has led the controllers and the scheduler."})
	if cfg.Metrics != nil {
		for _, c := range []prometheus.Collector{leading, terms} {
			if err := cfg.Metrics.Register(c); err != nil {
				return fmt.Errorf("leader election metrics: %w", err)
			}
			defer cfg.Metrics.Unregister(c)
		}
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		led, err := term(ctx, cfg, log, func(on bool) {
			if on {
				terms.Inc()
				leading.Set(1)
			} else {
				leading.Set(0)
			}
		})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			log.Warn("leader election", "err", err, "retry in", backoff)
		}
		if led {
			backoff = 100 * time.Millisecond
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return nil
}

// term is one session: campaign, lead until the session or the key is
// lost, resign. led says whether it got to lead.
func term(ctx context.Context, cfg ElectionConfig, log *slog.Logger, leading func(bool)) (led bool, err error) {
	sess, err := concurrency.NewSession(cfg.Store, concurrency.WithTTL(cfg.TTL), concurrency.WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("open a session: %w", err)
	}
	defer sess.Close()
	// Campaigning and leading end with the session (sess.Ctx ends when its
	// keep-alives stop): a key whose lease ran out is no claim.
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	stop := context.AfterFunc(sess.Ctx(), ccancel)
	defer stop()
	e := concurrency.NewElection(sess, cfg.Key)
	if err := e.Campaign(cctx, cfg.Name); err != nil {
		return false, fmt.Errorf("campaign: %w", err)
	}
	lctx, lcancel := context.WithCancel(cctx)
	defer lcancel()
	// The key's deletion ends the term as soon as the store decides it;
	// without answers to its keep-alives the term ends before the store
	// can decide it.
	go watchOwnKey(lctx, lcancel, cfg.Store, e.Key())
	ka, err := cfg.Store.KeepAlive(lctx, sess.Lease())
	if err != nil {
		return false, fmt.Errorf("follow the session's keep-alives: %w", err)
	}
	// One renewal now, so the term's first deadline counts from a known
	// answer: the session's last one may be older than its keep-alive
	// interval (the etcd client sends them from a loop that wakes every
	// 500 ms), and a guess at its age stepped every new leader down
	// 418 ms into its term.
	if _, err := cfg.Store.KeepAliveOnce(lctx, sess.Lease()); err != nil {
		return false, fmt.Errorf("renew the session's lease: %w", err)
	}
	go stepDownWithoutKeepAlives(lctx, lcancel, ka, time.Duration(cfg.TTL)*time.Second)
	log.Info("leading the controllers", "key", e.Key())
	leading(true)
	start := time.Now()
	err = cfg.Lead(lctx)
	leading(false)
	lost := lctx.Err() != nil && ctx.Err() == nil
	lcancel()
	switch {
	case lost:
		log.Warn("lost the controllers' leadership: controllers stopped", "after", time.Since(start).Round(time.Millisecond))
	case err != nil:
		log.Error("the controllers failed: resigning", "err", err)
	default:
		log.Info("stopped leading the controllers")
	}
	// Resign so a successor need not wait for the lease (a no-op when the
	// key is gone already).
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(cfg.TTL)*time.Second)
	_ = e.Resign(rctx)
	rcancel()
	return true, err
}

// stepDownWithoutKeepAlives calls lost when no keep-alive of the session
// has been answered for three quarters of its TTL. The store renewed the
// lease when it received the keep-alive, before its answer left, so its
// deadline is at most a TTL after the answer: stepping down a quarter TTL
// earlier (250 ms of 1 s, more than a loopback or LAN round trip) means
// this leader has stopped before the store can let another one in. The
// session's own end (Done) comes later: the etcd client waits a whole TTL
// past the last answer.
func stepDownWithoutKeepAlives(ctx context.Context, lost context.CancelFunc, ka <-chan *clientv3.LeaseKeepAliveResponse, ttl time.Duration) {
	defer lost()
	window := ttl * 3 / 4
	// The caller renewed the lease just before.
	t := time.NewTimer(window)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ka:
			if !ok {
				return
			}
			t.Reset(window)
		case <-t.C:
			return
		}
	}
}

// watchOwnKey calls lost when key is deleted (or the watch cannot tell).
func watchOwnKey(ctx context.Context, lost context.CancelFunc, cli *clientv3.Client, key string) {
	defer lost()
	cur, err := cli.Get(ctx, key)
	if err != nil || len(cur.Kvs) == 0 {
		return
	}
	w := cli.Watch(clientv3.WithRequireLeader(ctx), key, clientv3.WithRev(cur.Header.Revision+1))
	for wr := range w {
		if wr.Err() != nil {
			break
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return
			}
		}
	}
}

// Leader returns the name of the candidate that leads the election on key
// (ElectionKey when empty), or "" when none does.
func Leader(ctx context.Context, cli *clientv3.Client, key string) (string, error) {
	if key == "" {
		key = ElectionKey
	}
	resp, err := cli.Get(ctx, key+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}
