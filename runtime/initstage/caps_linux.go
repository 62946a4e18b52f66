package initstage

import (
	"fmt"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// capabilityNames maps CAP_* names to their numbers (capability.h).
var capabilityNames = map[string]uint{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_FSETID": 4,
	"CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_LINUX_IMMUTABLE": 9,
	"CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
	"CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18,
	"CAP_SYS_PTRACE": 19, "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
	"CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27, "CAP_LEASE": 28,
	"CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31, "CAP_MAC_OVERRIDE": 32,
	"CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35, "CAP_BLOCK_SUSPEND": 36,
	"CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39, "CAP_CHECKPOINT_RESTORE": 40,
}

// capSysAdmin is CAP_SYS_ADMIN's number.
const capSysAdmin = 21

// CapabilityByName returns the number of a CAP_* name (any case).
func CapabilityByName(name string) (uint, bool) {
	c, ok := capabilityNames[strings.ToUpper(name)]
	return c, ok
}

// CapSet is a 64-bit capability mask.
type CapSet uint64

func capSetOf(names []string) CapSet {
	var s CapSet
	for _, n := range names {
		if c, ok := CapabilityByName(n); ok {
			s |= 1 << c
		}
	}
	return s
}

// Grantable is what this process can give a container: its permitted set,
// which for root is its bounding set. A machine or a sandbox may run the
// runtime without some capability (this project's CI machine lacks
// CAP_SYS_RESOURCE), and a kernel may not know the newest ones.
func Grantable() (CapSet, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("read own capabilities: %w", err)
	}
	return CapSet(data[0].Permitted) | CapSet(data[1].Permitted)<<32, nil
}

// Ungrantable names the capabilities in any of c's sets that are not in have.
func Ungrantable(c *specs.LinuxCapabilities, have CapSet) []string {
	want := capSetOf(c.Bounding) | capSetOf(c.Effective) | capSetOf(c.Inheritable) | capSetOf(c.Permitted) | capSetOf(c.Ambient)
	var out []string
	for i := uint(0); i < 64; i++ {
		if want&^have&(1<<i) != 0 {
			out = append(out, capabilityName(i))
		}
	}
	return out
}

func capabilityName(n uint) string {
	for name, c := range capabilityNames {
		if c == n {
			return name
		}
	}
	return fmt.Sprintf("capability %d", n)
}

// within leaves out of every set what have does not hold.
func (c capabilities) within(have CapSet) capabilities {
	return capabilities{Bounding: c.Bounding & have, Effective: c.Effective & have, Inheritable: c.Inheritable & have,
		Permitted: c.Permitted & have, Ambient: c.Ambient & have}
}

// UnraisableAmbient names the spec's ambient capabilities that the kernel
// will not raise because they are not both permitted and inheritable
// (`runc spec` and `crun spec` write such sets). They are left out with a
// warning, as runc and crun do.
func UnraisableAmbient(c *specs.LinuxCapabilities) []string {
	if c == nil {
		return nil
	}
	ok := capSetOf(c.Permitted) & capSetOf(c.Inheritable)
	var out []string
	for _, name := range c.Ambient {
		if n, known := CapabilityByName(name); known && ok&(1<<n) == 0 {
			out = append(out, name)
		}
	}
	return out
}

// lastCap reads the highest capability the running kernel knows.
func lastCap() uint {
	var buf [8]byte
	fd, err := unix.Open("/proc/sys/kernel/cap_last_cap", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 40
	}
	defer unix.Close(fd)
	n, _ := unix.Read(fd, buf[:])
	var v uint
	for _, b := range buf[:n] {
		if b < '0' || b > '9' {
			break
		}
		v = v*10 + uint(b-'0')
	}
	if v == 0 {
		return 40
	}
	return v
}

// capabilities is the full set a process ends up with.
type capabilities struct {
	Bounding, Effective, Inheritable, Permitted, Ambient CapSet
}

// dropBounding removes every capability outside the bounding set. It needs
// CAP_SETPCAP, so it runs before the process changes user.
func (c capabilities) dropBounding() error {
	last := lastCap()
	for i := uint(0); i <= last; i++ {
		if c.Bounding&(1<<i) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(i), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d from the bounding set: %w", i, err)
		}
	}
	return nil
}

// apply sets effective, permitted and inheritable, then the ambient set
// (which must be a subset of permitted and inheritable).
func (c capabilities) apply() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: uint32(c.Effective), Permitted: uint32(c.Permitted), Inheritable: uint32(c.Inheritable)},
		{Effective: uint32(c.Effective >> 32), Permitted: uint32(c.Permitted >> 32), Inheritable: uint32(c.Inheritable >> 32)},
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("set capabilities: %w", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	for i := uint(0); i < 64; i++ {
		if c.Ambient&(1<<i) == 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(i), 0, 0); err != nil {
			return fmt.Errorf("raise ambient capability %d (it must also be permitted and inheritable): %w", i, err)
		}
	}
	return nil
}

// CapabilityNames lists every capability name the runtime knows.
func CapabilityNames() []string {
	names := make([]string, 0, len(capabilityNames))
	for n := range capabilityNames {
		names = append(names, n)
	}
	return names
}
