package main

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// figures are one mode's results of one round.
type figures struct {
	connRate float64 // new connections per second (connect, request, close)
	kaRate   float64 // requests per second over kept-alive connections
	kaP50    time.Duration
	kaP99    time.Duration
	newP50   time.Duration // a request over a new connection, from connect to the whole answer
	newP99   time.Duration
	bulk     float64 // MiB/s of response bodies over kept-alive connections
}

// roundResult is each mode's figures in one round.
type roundResult map[string]*figures

func (r roundResult) of(mode string) *figures {
	f := r[mode]
	if f == nil {
		f = &figures{}
		r[mode] = f
	}
	return f
}

// bench measures the figures of the modes, each mode through its
// targets (addresses the client connects to, round-robin).
type bench struct {
	o       options
	targets map[string][]string
}

// figure is one measurement: it runs for d against targets and records
// its result in f.
type figure struct {
	name    string
	measure func(ctx context.Context, b *bench, targets []string, d time.Duration, f *figures) error
}

var allFigures = []figure{
	{"new connections/s", func(ctx context.Context, b *bench, t []string, d time.Duration, f *figures) (err error) {
		f.connRate, err = newConnRate(ctx, t, b.o.workers, d)
		return err
	}},
	{"kept-alive requests/s", func(ctx context.Context, b *bench, t []string, d time.Duration, f *figures) (err error) {
		f.kaRate, err = keepAliveRate(ctx, t, b.o.workers, d)
		return err
	}},
	{"kept-alive latency", func(ctx context.Context, b *bench, t []string, d time.Duration, f *figures) error {
		lat, err := keepAliveLatency(ctx, t, b.o.replicas, d)
		f.kaP50, f.kaP99 = percentile(lat, 50), percentile(lat, 99)
		return err
	}},
	{"new-connection latency", func(ctx context.Context, b *bench, t []string, d time.Duration, f *figures) error {
		lat, err := newConnLatency(ctx, t, d)
		f.newP50, f.newP99 = percentile(lat, 50), percentile(lat, 99)
		return err
	}},
	{"bulk", func(ctx context.Context, b *bench, t []string, d time.Duration, f *figures) (err error) {
		f.bulk, err = bulkThroughput(ctx, t, b.o.replicas, int64(b.o.bulkMiB)<<20, d)
		return err
	}},
}

// round measures every figure of the modes, the modes taking turns
// figure by figure.
func (b *bench) round(ctx context.Context, modes []string, res roundResult) error {
	for _, fig := range allFigures {
		for _, m := range modes {
			if err := fig.measure(ctx, b, b.targets[m], b.o.duration, res.of(m)); err != nil {
				return fmt.Errorf("mode %s, %s: %w", m, fig.name, err)
			}
		}
	}
	return nil
}

// warm runs every figure of mode once for the warm-up time, untimed:
// connection tracking entries, ARP/neighbour entries, haproxy's and the
// servers' first connections.
func (b *bench) warm(ctx context.Context, mode string) error {
	if b.o.warmup == 0 {
		return nil
	}
	var f figures
	for _, fig := range allFigures {
		if err := fig.measure(ctx, b, b.targets[mode], b.o.warmup, &f); err != nil {
			return fmt.Errorf("warm-up of mode %s, %s: %w", mode, fig.name, err)
		}
	}
	return nil
}

// newConnRate runs workers loops of connect, one small request with
// "Connection: close", read the answer, close, for d, and returns the
// connections per second.
func newConnRate(ctx context.Context, targets []string, workers int, d time.Duration) (float64, error) {
	var done atomic.Int64
	began := time.Now()
	deadline := began.Add(d)
	g, ctx := errgroup.WithContext(ctx)
	for w := range workers {
		g.Go(func() error {
			for i := w; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				if err := oneShot(ctx, targets[i%len(targets)], reqSmallClose); err != nil {
					return err
				}
				done.Add(1)
			}
			return nil
		})
	}
	err := g.Wait()
	return float64(done.Load()) / time.Since(began).Seconds(), err
}

// oneShot is one request over a new connection, closed by the server.
func oneShot(ctx context.Context, addr string, req []byte) error {
	c, err := dialHTTP(ctx, addr)
	if err != nil {
		return err
	}
	if _, err := c.do(req); err != nil {
		c.close()
		return err
	}
	return c.waitClose()
}

// dialAll opens n connections, round-robin over targets.
func dialAll(ctx context.Context, targets []string, n int) ([]*httpConn, error) {
	var cs []*httpConn
	for i := range n {
		c, err := dialHTTP(ctx, targets[i%len(targets)])
		if err != nil {
			closeAll(cs)
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

func closeAll(cs []*httpConn) {
	for _, c := range cs {
		c.close()
	}
}

// keepAliveRate runs workers loops of small requests, each over a
// connection of its own kept open, for d, and returns the requests per
// second.
func keepAliveRate(ctx context.Context, targets []string, workers int, d time.Duration) (float64, error) {
	cs, err := dialAll(ctx, targets, workers)
	if err != nil {
		return 0, err
	}
	defer closeAll(cs)
	var done atomic.Int64
	began := time.Now()
	deadline := began.Add(d)
	g, ctx := errgroup.WithContext(ctx)
	for _, c := range cs {
		g.Go(func() error {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if _, err := c.do(reqSmall); err != nil {
					return err
				}
				done.Add(1)
			}
			return nil
		})
	}
	err = g.Wait()
	return float64(done.Load()) / time.Since(began).Seconds(), err
}

// keepAliveLatency sends one small request at a time for d, in turn over
// conns connections kept open, and returns each request's time.
func keepAliveLatency(ctx context.Context, targets []string, conns int, d time.Duration) ([]time.Duration, error) {
	cs, err := dialAll(ctx, targets, conns)
	if err != nil {
		return nil, err
	}
	defer closeAll(cs)
	var lat []time.Duration
	deadline := time.Now().Add(d)
	for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		t := time.Now()
		if _, err := cs[i%len(cs)].do(reqSmall); err != nil {
			return lat, err
		}
		lat = append(lat, time.Since(t))
	}
	return lat, ctx.Err()
}

// newConnLatency makes one request at a time over a new connection for d
// and returns each one's time from before the connect to the whole answer.
func newConnLatency(ctx context.Context, targets []string, d time.Duration) ([]time.Duration, error) {
	var lat []time.Duration
	deadline := time.Now().Add(d)
	for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		t := time.Now()
		c, err := dialHTTP(ctx, targets[i%len(targets)])
		if err != nil {
			return lat, err
		}
		if _, err := c.do(reqSmallClose); err != nil {
			c.close()
			return lat, err
		}
		lat = append(lat, time.Since(t))
		if err := c.waitClose(); err != nil {
			return lat, err
		}
	}
	return lat, ctx.Err()
}

// bulkThroughput asks for size-byte bodies one at a time for d, in turn
// over conns connections kept open, and returns MiB of body per second.
func bulkThroughput(ctx context.Context, targets []string, conns int, size int64, d time.Duration) (float64, error) {
	cs, err := dialAll(ctx, targets, conns)
	if err != nil {
		return 0, err
	}
	defer closeAll(cs)
	req := reqBytes(size)
	var total int64
	began := time.Now()
	deadline := began.Add(d)
	for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		n, err := cs[i%len(cs)].do(req)
		if err != nil {
			return 0, err
		}
		if n != size {
			return 0, fmt.Errorf("GET /bytes?n=%d answered %d bytes: the built-in image predates /bytes (make build)", size, n)
		}
		total += n
	}
	return float64(total) / (1 << 20) / time.Since(began).Seconds(), ctx.Err()
}

// percentile is the nearest-rank p-th percentile of samples (0 for none).
func percentile(samples []time.Duration, p int) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}
