package bundle

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParseUser checks that any User string either parses into parts that
// rebuild it or is refused, and never panics.
func FuzzParseUser(f *testing.F) {
	for _, s := range []string{"", "0", "app", "app:staff", "1000:1000", ":1", "a:", "a:b:c", "4294967295", "-1", "0x10", "\x00", "app\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		user, group, err := ParseUser(s)
		if err != nil {
			return
		}
		rebuilt := user
		if group != "" {
			rebuilt += ":" + group
		}
		if rebuilt != s {
			t.Fatalf("ParseUser(%q) = %q, %q", s, user, group)
		}
		if strings.Contains(user, ":") || strings.Contains(group, ":") {
			t.Fatalf("ParseUser(%q) left a ':' in %q, %q", s, user, group)
		}
	})
}

// FuzzParseAccounts feeds arbitrary passwd and group content and user
// strings: parsing never panics, every entry it returns is well formed, and
// resolving a user against the entries either fails with an error or gives
// credentials that agree with them.
func FuzzParseAccounts(f *testing.F) {
	f.Add([]byte(testPasswd), []byte(testGroup), "app")
	f.Add([]byte("a:x:1:2:g:/h:/s\n+::::::\n"), []byte("g:x:2:a,b\n"), "a")
	f.Add([]byte("::::\n#\n\n"), []byte(":::\n"), "0:0")
	f.Add([]byte("x:x:4294967295:0::/:\n"), []byte("y:x:99999999999:\n"), "x:y")
	f.Fuzz(func(t *testing.T, passwd, group []byte, user string) {
		pw, err := ParsePasswd(bytes.NewReader(passwd))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range pw {
			if e.Name == "" || strings.ContainsAny(e.Name, ":\n") || e.UID == 1<<32-1 || e.GID == 1<<32-1 {
				t.Fatalf("bad passwd entry %+v", e)
			}
		}
		gr, err := ParseGroup(bytes.NewReader(group))
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gr {
			if g.Name == "" || strings.ContainsAny(g.Name, ":\n") {
				t.Fatalf("bad group entry %+v", g)
			}
			for _, m := range g.Members {
				if m == "" || strings.ContainsAny(m, ",:\n") {
					t.Fatalf("bad member %q in %+v", m, g)
				}
			}
		}
		u, err := Resolve(user, pw, gr)
		if err != nil {
			return
		}
		name, _, _ := ParseUser(user)
		if name != "" && !isNumeric(name) {
			found := false
			for _, e := range pw {
				if e.Name == name && e.UID == u.UID {
					found = true
					break
				}
			}
			if !found {
				t.Fatalf("user %q resolved to uid %d, which passwd does not give it", user, u.UID)
			}
		}
		if groupName := strings.SplitN(user, ":", 2); len(groupName) == 2 && !isNumeric(groupName[1]) {
			found := false
			for _, g := range gr {
				if g.Name == groupName[1] && g.GID == u.GID {
					found = true
					break
				}
			}
			if !found {
				t.Fatalf("user %q resolved to gid %d, which group does not give it", user, u.GID)
			}
		}
		if u.Home == "" {
			t.Fatalf("user %q resolved with an empty home", user)
		}
	})
}
