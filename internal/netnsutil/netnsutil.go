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
	var c net.Conn
	err := Run(netns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Run calls f on an OS thread that has entered the network namespace at
// path netns, and returns f's error. Sockets f makes belong to that
// namespace for their whole life. The thread goes back to its own
// namespace afterwards, or is discarded if it cannot.
func Run(netns string, f func() error) error {
	ch := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		// The thread is unlocked only once it is back in its own
		// namespace; otherwise it ends with this goroutine.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(netns)
		if err != nil {
			ch <- fmt.Errorf("open network namespace %s: %w", netns, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("enter network namespace %s: %w", netns, err)
			goruntime.UnlockOSThread()
			return
		}
		err = f()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			goruntime.UnlockOSThread()
		}
		ch <- err
	}()
	return <-ch
}
