package lifetime

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestStopRunsOnceAndWaits: stopped from many goroutines at once, the
// shutdown runs once, every Stop returns only after it has, and a Stop
// without a failure leaves Err nil.
func TestStopRunsOnceAndWaits(t *testing.T) {
	var runs atomic.Int32
	finished := make(chan struct{})
	l := New(func() {
		runs.Add(1)
		time.Sleep(50 * time.Millisecond)
		close(finished)
	})
	if l.Err() != nil {
		t.Fatal("Err before the end")
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Stop()
			select {
			case <-finished:
			default:
				t.Error("Stop returned before the shutdown finished")
			}
		}()
	}
	wg.Wait()
	if n := runs.Load(); n != 1 {
		t.Fatalf("shutdown ran %d times", n)
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := l.Err(); err != nil {
		t.Fatalf("Err after a plain Stop: %v", err)
	}
}

// TestFailKeepsTheFirstError: the first failure stops the thing and is its
// Err; later ones do not replace it; Err is nil until the stop finished.
func TestFailKeepsTheFirstError(t *testing.T) {
	release := make(chan struct{})
	l := New(func() { <-release })
	first, second := errors.New("first"), errors.New("second")
	l.Fail(discard, "stopping", first)
	l.Fail(discard, "stopping", second)
	if err := l.Err(); err != nil {
		t.Fatalf("Err %v while the shutdown still runs", err)
	}
	close(release)
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a failure did not stop the thing")
	}
	if err := l.Err(); err != first {
		t.Fatalf("Err %v, want the first failure", err)
	}
}
