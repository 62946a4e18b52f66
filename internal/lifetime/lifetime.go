// Package lifetime keeps the end of a part of the process that runs until
// it is stopped or fails (a server, a node agent, `nexus up`): it stops
// once, whoever asks and however often, and says why when it stopped on
// its own. Its owner keeps its own Done, Err and Stop, documented for what
// it runs, and passes them on.
package lifetime

import (
	"log/slog"
	"sync"
)

// Lifetime is the end of one running thing.
type Lifetime struct {
	stop     func()
	done     chan struct{}
	stopOnce sync.Once
	errOnce  sync.Once
	err      error
}

// New returns the lifetime of a thing that stop shuts down; Stop runs it
// once.
func New(stop func()) *Lifetime {
	return &Lifetime{stop: stop, done: make(chan struct{})}
}

// Fail records err as why the thing stopped, unless an earlier failure
// was recorded, logs it as msg, and stops the thing without waiting: Fail
// is called from the goroutines that stopping waits for.
func (l *Lifetime) Fail(log *slog.Logger, msg string, err error) {
	l.errOnce.Do(func() {
		l.err = err
		log.Error(msg, "err", err)
	})
	go l.Stop()
}

// Done is closed once the thing has stopped.
func (l *Lifetime) Done() <-chan struct{} { return l.done }

// Err is why the thing stopped on its own: the first failure, nil while it
// runs and after a Stop with no failure before it.
func (l *Lifetime) Err() error {
	select {
	case <-l.done:
		return l.err
	default:
		return nil
	}
}

// Stop stops the thing (the first call runs stop) and waits until it has.
func (l *Lifetime) Stop() {
	l.stopOnce.Do(func() {
		l.stop()
		close(l.done)
	})
	<-l.done
}
