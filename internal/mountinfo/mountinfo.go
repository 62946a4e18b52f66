// Package mountinfo reads /proc/self/mountinfo, the kernel's list of this
// mount namespace's mounts, for the packages that must know what is mounted
// where (cgroup hierarchies, container root filesystems).
package mountinfo

import (
	"bufio"
	"os"
	"strings"
)

// Unescape undoes the octal escapes (\040 for a space, \011 tab, \012
// newline, \134 backslash) the kernel writes into mountinfo paths.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// IsMountPoint reports whether path (absolute, clean) is a mount point in
// this process's mount namespace.
func IsMountPoint(path string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && Unescape(fields[4]) == path {
			return true, nil
		}
	}
	return false, sc.Err()
}
