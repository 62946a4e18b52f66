package runtime_test

import (
	"context"
	"fmt"
	"os"
	goruntime "runtime"
	"sync"
	"testing"
	"time"

	"nexus.dev/nexus/runtime"
)

// TestCreateSurvivesEndedThreads creates containers while other goroutines
// lock their OS threads and return locked, which ends the threads (as
// package networking does after writing a namespace's sysctls, and Exec
// into a pid namespace did). The kernel sends an init's parent-death
// signal when the thread that forked it ends, not the process: inits
// forked from whichever thread the caller ran on were killed before they
// were ready ("init exited before it was ready: EOF", or "no such process"
// when joining the cgroup): 4 of 5 runs of 16 Creates here failed.
func TestCreateSurvivesEndedThreads(t *testing.T) {
	h := newHarness(t)
	bundle := h.bundle(nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ended := make(chan struct{})
			go func() {
				defer close(ended)
				goruntime.LockOSThread() // returns locked: Go ends the thread
			}()
			<-ended
			time.Sleep(100 * time.Microsecond)
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	for i := range 32 {
		id := fmt.Sprintf("t%d-ended-%d", os.Getpid(), i)
		if err := run(h.rt, bundle, id); err != nil {
			t.Fatal(err)
		}
	}
}

// run creates, starts, waits for and deletes a container that must exit 0.
func run(rt *runtime.Runtime, bundle, id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rt.Create(ctx, id, runtime.CreateOptions{Bundle: bundle, Stdout: os.Stderr, Stderr: os.Stderr}); err != nil {
		return err
	}
	defer rt.Delete(context.Background(), id, true)
	if err := rt.Start(ctx, id); err != nil {
		return err
	}
	st, err := rt.Wait(ctx, id)
	if err != nil {
		return err
	}
	if st.Code != 0 {
		return fmt.Errorf("container %s: %+v, want exit 0", id, st)
	}
	return rt.Delete(ctx, id, false)
}
