package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/networking/lb"
	"nexus.dev/nexus/runtime/cgroups"
)

// Config configures a DataPath.
type Config struct {
	// Cgroup is the cgroup2 directory the programs attach to; they apply
	// to the processes in it and below. Empty means the cgroup2 root
	// (found in /proc/self/mountinfo), which covers the node's processes
	// and every container.
	Cgroup string
}

// DataPath balances the frontends of the last Sync's table for the
// sockets of the allowed network namespaces. It is safe for concurrent use.
type DataPath struct {
	mu        sync.Mutex
	objs      lbObjects
	links     []link.Link
	frontends map[lb.Frontend]*frontendState
	nextID    uint32
	// broken is set when a Sync failed half-way: the maps no longer match
	// frontends, and the next Sync starts from empty maps.
	broken bool
	closed bool
}

var _ lb.DataPath = (*DataPath)(nil)

// hooks are the programs and where each attaches.
func (o *lbObjects) hooks() []struct {
	prog *ebpf.Program
	at   ebpf.AttachType
} {
	return []struct {
		prog *ebpf.Program
		at   ebpf.AttachType
	}{
		{o.NexusConnect4, ebpf.AttachCGroupInet4Connect},
		{o.NexusConnect6, ebpf.AttachCGroupInet6Connect},
		{o.NexusSendmsg4, ebpf.AttachCGroupUDP4Sendmsg},
		{o.NexusSendmsg6, ebpf.AttachCGroupUDP6Sendmsg},
		{o.NexusRecvmsg4, ebpf.AttachCGroupUDP4Recvmsg},
		{o.NexusRecvmsg6, ebpf.AttachCGroupUDP6Recvmsg},
		{o.NexusGetpeer4, ebpf.AttachCgroupInet4GetPeername},
		{o.NexusGetpeer6, ebpf.AttachCgroupInet6GetPeername},
	}
}

// New loads the programs and maps and attaches the programs to the
// cgroup with bpf_links. Until AllowNetns names a network namespace and
// Sync gives frontends, the programs change nothing.
func New(cfg Config) (_ *DataPath, err error) {
	cg := cfg.Cgroup
	if cg == "" {
		if cg, err = cgroups.V2Root(); err != nil {
			return nil, fmt.Errorf("ebpf: %w", err)
		}
	}
	d := &DataPath{frontends: map[lb.Frontend]*frontendState{}, nextID: 1}
	if err := loadLbObjects(&d.objs, nil); err != nil {
		return nil, fmt.Errorf("ebpf: load the service load-balancing programs: %w%s", err, permissionHint(err))
	}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	fd, err := unix.Open(cg, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("ebpf: open cgroup %s: %w", cg, err)
	}
	defer unix.Close(fd)
	for _, h := range d.objs.hooks() {
		// A bpf_link, never BPF_PROG_ATTACH: the link goes away with the
		// last descriptor, so nothing stays attached after the process.
		l, err := link.AttachRawLink(link.RawLinkOptions{Target: fd, Program: h.prog, Attach: h.at})
		if err != nil {
			return nil, fmt.Errorf("ebpf: attach %s to cgroup %s with a bpf_link: %w%s", h.at, cg, err, permissionHint(err))
		}
		d.links = append(d.links, l)
	}
	return d, nil
}

func permissionHint(err error) string {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return " (needs root: CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)"
	}
	return ""
}

// Mode is "ebpf".
func (d *DataPath) Mode() string { return "ebpf" }

// AllowNetns makes the programs balance the sockets of the network
// namespace with this cookie (see NetnsCookie).
func (d *DataPath) AllowNetns(cookie uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	if err := d.objs.AllowedNetns.Put(cookie, uint8(1)); err != nil {
		return fmt.Errorf("ebpf: allow network namespace %d: %w", cookie, err)
	}
	return nil
}

// ForgetNetns stops balancing the network namespace's sockets and drops
// its session affinities (its container is gone, or will be).
func (d *DataPath) ForgetNetns(cookie uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	if err := d.objs.AllowedNetns.Delete(cookie); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("ebpf: forget network namespace %d: %w", cookie, err)
	}
	return d.purgeAffinities(func(k lbAffinityKey) bool { return k.Netns == cookie })
}

var errClosed = errors.New("ebpf: the service data path is closed")

// Close detaches the programs and frees them and their maps. Connections
// already made live on; new connections to a frontend are no longer
// rewritten.
func (d *DataPath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	for _, l := range d.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("ebpf: detach: %w", err))
		}
	}
	d.links = nil
	if err := d.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("ebpf: free programs and maps: %w", err))
	}
	return errors.Join(errs...)
}

// programIDs are the kernel's ids of the loaded programs, for checks that
// nothing of the data path outlives Close.
func (d *DataPath) programIDs() ([]ebpf.ProgramID, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ids []ebpf.ProgramID
	for _, h := range d.objs.hooks() {
		info, err := h.prog.Info()
		if err != nil {
			return nil, fmt.Errorf("ebpf: program info: %w", err)
		}
		id, ok := info.ID()
		if !ok {
			return nil, errors.New("ebpf: the kernel does not report program ids")
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// addrWords is a in the maps' form: 16 bytes in network order, IPv4 as
// v4-mapped IPv6, read as the four native words the C side compares.
func addrWords(a netip.Addr) [4]uint32 {
	b := a.Unmap().As16()
	var w [4]uint32
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return w
}

// netPort is p as the C side holds it: network byte order in memory.
func netPort(p uint16) uint16 {
	return binary.NativeEndian.Uint16([]byte{byte(p >> 8), byte(p)})
}

func backendOf(ap netip.AddrPort) lbBackend {
	return lbBackend{Addr: addrWords(ap.Addr()), Port: netPort(ap.Port())}
}

func frontendKey(f lb.Frontend) lbFrontendKey {
	return lbFrontendKey{Addr: addrWords(f.Addr.Addr()), Port: netPort(f.Addr.Port()), Proto: uint8(f.Proto)}
}
