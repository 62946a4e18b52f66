package initstage

import (
	"strings"

	"golang.org/x/sys/unix"
)

// mountOptions is a parsed specs.Mount options list.
type mountOptions struct {
	flags       uintptr // MS_* flags for mount(2)
	clear       uintptr // flags the options explicitly turn off (rw, suid, …)
	propagation []uintptr
	data        []string // file system specific options, passed through
	bind        bool
	recursive   bool
}

var mountFlagOptions = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"nosuid": {false, unix.MS_NOSUID}, "suid": {true, unix.MS_NOSUID},
	"nodev": {false, unix.MS_NODEV}, "dev": {true, unix.MS_NODEV},
	"noexec": {false, unix.MS_NOEXEC}, "exec": {true, unix.MS_NOEXEC},
	"sync": {false, unix.MS_SYNCHRONOUS}, "async": {true, unix.MS_SYNCHRONOUS},
	"dirsync": {false, unix.MS_DIRSYNC}, "remount": {false, unix.MS_REMOUNT},
	"mand": {false, unix.MS_MANDLOCK}, "nomand": {true, unix.MS_MANDLOCK},
	"atime": {true, unix.MS_NOATIME}, "noatime": {false, unix.MS_NOATIME},
	"diratime": {true, unix.MS_NODIRATIME}, "nodiratime": {false, unix.MS_NODIRATIME},
	"relatime": {false, unix.MS_RELATIME}, "norelatime": {true, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME}, "nostrictatime": {true, unix.MS_STRICTATIME},
	"silent": {false, unix.MS_SILENT}, "loud": {true, unix.MS_SILENT},
}

var propagationOptions = map[string]uintptr{
	"private": unix.MS_PRIVATE, "rprivate": unix.MS_PRIVATE | unix.MS_REC,
	"shared": unix.MS_SHARED, "rshared": unix.MS_SHARED | unix.MS_REC,
	"slave": unix.MS_SLAVE, "rslave": unix.MS_SLAVE | unix.MS_REC,
	"unbindable": unix.MS_UNBINDABLE, "runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// parseMountOptions splits options the kernel takes as flags from those it
// takes as file-system data, as mount(8) does.
func parseMountOptions(opts []string) mountOptions {
	var m mountOptions
	for _, o := range opts {
		if f, ok := mountFlagOptions[o]; ok {
			if f.clear {
				m.flags &^= f.flag
				m.clear |= f.flag
			} else {
				m.flags |= f.flag
				m.clear &^= f.flag
			}
			continue
		}
		if p, ok := propagationOptions[o]; ok {
			m.propagation = append(m.propagation, p)
			continue
		}
		switch o {
		case "bind":
			m.bind = true
		case "rbind":
			m.bind, m.recursive = true, true
		case "tmpcopyup", "idmap", "ridmap", "private-bind":
			// Accepted for compatibility with runc/crun specs; no effect here.
		default:
			m.data = append(m.data, o)
		}
	}
	return m
}

func (m mountOptions) dataString() string { return strings.Join(m.data, ",") }

// lockedFlags returns the flags a bind mount must keep when remounted: in a
// user namespace the kernel refuses to clear nosuid/nodev/noexec/ro/atime
// flags that the source mount had.
func lockedFlags(path string) uintptr {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0
	}
	var f uintptr
	for _, x := range []struct {
		st int64
		ms uintptr
	}{
		{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_RDONLY, unix.MS_RDONLY}, {unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME},
		{unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if st.Flags&x.st != 0 {
			f |= x.ms
		}
	}
	return f
}

// MountOptionNames lists the mount options the runtime acts on: flags,
// propagation modes, bind and rbind.
func MountOptionNames() []string {
	names := []string{"bind", "rbind"}
	for o := range mountFlagOptions {
		names = append(names, o)
	}
	for o := range propagationOptions {
		names = append(names, o)
	}
	return names
}
