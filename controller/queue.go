package controller

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// queue holds keys waiting to be reconciled. A key is held once however
// often it is added, and never handed to two workers at once: a key added
// while it is being worked on is handed out again when that work is done.
// Failed keys come back after a per-key exponential backoff.
type queue struct {
	mu         sync.Mutex
	cond       *sync.Cond
	order      []string
	queued     map[string]bool
	processing map[string]bool
	again      map[string]bool
	failures   map[string]int
	closed     bool
}

const (
	retryBase = 20 * time.Millisecond
	retryMax  = 30 * time.Second
)

func newQueue() *queue {
	q := &queue{queued: map[string]bool{}, processing: map[string]bool{}, again: map[string]bool{}, failures: map[string]int{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *queue) add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.queued[key] {
		return
	}
	if q.processing[key] {
		q.again[key] = true
		return
	}
	q.queued[key] = true
	q.order = append(q.order, key)
	q.cond.Signal()
}

// addAfter adds key once d has passed (or at once when ctx ends first,
// which the closed queue then ignores).
func (q *queue) addAfter(ctx context.Context, key string, d time.Duration) {
	if d <= 0 {
		q.add(key)
		return
	}
	t := time.NewTimer(d)
	go func() {
		defer t.Stop()
		select {
		case <-t.C:
			q.add(key)
		case <-ctx.Done():
		}
	}()
}

// retry adds key after its backoff, which doubles with each failure.
func (q *queue) retry(ctx context.Context, key string) {
	q.mu.Lock()
	n := q.failures[key]
	q.failures[key] = n + 1
	q.mu.Unlock()
	d := retryBase << min(n, 20)
	q.addAfter(ctx, key, min(d, retryMax))
}

// work hands the queued keys to reconcile, one at a time, until the queue
// is closed: a key that fails is logged (as what, with the key as attr)
// and comes back after its backoff; one that succeeds has its backoff
// reset.
func (q *queue) work(ctx context.Context, log *slog.Logger, what, attr string, reconcile func(context.Context, string) error) {
	for {
		key, ok := q.get()
		if !ok {
			return
		}
		if err := reconcile(ctx, key); err != nil && ctx.Err() == nil {
			log.Warn(what, attr, key, "err", err)
			q.retry(ctx, key)
		} else {
			q.forget(key)
		}
		q.done(key)
	}
}

// forget resets key's backoff after a success.
func (q *queue) forget(key string) {
	q.mu.Lock()
	delete(q.failures, key)
	q.mu.Unlock()
}

// get waits for a key; ok is false once the queue is closed.
func (q *queue) get() (key string, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.order) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return "", false
	}
	key, q.order = q.order[0], q.order[1:]
	delete(q.queued, key)
	q.processing[key] = true
	return key, true
}

// drain takes every queued key (at least one, waiting for it).
func (q *queue) drain() ([]string, bool) {
	first, ok := q.get()
	if !ok {
		return nil, false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	keys := append([]string{first}, q.order...)
	for _, k := range q.order {
		delete(q.queued, k)
		q.processing[k] = true
	}
	q.order = nil
	return keys, true
}

// done ends the work on key.
func (q *queue) done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if q.again[key] {
		delete(q.again, key)
		if !q.closed && !q.queued[key] {
			q.queued[key] = true
			q.order = append(q.order, key)
			q.cond.Signal()
		}
	}
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}
