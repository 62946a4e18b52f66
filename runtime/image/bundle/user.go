package bundle

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxAccountFile bounds how much of an image's /etc/passwd or /etc/group is
// read: a real one is kilobytes, a hostile one could be endless.
const maxAccountFile = 8 << 20

// User is a resolved image User: the credentials the container process gets.
type User struct {
	UID, GID       uint32
	AdditionalGids []uint32
	// Home is the passwd home directory of the user, "/" when it has none.
	Home string
}

// PasswdEntry is one line of /etc/passwd.
type PasswdEntry struct {
	Name     string
	UID, GID uint32
	Home     string
}

// GroupEntry is one line of /etc/group.
type GroupEntry struct {
	Name    string
	GID     uint32
	Members []string
}

// ParseUser splits an image User string ("", "uid", "uid:gid", "name",
// "name:group", "uid:group", …) into its user and group parts. It checks
// the form only; ResolveUser looks the names up.
func ParseUser(s string) (user, group string, err error) {
	user, group, hasGroup := strings.Cut(s, ":")
	switch {
	case s == "":
		return "", "", nil
	case user == "":
		return "", "", fmt.Errorf("image user %q: the user part before ':' is empty; give a name or a numeric uid", s)
	case hasGroup && group == "":
		return "", "", fmt.Errorf("image user %q: the group part after ':' is empty; give a name or a numeric gid, or drop the ':'", s)
	case strings.Contains(group, ":"):
		return "", "", fmt.Errorf("image user %q: more than one ':'; use user or user:group", s)
	}
	for _, part := range []string{user, group} {
		if strings.ContainsAny(part, "\n\x00") {
			return "", "", fmt.Errorf("image user %q: contains a newline or NUL byte", s)
		}
		if isNumeric(part) {
			if _, err := parseID(part); err != nil {
				return "", "", fmt.Errorf("image user %q: %w", s, err)
			}
		}
	}
	return user, group, nil
}

// ResolveUser resolves an image User string against the /etc/passwd and
// /etc/group of rootfs, the way Docker and runc do: an empty string is root;
// a name must be in passwd; a numeric uid need not be (its gid is then 0); a
// group, by name or number, replaces the primary group and leaves no
// additional groups, while without one the user also gets every group of
// /etc/group that lists it as a member.
//
// The account files are opened with openat2(RESOLVE_IN_ROOT), so a symlink
// in the image (e.g. /etc/passwd -> /../../etc/passwd) resolves inside
// rootfs and can never make this read the host's files.
func ResolveUser(rootfs, spec string) (User, error) {
	if _, _, err := ParseUser(spec); err != nil {
		return User{}, err
	}
	root, err := os.Open(rootfs)
	if err != nil {
		return User{}, fmt.Errorf("open root filesystem to resolve user %q: %w", spec, err)
	}
	defer root.Close()
	passwd, err := readAccountFile(root, "etc/passwd", parsePasswdEntries)
	if err != nil {
		return User{}, err
	}
	groups, err := readAccountFile(root, "etc/group", parseGroupEntries)
	if err != nil {
		return User{}, err
	}
	return Resolve(spec, passwd, groups)
}

// Resolve is ResolveUser on account entries already read.
func Resolve(spec string, passwd []PasswdEntry, groups []GroupEntry) (User, error) {
	userPart, groupPart, err := ParseUser(spec)
	if err != nil {
		return User{}, err
	}
	u := User{Home: "/"}
	var name string
	if userPart == "" {
		userPart = "0"
	}
	if isNumeric(userPart) {
		u.UID, _ = parseID(userPart)
		for _, e := range passwd {
			if e.UID == u.UID {
				u.GID, u.Home, name = e.GID, e.Home, e.Name
				break
			}
		}
	} else {
		found := false
		for _, e := range passwd {
			if e.Name == userPart {
				u.UID, u.GID, u.Home, name, found = e.UID, e.GID, e.Home, e.Name, true
				break
			}
		}
		if !found {
			return User{}, fmt.Errorf("image user %q: no user %q in the image's /etc/passwd; use a numeric uid or a user the image defines", spec, userPart)
		}
	}
	if u.Home == "" {
		u.Home = "/"
	}
	switch {
	case isNumeric(groupPart):
		u.GID, _ = parseID(groupPart)
	case groupPart != "":
		found := false
		for _, g := range groups {
			if g.Name == groupPart {
				u.GID, found = g.GID, true
				break
			}
		}
		if !found {
			return User{}, fmt.Errorf("image user %q: no group %q in the image's /etc/group; use a numeric gid or a group the image defines", spec, groupPart)
		}
	case name != "":
		for _, g := range groups {
			if g.GID == u.GID || !slices.Contains(g.Members, name) || slices.Contains(u.AdditionalGids, g.GID) {
				continue
			}
			u.AdditionalGids = append(u.AdditionalGids, g.GID)
		}
	}
	return u, nil
}

// readAccountFile reads and parses rel inside root. A missing file is an
// empty list: minimal images often have none.
func readAccountFile[T any](root *os.File, rel string, parse func([]byte) []T) ([]T, error) {
	how := unix.OpenHow{
		// O_NONBLOCK: a FIFO planted in an image must not hang the caller.
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(int(root.Fd()), rel, &how)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open /%s in the image: %w", rel, err)
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat /%s in the image: %w", rel, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("/%s in the image is not a regular file (%s); fix the image", rel, fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxAccountFile+1))
	if err != nil {
		return nil, fmt.Errorf("read /%s in the image: %w", rel, err)
	}
	if len(data) > maxAccountFile {
		return nil, fmt.Errorf("/%s in the image is larger than %d bytes; fix the image", rel, maxAccountFile)
	}
	return parse(data), nil
}

// ParsePasswd parses /etc/passwd content. Like libc, it skips lines it
// cannot parse (comments, NIS "+" entries, broken lines) instead of failing,
// so one bad line does not make every user unknown.
func ParsePasswd(r io.Reader) ([]PasswdEntry, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return parsePasswdEntries(data), nil
}

// ParseGroup parses /etc/group content, skipping lines it cannot parse.
func ParseGroup(r io.Reader) ([]GroupEntry, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return parseGroupEntries(data), nil
}

func parsePasswdEntries(data []byte) []PasswdEntry {
	var out []PasswdEntry
	eachLine(data, func(fields []string) {
		// name:password:uid:gid:gecos:home:shell
		if len(fields) < 4 || !validName(fields[0]) {
			return
		}
		uid, err1 := parseID(fields[2])
		gid, err2 := parseID(fields[3])
		if err1 != nil || err2 != nil {
			return
		}
		e := PasswdEntry{Name: fields[0], UID: uid, GID: gid}
		if len(fields) > 5 {
			e.Home = fields[5]
		}
		out = append(out, e)
	})
	return out
}

func parseGroupEntries(data []byte) []GroupEntry {
	var out []GroupEntry
	eachLine(data, func(fields []string) {
		// name:password:gid:member,member
		if len(fields) < 3 || !validName(fields[0]) {
			return
		}
		gid, err := parseID(fields[2])
		if err != nil {
			return
		}
		g := GroupEntry{Name: fields[0], GID: gid}
		if len(fields) > 3 {
			for _, m := range strings.Split(fields[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					g.Members = append(g.Members, m)
				}
			}
		}
		out = append(out, g)
	})
	return out
}

func eachLine(data []byte, f func(fields []string)) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxAccountFile+1)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f(strings.Split(line, ":"))
	}
}

// validName rejects NIS compat entries ("+", "-name") and empty names.
func validName(s string) bool {
	return s != "" && s[0] != '+' && s[0] != '-'
}

func isNumeric(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// parseID parses a uid or gid. 4294967295 is (uid_t)-1, which the kernel
// treats as "unchanged", so it is refused.
func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || !isNumeric(s) || n == 1<<32-1 {
		return 0, fmt.Errorf("id %q is not a number from 0 to 4294967294", s)
	}
	return uint32(n), nil
}
