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

// tally is what one slice of a figure counted: connections, requests or
// bytes in elapsed, or each request's time.
type tally struct {
	n       float64
	elapsed time.Duration
	lat     []time.Duration
}

func (t *tally) add(u tally) {
	t.n += u.n
	t.elapsed += u.elapsed
	t.lat = append(t.lat, u.lat...)
}

func (t tally) perSecond() float64 {
	if t.elapsed <= 0 {
		return 0
	}
	return t.n / t.elapsed.Seconds()
}

// figure is one measurement: measure runs it for d against targets, and
// record turns the slices' tallies, added up, into figures.
type figure struct {
	name    string
	measure func(ctx context.Context, b *bench, targets []string, d time.Duration) (tally, error)
	record  func(f *figures, t tally)
}

var allFigures = []figure{
	{"new connections/s", func(ctx context.Context, b *bench, t []string, d time.Duration) (tally, error) {
		return newConnRate(ctx, t, b.o.workers, d)
	}, func(f *figures, t tally) { f.connRate = t.perSecond() }},
	{"kept-alive requests/s", func(ctx context.Context, b *bench, t []string, d time.Duration) (tally, error) {
		return keepAliveRate(ctx, t, b.o.workers, d)
	}, func(f *figures, t tally) { f.kaRate = t.perSecond() }},
	{"kept-alive latency", func(ctx context.Context, b *bench, t []string, d time.Duration) (tally, error) {
		return keepAliveLatency(ctx, t, b.o.replicas, d)
	}, func(f *figures, t tally) { f.kaP50, f.kaP99 = percentile(t.lat, 50), percentile(t.lat, 99) }},
	{"new-connection latency", func(ctx context.Context, b *bench, t []string, d time.Duration) (tally, error) {
		return newConnLatency(ctx, t, d)
	}, func(f *figures, t tally) { f.newP50, f.newP99 = percentile(t.lat, 50), percentile(t.lat, 99) }},
	{"bulk", func(ctx context.Context, b *bench, t []string, d time.Duration) (tally, error) {
		return bulkThroughput(ctx, t, b.o.replicas, int64(b.o.bulkMiB)<<20, d)
	}, func(f *figures, t tally) { f.bulk = t.perSecond() / (1 << 20) }},
}

// round measures every figure of the modes. Each figure's time per mode
// is cut into slices and the modes take turns slice by slice, each slice
// starting with the next mode, so that a change in the machine's load
// (it is shared) falls on every mode alike.
func (b *bench) round(ctx context.Context, modes []string, r int, res roundResult) error {
	slice := b.o.duration / time.Duration(b.o.slices)
	for _, fig := range allFigures {
		sum := map[string]*tally{}
		for s := range b.o.slices {
			for _, m := range rotate(modes, r+s) {
				t, err := fig.measure(ctx, b, b.targets[m], slice)
				if err != nil {
					return fmt.Errorf("mode %s, %s: %w", m, fig.name, err)
				}
				if sum[m] == nil {
					sum[m] = &tally{}
				}
				sum[m].add(t)
			}
		}
		for m, t := range sum {
			fig.record(res.of(m), *t)
		}
	}
	return nil
}

// warm runs every figure of mode once for the warm-up time, untimed:
// connection tracking and neighbour entries, haproxy's and the servers'
// first connections, the servers' buffers.
func (b *bench) warm(ctx context.Context, mode string) error {
	if b.o.warmup == 0 {
		return nil
	}
	for _, fig := range allFigures {
		if _, err := fig.measure(ctx, b, b.targets[mode], b.o.warmup); err != nil {
			return fmt.Errorf("warm-up of mode %s, %s: %w", mode, fig.name, err)
		}
	}
	return nil
}

// newConnRate runs workers loops of connect, one small request with
// "Connection: close", read the answer, close, for d, and counts the
// connections.
func newConnRate(ctx context.Context, targets []string, workers int, d time.Duration) (tally, error) {
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
	return tally{n: float64(done.Load()), elapsed: time.Since(began)}, err
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
// connection of its own kept open, for d, and counts the requests.
func keepAliveRate(ctx context.Context, targets []string, workers int, d time.Duration) (tally, error) {
	cs, err := dialAll(ctx, targets, workers)
	if err != nil {
		return tally{}, err
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
	return tally{n: float64(done.Load()), elapsed: time.Since(began)}, err
}

// keepAliveLatency sends one small request at a time for d, in turn over
// conns connections kept open, and records each request's time.
func keepAliveLatency(ctx context.Context, targets []string, conns int, d time.Duration) (tally, error) {
	cs, err := dialAll(ctx, targets, conns)
	if err != nil {
		return tally{}, err
	}
	defer closeAll(cs)
	var lat []time.Duration
	deadline := time.Now().Add(d)
	for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		t := time.Now()
		if _, err := cs[i%len(cs)].do(reqSmall); err != nil {
			return tally{}, err
		}
		lat = append(lat, time.Since(t))
	}
	return tally{lat: lat}, ctx.Err()
}

// newConnLatency makes one request at a time over a new connection for d
// and records each one's time from before the connect to the whole answer.
func newConnLatency(ctx context.Context, targets []string, d time.Duration) (tally, error) {
	var lat []time.Duration
	deadline := time.Now().Add(d)
	for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		t := time.Now()
		c, err := dialHTTP(ctx, targets[i%len(targets)])
		if err != nil {
			return tally{}, err
		}
		if _, err := c.do(reqSmallClose); err != nil {
			c.close()
			return tally{}, err
		}
		lat = append(lat, time.Since(t))
		if err := c.waitClose(); err != nil {
			return tally{}, err
		}
	}
	return tally{lat: lat}, ctx.Err()
}

// bulkThroughput asks for size-byte bodies one at a time for d (the last
// one may end after d), in turn over conns connections kept open, and
// counts the bytes of body.
func bulkThroughput(ctx context.Context, targets []string, conns int, size int64, d time.Duration) (tally, error) {
	cs, err := dialAll(ctx, targets, conns)
	if err != nil {
		return tally{}, err
	}
	defer closeAll(cs)
	req := reqBytes(size)
	var total int64
	began := time.Now()
	deadline := began.Add(d)
	for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		n, err := cs[i%len(cs)].do(req)
		if err != nil {
			return tally{}, err
		}
		if n != size {
			return tally{}, fmt.Errorf("GET /bytes?n=%d answered %d bytes: the built-in image predates /bytes (make build)", size, n)
		}
		total += n
	}
	return tally{n: float64(total), elapsed: time.Since(began)}, ctx.Err()
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
