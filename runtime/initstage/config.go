package initstage

import (
	"encoding/binary"
	"errors"
	"os"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Config is everything the init stage needs, sent by the parent in one
// message (see Encode) so that the init does no parsing of its own.
type Config struct {
	Mode   string // "create" or "exec"
	ID     string
	Bundle string
	Rootfs string
	Spec   *Spec
	JoinNS []specs.LinuxNamespace
	// NewCgroupNS, NewTimeNS and NewNetNS: namespaces the init creates or
	// sets up itself (the others come from clone).
	NewCgroupNS, NewTimeNS, NewNetNS bool
	// HostMountNS: the spec lists no mount namespace, so the container
	// shares the runtime's.
	HostMountNS bool
	// Chroot is, for exec into such a container, the container's root
	// (/proc/<init>/root), which joining namespaces does not enter.
	Chroot       string
	CgroupMounts []CgroupMount
	NoPivot      bool
	PreserveFDs  int
	ConsoleFD    int
	StartFD      int
	// CgroupFDs are the container's cgroup v1 tasks files, open for
	// writing: the init moves its thread into each (cgroups.Join) before
	// anything else. Empty when the parent moved the init itself.
	CgroupFDs []int
	// State is the container's state as JSON, for the hooks the init runs.
	State []byte
	// Seccomp is the compiled linux.seccomp, or nil: compiling once in the
	// parent spares the init the work.
	Seccomp *Filter
}

// Spec is the part of a runtime spec the init stage acts on, which is all
// it receives.
type Spec struct {
	Process    *specs.Process
	Root       *specs.Root
	Hostname   string
	Domainname string
	Mounts     []specs.Mount
	Hooks      *specs.Hooks
	Linux      *Linux
}

// Linux is the part of the spec's linux section the init stage acts on.
type Linux struct {
	Namespaces        []specs.LinuxNamespace
	Devices           []specs.LinuxDevice
	Sysctl            map[string]string
	TimeOffsets       map[string]specs.LinuxTimeOffset
	Personality       *specs.LinuxPersonality
	MaskedPaths       []string
	ReadonlyPaths     []string
	RootfsPropagation string
}

// CgroupMount describes one cgroup hierarchy for the container's
// /sys/fs/cgroup.
type CgroupMount struct {
	Name     string // directory under the mount ("" for a pure v2 host)
	FSType   string // cgroup or cgroup2
	Options  string // v1 subsystems, e.g. "cpu,cpuacct"
	HostPath string // the container's cgroup directory in this hierarchy
}

// Filter is a compiled seccomp program and the flags seccomp(2) takes.
type Filter struct {
	Prog  []unix.SockFilter
	Flags uint
}

// The config travels as a length-prefixed binary message that only this
// package writes and reads, in the order of the fields above. The init
// used to decode JSON with encoding/json, whose first decode in a process
// builds its codecs by reflection (2.3 ms of a 46 ms start, and its
// packages cost the init program's start more): this encoding needs no
// package beyond the ones the init uses anyway.
//
// Encoding: a uvarint for every count, length and number (a zig-zag
// varint for signed ones), a byte for a bool, a presence byte before what
// is optional.

// MaxConfigSize bounds the message the init reads.
const MaxConfigSize = 64 << 20

type encoder struct{ b []byte }

func (e *encoder) uint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) int(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) str(s string)  { e.uint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) bytes(s []byte) {
	e.uint(uint64(len(s)))
	e.b = append(e.b, s...)
}

func (e *encoder) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

func (e *encoder) strs(s []string) {
	e.uint(uint64(len(s)))
	for _, x := range s {
		e.str(x)
	}
}

// has writes whether an optional value is present and returns it.
func (e *encoder) has(present bool) bool { e.bool(present); return present }

// Encode returns c as the init reads it: a 4-byte little-endian length,
// then the message.
func Encode(c *Config) []byte {
	e := &encoder{b: make([]byte, 4, 4096)}
	e.str(c.Mode)
	e.str(c.ID)
	e.str(c.Bundle)
	e.str(c.Rootfs)
	if e.has(c.Spec != nil) {
		e.spec(c.Spec)
	}
	e.namespaces(c.JoinNS)
	e.bool(c.NewCgroupNS)
	e.bool(c.NewTimeNS)
	e.bool(c.NewNetNS)
	e.bool(c.HostMountNS)
	e.str(c.Chroot)
	e.uint(uint64(len(c.CgroupMounts)))
	for _, m := range c.CgroupMounts {
		e.str(m.Name)
		e.str(m.FSType)
		e.str(m.Options)
		e.str(m.HostPath)
	}
	e.bool(c.NoPivot)
	e.int(int64(c.PreserveFDs))
	e.int(int64(c.ConsoleFD))
	e.int(int64(c.StartFD))
	e.uint(uint64(len(c.CgroupFDs)))
	for _, fd := range c.CgroupFDs {
		e.int(int64(fd))
	}
	e.bytes(c.State)
	if e.has(c.Seccomp != nil) {
		e.uint(uint64(c.Seccomp.Flags))
		e.uint(uint64(len(c.Seccomp.Prog)))
		for _, in := range c.Seccomp.Prog {
			e.uint(uint64(in.Code))
			e.uint(uint64(in.Jt))
			e.uint(uint64(in.Jf))
			e.uint(uint64(in.K))
		}
	}
	binary.LittleEndian.PutUint32(e.b, uint32(len(e.b)-4))
	return e.b
}

func (e *encoder) namespaces(nss []specs.LinuxNamespace) {
	e.uint(uint64(len(nss)))
	for _, ns := range nss {
		e.str(string(ns.Type))
		e.str(ns.Path)
	}
}

func (e *encoder) spec(s *Spec) {
	if p := s.Process; e.has(p != nil) {
		e.bool(p.Terminal)
		if e.has(p.ConsoleSize != nil) {
			e.uint(uint64(p.ConsoleSize.Height))
			e.uint(uint64(p.ConsoleSize.Width))
		}
		e.uint(uint64(p.User.UID))
		e.uint(uint64(p.User.GID))
		if e.has(p.User.Umask != nil) {
			e.uint(uint64(*p.User.Umask))
		}
		e.uint(uint64(len(p.User.AdditionalGids)))
		for _, g := range p.User.AdditionalGids {
			e.uint(uint64(g))
		}
		e.strs(p.Args)
		e.strs(p.Env)
		e.str(p.Cwd)
		if c := p.Capabilities; e.has(c != nil) {
			e.strs(c.Bounding)
			e.strs(c.Effective)
			e.strs(c.Inheritable)
			e.strs(c.Permitted)
			e.strs(c.Ambient)
		}
		e.uint(uint64(len(p.Rlimits)))
		for _, r := range p.Rlimits {
			e.str(r.Type)
			e.uint(r.Hard)
			e.uint(r.Soft)
		}
		e.bool(p.NoNewPrivileges)
		if e.has(p.OOMScoreAdj != nil) {
			e.int(int64(*p.OOMScoreAdj))
		}
	}
	if e.has(s.Root != nil) {
		e.str(s.Root.Path)
		e.bool(s.Root.Readonly)
	}
	e.str(s.Hostname)
	e.str(s.Domainname)
	e.uint(uint64(len(s.Mounts)))
	for _, m := range s.Mounts {
		e.str(m.Destination)
		e.str(m.Type)
		e.str(m.Source)
		e.strs(m.Options)
	}
	if h := s.Hooks; e.has(h != nil) {
		// Only the hooks the init runs itself.
		for _, hooks := range [][]specs.Hook{h.CreateContainer, h.StartContainer} {
			e.uint(uint64(len(hooks)))
			for _, k := range hooks {
				e.str(k.Path)
				e.strs(k.Args)
				e.strs(k.Env)
				if e.has(k.Timeout != nil) {
					e.int(int64(*k.Timeout))
				}
			}
		}
	}
	if l := s.Linux; e.has(l != nil) {
		e.namespaces(l.Namespaces)
		e.uint(uint64(len(l.Devices)))
		for _, d := range l.Devices {
			e.str(d.Path)
			e.str(d.Type)
			e.int(d.Major)
			e.int(d.Minor)
			if e.has(d.FileMode != nil) {
				e.uint(uint64(*d.FileMode))
			}
			if e.has(d.UID != nil) {
				e.uint(uint64(*d.UID))
			}
			if e.has(d.GID != nil) {
				e.uint(uint64(*d.GID))
			}
		}
		e.uint(uint64(len(l.Sysctl)))
		for k, v := range l.Sysctl {
			e.str(k)
			e.str(v)
		}
		e.uint(uint64(len(l.TimeOffsets)))
		for k, v := range l.TimeOffsets {
			e.str(k)
			e.int(v.Secs)
			e.uint(uint64(v.Nanosecs))
		}
		if e.has(l.Personality != nil) {
			e.str(string(l.Personality.Domain))
		}
		e.strs(l.MaskedPaths)
		e.strs(l.ReadonlyPaths)
		e.str(l.RootfsPropagation)
	}
}

// errTruncated is what a decode of a message cut short, or of one with a
// count larger than what is left of it, returns.
var errTruncated = errors.New("truncated or malformed init config")

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errTruncated
	}
	d.b = nil
}

func (d *decoder) uint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of items that each take at least one byte, so a
// count past the end of the message is refused before anything is
// allocated for it.
func (d *decoder) count() int {
	n := d.uint()
	if n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) raw() []byte {
	n := d.count()
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) str() string { return string(d.raw()) }

func (d *decoder) bytes() []byte {
	if s := d.raw(); len(s) > 0 {
		return append([]byte(nil), s...)
	}
	return nil
}

func (d *decoder) bool() bool {
	if len(d.b) == 0 {
		d.fail()
		return false
	}
	v := d.b[0]
	d.b = d.b[1:]
	if v > 1 {
		d.fail()
	}
	return v == 1
}

func (d *decoder) u32() uint32 {
	v := d.uint()
	if v > 1<<32-1 {
		d.fail()
	}
	return uint32(v)
}

func (d *decoder) strs() []string {
	n := d.count()
	if n == 0 {
		return nil
	}
	s := make([]string, n)
	for i := range s {
		s[i] = d.str()
	}
	return s
}

// Decode reads a message written by Encode, without its length prefix.
func Decode(b []byte) (*Config, error) {
	d := &decoder{b: b}
	c := &Config{Mode: d.str(), ID: d.str(), Bundle: d.str(), Rootfs: d.str()}
	if d.bool() {
		c.Spec = d.spec()
	}
	c.JoinNS = d.namespaces()
	c.NewCgroupNS, c.NewTimeNS, c.NewNetNS, c.HostMountNS = d.bool(), d.bool(), d.bool(), d.bool()
	c.Chroot = d.str()
	if n := d.count(); n > 0 {
		c.CgroupMounts = make([]CgroupMount, n)
		for i := range c.CgroupMounts {
			c.CgroupMounts[i] = CgroupMount{Name: d.str(), FSType: d.str(), Options: d.str(), HostPath: d.str()}
		}
	}
	c.NoPivot = d.bool()
	c.PreserveFDs, c.ConsoleFD, c.StartFD = int(d.int()), int(d.int()), int(d.int())
	if n := d.count(); n > 0 {
		c.CgroupFDs = make([]int, n)
		for i := range c.CgroupFDs {
			c.CgroupFDs[i] = int(d.int())
		}
	}
	c.State = d.bytes()
	if d.bool() {
		f := &Filter{Flags: uint(d.uint())}
		n := d.count()
		if n == 0 || n > maxInsns {
			d.fail()
		} else {
			f.Prog = make([]unix.SockFilter, n)
			for i := range f.Prog {
				code, jt, jf, k := d.uint(), d.uint(), d.uint(), d.uint()
				if code > 1<<16-1 || jt > 255 || jf > 255 || k > 1<<32-1 {
					d.fail()
				}
				f.Prog[i] = unix.SockFilter{Code: uint16(code), Jt: uint8(jt), Jf: uint8(jf), K: uint32(k)}
			}
		}
		c.Seccomp = f
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("init config has " + strconv.Itoa(len(d.b)) + " bytes past its end")
	}
	if d.err != nil {
		return nil, d.err
	}
	return c, nil
}

// maxInsns is the kernel's BPF_MAXINSNS.
const maxInsns = 4096

func (d *decoder) namespaces() []specs.LinuxNamespace {
	n := d.count()
	if n == 0 {
		return nil
	}
	nss := make([]specs.LinuxNamespace, n)
	for i := range nss {
		nss[i] = specs.LinuxNamespace{Type: specs.LinuxNamespaceType(d.str()), Path: d.str()}
	}
	return nss
}

func (d *decoder) spec() *Spec {
	s := &Spec{}
	if d.bool() {
		p := &specs.Process{Terminal: d.bool()}
		if d.bool() {
			p.ConsoleSize = &specs.Box{Height: uint(d.uint()), Width: uint(d.uint())}
		}
		p.User.UID, p.User.GID = d.u32(), d.u32()
		if d.bool() {
			m := d.u32()
			p.User.Umask = &m
		}
		if n := d.count(); n > 0 {
			p.User.AdditionalGids = make([]uint32, n)
			for i := range p.User.AdditionalGids {
				p.User.AdditionalGids[i] = d.u32()
			}
		}
		p.Args, p.Env, p.Cwd = d.strs(), d.strs(), d.str()
		if d.bool() {
			p.Capabilities = &specs.LinuxCapabilities{Bounding: d.strs(), Effective: d.strs(), Inheritable: d.strs(),
				Permitted: d.strs(), Ambient: d.strs()}
		}
		if n := d.count(); n > 0 {
			p.Rlimits = make([]specs.POSIXRlimit, n)
			for i := range p.Rlimits {
				p.Rlimits[i] = specs.POSIXRlimit{Type: d.str(), Hard: d.uint(), Soft: d.uint()}
			}
		}
		p.NoNewPrivileges = d.bool()
		if d.bool() {
			v := int(d.int())
			p.OOMScoreAdj = &v
		}
		s.Process = p
	}
	if d.bool() {
		s.Root = &specs.Root{Path: d.str(), Readonly: d.bool()}
	}
	s.Hostname, s.Domainname = d.str(), d.str()
	if n := d.count(); n > 0 {
		s.Mounts = make([]specs.Mount, n)
		for i := range s.Mounts {
			s.Mounts[i] = specs.Mount{Destination: d.str(), Type: d.str(), Source: d.str(), Options: d.strs()}
		}
	}
	if d.bool() {
		s.Hooks = &specs.Hooks{CreateContainer: d.hooks(), StartContainer: d.hooks()}
	}
	if d.bool() {
		s.Linux = d.linux()
	}
	return s
}

func (d *decoder) hooks() []specs.Hook {
	n := d.count()
	if n == 0 {
		return nil
	}
	hooks := make([]specs.Hook, n)
	for i := range hooks {
		h := specs.Hook{Path: d.str(), Args: d.strs(), Env: d.strs()}
		if d.bool() {
			t := int(d.int())
			h.Timeout = &t
		}
		hooks[i] = h
	}
	return hooks
}

func (d *decoder) linux() *Linux {
	l := &Linux{Namespaces: d.namespaces()}
	if n := d.count(); n > 0 {
		l.Devices = make([]specs.LinuxDevice, n)
		for i := range l.Devices {
			dev := specs.LinuxDevice{Path: d.str(), Type: d.str(), Major: d.int(), Minor: d.int()}
			if d.bool() {
				m := os.FileMode(d.u32())
				dev.FileMode = &m
			}
			if d.bool() {
				v := d.u32()
				dev.UID = &v
			}
			if d.bool() {
				v := d.u32()
				dev.GID = &v
			}
			l.Devices[i] = dev
		}
	}
	if n := d.count(); n > 0 {
		l.Sysctl = make(map[string]string, n)
		for range n {
			k := d.str()
			l.Sysctl[k] = d.str()
		}
	}
	if n := d.count(); n > 0 {
		l.TimeOffsets = make(map[string]specs.LinuxTimeOffset, n)
		for range n {
			k := d.str()
			l.TimeOffsets[k] = specs.LinuxTimeOffset{Secs: d.int(), Nanosecs: d.u32()}
		}
	}
	if d.bool() {
		l.Personality = &specs.LinuxPersonality{Domain: specs.LinuxPersonalityDomain(d.str())}
	}
	l.MaskedPaths, l.ReadonlyPaths, l.RootfsPropagation = d.strs(), d.strs(), d.str()
	return l
}
