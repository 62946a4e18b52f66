package ebpf

import (
	"fmt"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/netnsutil"
)

// NetnsCookie is the cookie of the network namespace at nsPath
// (/proc/PID/ns/net, /run/netns/NAME; /proc/self/ns/net for this
// process's own): the number the programs see as bpf_get_netns_cookie and
// AllowNetns takes. It stays the same for the namespace's whole life and
// is never reused while the machine runs.
func NetnsCookie(nsPath string) (uint64, error) {
	var cookie uint64
	err := netnsutil.Run(nsPath, func() error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("ebpf: cookie of network namespace %s (SO_NETNS_COOKIE needs Linux 5.14): %w", nsPath, err)
	}
	return cookie, nil
}
