package networking

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tcpListen is the kernel's TCP_LISTEN socket state.
const tcpListen = 10

// socketHolder returns who holds port on the node: a TCP socket listening
// on it, or a UDP socket bound to it, on any address of the node's
// namespace. The DNAT rules would take such a socket's traffic away, so it
// counts as taken. "" means free.
func (n *Node) socketHolder(proto Protocol, port int) (string, error) {
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		var socks []*netlink.Socket
		var err error
		if proto == UDP {
			socks, err = retryDump(func() ([]*netlink.Socket, error) { return n.nl.SocketDiagUDP(fam) })
		} else {
			socks, err = retryDump(func() ([]*netlink.Socket, error) { return n.nl.SocketDiagTCP(fam) })
		}
		if err != nil {
			return "", fmt.Errorf("list the node's sockets: %w", err)
		}
		for _, s := range socks {
			if int(s.ID.SourcePort) != port || (proto == TCP && s.State != tcpListen) {
				continue
			}
			return socketOwner(s.INode), nil
		}
	}
	return "", nil
}

// socketOwner names the process that has the socket with inode ino open,
// as "process PID (COMM)", by looking through /proc/*/fd.
func socketOwner(ino uint32) string {
	want := "socket:[" + strconv.FormatUint(uint64(ino), 10) + "]"
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return "a socket"
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fdDir := "/proc/" + p.Name() + "/fd"
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // gone, or a kernel thread
		}
		for _, fd := range fds {
			if target, err := os.Readlink(fdDir + "/" + fd.Name()); err == nil && target == want {
				comm, _ := os.ReadFile("/proc/" + p.Name() + "/comm")
				return fmt.Sprintf("process %d (%s)", pid, strings.TrimSpace(string(comm)))
			}
		}
	}
	return "a socket of a process that could not be found"
}

// PortInUseError means a host port cannot be published because something
// else has it.
type PortInUseError struct {
	Port     int
	Protocol Protocol
	// Holder is "container ID" or "process PID (NAME)" (or, when the
	// process cannot be found, "a socket of another network namespace's
	// process" / "a socket").
	Holder string
}

func (e *PortInUseError) Error() string {
	return fmt.Sprintf("host port %d/%s is in use by %s: choose another host port or stop it", e.Port, e.Protocol, e.Holder)
}

// ErrPortInUse is matched by every *PortInUseError (errors.Is).
var ErrPortInUse = errors.New("host port in use")

// Is makes errors.Is(err, ErrPortInUse) true for a *PortInUseError.
func (e *PortInUseError) Is(target error) bool { return target == ErrPortInUse }
