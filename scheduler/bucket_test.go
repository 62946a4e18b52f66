package scheduler

import (
	"math/rand/v2"
	"testing"
)

// TestBucketOrder: buckets are monotonic in free capacity and in range, so
// skipping the buckets below a request's never skips a node that fits.
func TestBucketOrder(t *testing.T) {
	s := &State{maxCap: Resources{32000, 128 * gib}}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		a := Resources{r.Int64N(40000) - 1000, r.Int64N(140*gib) - gib}
		b := Resources{a.MilliCPU + r.Int64N(2000), a.MemoryBytes + r.Int64N(4*gib)}
		ba, bb := s.bucketOf(a), s.bucketOf(b)
		if ba < 0 || bb >= numBuckets || ba > bb {
			t.Fatalf("bucketOf(%+v)=%d, bucketOf(%+v)=%d (of %d)", a, ba, b, bb, numBuckets)
		}
	}
	if got := s.bucketOf(s.maxCap); got != numBuckets-1 {
		t.Fatalf("bucketOf(max) = %d, want %d", got, numBuckets-1)
	}
}
