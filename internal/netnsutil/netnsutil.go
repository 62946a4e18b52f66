// Package netnsutil does network work inside another network namespace
// without moving the calling process there.
package netnsutil

import (
	"context"
	"fmt"
	"net"
	"os"
	goruntime "runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// ProcPath is the network namespace of process pid.
func ProcPath(pid int) string { return "/proc/" + strconv.Itoa(pid) + "/ns/net" }

// Dial connects to addr from inside the network namespace at path netns
// (/proc/PID/ns/net, /run/netns/NAME): the socket is made by a thread that
// has entered it, and keeps it whatever thread uses it later.
func Dial(ctx context.Context, netns, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		// The thread is unlocked only once it is back in its own
		// namespace; otherwise it ends with this goroutine.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer orig.Close()
		target, err := os.Open(netns)
		if err != nil {
			ch <- result{nil, fmt.Errorf("open network namespace %s: %w", netns, err)}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("enter network namespace %s: %w", netns, err)}
			goruntime.UnlockOSThread()
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			goruntime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}
