package bundle

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"nexus.dev/nexus/runtime/spec"
)

const testPasswd = `# accounts
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
nohome:x:1001:1001::
+nis::::::
broken:x:notanumber:0::/:
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
`

const testGroup = `root:x:0:
daemon:x:1:
app:x:1000:
audio:x:29:app, daemon
video:x:44:app
staff:x:50:
wheel:x:10:root
nogroup:x:65534:
`

// testRootfs makes a root filesystem with the accounts above.
func testRootfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/passwd"), testPasswd)
	writeFile(t, filepath.Join(root, "etc/group"), testGroup)
	return root
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestProcessArgsFollowDockerOverrideRules(t *testing.T) {
	img := v1.Config{Entrypoint: []string{"/entry", "-e"}, Cmd: []string{"serve", "--fast"}}
	tests := []struct {
		name       string
		image      v1.Config
		entrypoint []string
		args       []string
		want       []string
		wantErr    string
	}{
		{name: "entrypoint and cmd", image: img, want: []string{"/entry", "-e", "serve", "--fast"}},
		{name: "args replace cmd", image: img, args: []string{"check"}, want: []string{"/entry", "-e", "check"}},
		{name: "entrypoint override drops cmd", image: img, entrypoint: []string{"/other"}, want: []string{"/other"}},
		{name: "entrypoint and args override", image: img, entrypoint: []string{"/other"}, args: []string{"x"}, want: []string{"/other", "x"}},
		{name: "empty entrypoint override clears it", image: img, entrypoint: []string{}, args: []string{"/bin/sh"}, want: []string{"/bin/sh"}},
		{name: "cmd only", image: v1.Config{Cmd: []string{"/bin/sh", "-c", "true"}}, want: []string{"/bin/sh", "-c", "true"}},
		{name: "entrypoint only", image: v1.Config{Entrypoint: []string{"/nexus", "hello"}}, want: []string{"/nexus", "hello"}},
		{name: "args on an image without either", args: []string{"/bin/true"}, want: []string{"/bin/true"}},
		{name: "nothing to run", wantErr: "image has no entrypoint or cmd; pass a command"},
		{name: "cleared entrypoint without args", image: img, entrypoint: []string{}, wantErr: "image has no entrypoint or cmd; pass a command"},
		{name: "empty program", image: v1.Config{Cmd: []string{""}}, wantErr: "program name is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Spec(Config{Image: tt.image, Rootfs: testRootfs(t), Entrypoint: tt.entrypoint, Args: tt.args})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.Process.Args, tt.want) {
				t.Fatalf("args %q, want %q", s.Process.Args, tt.want)
			}
		})
	}
}

func TestResolveUser(t *testing.T) {
	root := testRootfs(t)
	tests := []struct {
		user    string
		want    User
		wantErr string
	}{
		{user: "", want: User{UID: 0, GID: 0, AdditionalGids: []uint32{10}, Home: "/root"}},
		{user: "root", want: User{UID: 0, GID: 0, AdditionalGids: []uint32{10}, Home: "/root"}},
		{user: "app", want: User{UID: 1000, GID: 1000, AdditionalGids: []uint32{29, 44}, Home: "/home/app"}},
		{user: "1000", want: User{UID: 1000, GID: 1000, AdditionalGids: []uint32{29, 44}, Home: "/home/app"}},
		{user: "app:staff", want: User{UID: 1000, GID: 50, Home: "/home/app"}},
		{user: "app:7", want: User{UID: 1000, GID: 7, Home: "/home/app"}},
		{user: "1000:video", want: User{UID: 1000, GID: 44, Home: "/home/app"}},
		{user: "daemon", want: User{UID: 1, GID: 1, AdditionalGids: []uint32{29}, Home: "/usr/sbin"}},
		{user: "nohome", want: User{UID: 1001, GID: 1001, Home: "/"}},
		{user: "4242", want: User{UID: 4242, GID: 0, Home: "/"}},
		{user: "4242:4243", want: User{UID: 4242, GID: 4243, Home: "/"}},
		{user: "65534:65534", want: User{UID: 65534, GID: 65534, Home: "/nonexistent"}},
		{user: "ghost", wantErr: `no user "ghost" in the image's /etc/passwd`},
		{user: "app:ghosts", wantErr: `no group "ghosts" in the image's /etc/group`},
		{user: "broken", wantErr: `no user "broken"`},
		{user: "+nis", wantErr: `no user "+nis"`},
		{user: ":0", wantErr: "the user part before ':' is empty"},
		{user: "app:", wantErr: "the group part after ':' is empty"},
		{user: "a:b:c", wantErr: "more than one ':'"},
		{user: "4294967295", wantErr: "not a number from 0 to 4294967294"},
		{user: "99999999999", wantErr: "not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			got, err := ResolveUser(root, tt.user)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.UID != tt.want.UID || got.GID != tt.want.GID || got.Home != tt.want.Home || !slices.Equal(got.AdditionalGids, tt.want.AdditionalGids) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestResolveUserWithoutAccountFiles(t *testing.T) {
	root := t.TempDir()
	for user, want := range map[string]User{"": {Home: "/"}, "123:456": {UID: 123, GID: 456, Home: "/"}} {
		got, err := ResolveUser(root, user)
		if err != nil || got.UID != want.UID || got.GID != want.GID || got.Home != want.Home {
			t.Errorf("%q: %+v %v", user, got, err)
		}
	}
	if _, err := ResolveUser(root, "app"); err == nil || !strings.Contains(err.Error(), `no user "app"`) {
		t.Errorf("name without /etc/passwd: %v", err)
	}
	if _, err := ResolveUser(filepath.Join(root, "missing"), ""); err == nil || !strings.Contains(err.Error(), "open root filesystem") {
		t.Errorf("missing rootfs: %v", err)
	}
}

// TestResolveUserNeverReadsHostFiles plants account files that are symlinks
// out of the rootfs, the attack an image can carry: they must resolve
// inside the rootfs (and so find nothing), never on the host.
func TestResolveUserNeverReadsHostFiles(t *testing.T) {
	host := t.TempDir()
	hostPasswd := filepath.Join(host, "passwd")
	hostGroup := filepath.Join(host, "group")
	writeFile(t, hostPasswd, "hostonly:x:4242:4242:host:/host-home:/bin/sh\n")
	writeFile(t, hostGroup, "hostgroup:x:4343:hostonly\n")
	rel, _ := filepath.Rel("/", host)
	targets := map[string][2]string{
		"absolute":        {hostPasswd, hostGroup},
		"climbing":        {"../../../../../../../../" + rel + "/passwd", "../../../../../../../../" + rel + "/group"},
		"host etc passwd": {"/etc/passwd", "/etc/group"},
	}
	for name, tg := range targets {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			os.MkdirAll(filepath.Join(root, "etc"), 0o755)
			if err := os.Symlink(tg[0], filepath.Join(root, "etc/passwd")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(tg[1], filepath.Join(root, "etc/group")); err != nil {
				t.Fatal(err)
			}
			u, err := ResolveUser(root, "hostonly")
			if err == nil {
				t.Fatalf("resolved %+v from a file outside the rootfs", u)
			}
			if !strings.Contains(err.Error(), "no user") && !strings.Contains(err.Error(), "open /etc/passwd") {
				t.Fatalf("unexpected error: %v", err)
			}
			if _, err := ResolveUser(root, "1:hostgroup"); err == nil {
				t.Fatal("resolved a group from a file outside the rootfs")
			}
			// The host's root has home /root; through the link it must not show.
			if u, err := ResolveUser(root, "0"); err == nil && u.Home != "/" {
				t.Fatalf("home %q came from the host's passwd", u.Home)
			}
		})
	}
	t.Run("etc is a link to the host", func(t *testing.T) {
		root := t.TempDir()
		if err := os.Symlink(host, filepath.Join(root, "etc")); err != nil {
			t.Fatal(err)
		}
		if u, err := ResolveUser(root, "hostonly"); err == nil {
			t.Fatalf("resolved %+v through a linked /etc", u)
		}
	})
	t.Run("a fifo does not hang", func(t *testing.T) {
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "etc"), 0o755)
		if err := unix.Mkfifo(filepath.Join(root, "etc/passwd"), 0o644); err != nil {
			t.Fatalf("make a fifo: %v", err)
		}
		if _, err := ResolveUser(root, "app"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("fifo passwd: %v", err)
		}
	})
}

func TestEnvironment(t *testing.T) {
	tests := []struct {
		name         string
		image, extra []string
		terminal     bool
		user         string
		want         []string
		wantErr      string
	}{
		{name: "defaults added", want: []string{"PATH=" + DefaultPath, "HOSTNAME=web-1", "HOME=/root"}},
		{name: "image PATH kept", image: []string{"PATH=/app/bin", "A=1"}, want: []string{"PATH=/app/bin", "A=1", "HOSTNAME=web-1", "HOME=/root"}},
		{name: "extra overrides in place", image: []string{"A=1", "B=2"}, extra: []string{"B=3", "C=4"},
			want: []string{"A=1", "B=3", "C=4", "PATH=" + DefaultPath, "HOSTNAME=web-1", "HOME=/root"}},
		{name: "last duplicate wins", image: []string{"A=1", "A=2"}, extra: []string{"HOME=/x", "HOME=/y"},
			want: []string{"A=2", "HOME=/y", "PATH=" + DefaultPath, "HOSTNAME=web-1"}},
		{name: "empty value is a value", extra: []string{"PATH="}, want: []string{"PATH=", "HOSTNAME=web-1", "HOME=/root"}},
		{name: "home of the user", user: "app", want: []string{"PATH=" + DefaultPath, "HOSTNAME=web-1", "HOME=/home/app"}},
		{name: "terminal gets TERM", terminal: true, want: []string{"PATH=" + DefaultPath, "HOSTNAME=web-1", "HOME=/root", "TERM=xterm"}},
		{name: "image TERM kept", terminal: true, image: []string{"TERM=vt100"}, want: []string{"TERM=vt100", "PATH=" + DefaultPath, "HOSTNAME=web-1", "HOME=/root"}},
		{name: "bad image entry", image: []string{"NOEQUALS"}, wantErr: `image environment entry 0, "NOEQUALS", is not NAME=VALUE: fix the image`},
		{name: "bad given entry", extra: []string{"=x"}, wantErr: `given environment entry 0, "=x", is not NAME=VALUE`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Spec(Config{Image: v1.Config{Cmd: []string{"/app"}, Env: tt.image, User: tt.user}, Env: tt.extra,
				Rootfs: testRootfs(t), Hostname: "web-1", Terminal: tt.terminal})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.Process.Env, tt.want) {
				t.Fatalf("env\n got %q\nwant %q", s.Process.Env, tt.want)
			}
		})
	}
}

func TestSpecCarriesImageSettings(t *testing.T) {
	root := testRootfs(t)
	s, err := Spec(Config{
		Image: v1.Config{
			Entrypoint: []string{"/nexus", "hello"}, User: "app", WorkingDir: "/srv",
			ExposedPorts: map[string]struct{}{"8080/tcp": {}, "53/udp": {}, "53/tcp": {}, "9000": {}},
			StopSignal:   "SIGQUIT",
		},
		Rootfs: root, Hostname: "h1", Terminal: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.Root.Path != root || s.Hostname != "h1" || s.Process.Cwd != "/srv" || !s.Process.Terminal {
		t.Errorf("root %q hostname %q cwd %q terminal %v", s.Root.Path, s.Hostname, s.Process.Cwd, s.Process.Terminal)
	}
	if u := s.Process.User; u.UID != 1000 || u.GID != 1000 || !slices.Equal(u.AdditionalGids, []uint32{29, 44}) {
		t.Errorf("user %+v", u)
	}
	if got := s.Annotations[AnnotationExposedPorts]; got != "53/tcp,53/udp,8080/tcp,9000/tcp" {
		t.Errorf("exposed ports annotation %q", got)
	}
	if got := s.Annotations[AnnotationStopSignal]; got != "SIGQUIT" {
		t.Errorf("stop signal annotation %q", got)
	}
	// The hardening is the runtime's default, unchanged.
	d := spec.Default()
	if !slices.Equal(s.Process.Capabilities.Bounding, d.Process.Capabilities.Bounding) || !s.Process.NoNewPrivileges ||
		len(s.Linux.Namespaces) != len(d.Linux.Namespaces) || s.Linux.Seccomp == nil ||
		!slices.Equal(s.Linux.MaskedPaths, d.Linux.MaskedPaths) || len(s.Mounts) != len(d.Mounts) {
		t.Error("spec lost spec.Default's hardening")
	}

	for _, sig := range []string{"SIGTERM", "term", "Quit", "9"} {
		if _, err := Spec(Config{Image: v1.Config{Cmd: []string{"/app"}, StopSignal: sig}, Rootfs: root}); err != nil {
			t.Errorf("stop signal %q refused: %v", sig, err)
		}
	}

	s, err = Spec(Config{Image: v1.Config{Cmd: []string{"/app"}}, Rootfs: root})
	if err != nil {
		t.Fatal(err)
	}
	if s.Process.Cwd != "/" || s.Hostname != "nexus" || len(s.Annotations) != 0 || s.Process.Terminal {
		t.Errorf("defaults: cwd %q hostname %q annotations %v", s.Process.Cwd, s.Hostname, s.Annotations)
	}
}

func TestSpecRejectsBadInput(t *testing.T) {
	root := testRootfs(t)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no rootfs", Config{Image: v1.Config{Cmd: []string{"/a"}}}, "no root filesystem given"},
		{"relative workdir", Config{Image: v1.Config{Cmd: []string{"/a"}, WorkingDir: "srv"}, Rootfs: root}, `working directory "srv" is not an absolute path`},
		{"bad port", Config{Image: v1.Config{Cmd: []string{"/a"}, ExposedPorts: map[string]struct{}{"http/tcp": {}}}, Rootfs: root}, `image exposes port "http/tcp"`},
		{"port zero", Config{Image: v1.Config{Cmd: []string{"/a"}, ExposedPorts: map[string]struct{}{"0/tcp": {}}}, Rootfs: root}, `image exposes port "0/tcp"`},
		{"bad protocol", Config{Image: v1.Config{Cmd: []string{"/a"}, ExposedPorts: map[string]struct{}{"80/icmp": {}}}, Rootfs: root}, `protocol "icmp"`},
		{"unknown user", Config{Image: v1.Config{Cmd: []string{"/a"}, User: "www-data"}, Rootfs: root}, `no user "www-data"`},
		{"bad stop signal", Config{Image: v1.Config{Cmd: []string{"/a"}, StopSignal: "SIGNOPE"}, Rootfs: root}, `stop signal "SIGNOPE"`},
		{"stop signal number out of range", Config{Image: v1.Config{Cmd: []string{"/a"}, StopSignal: "99"}, Rootfs: root}, `stop signal "99"`},
		{"nul in args", Config{Image: v1.Config{Cmd: []string{"/a", "b\x00"}}, Rootfs: root}, "NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Spec(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseAccountFiles(t *testing.T) {
	pw, err := ParsePasswd(strings.NewReader(testPasswd))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range pw {
		names = append(names, e.Name)
	}
	if !slices.Equal(names, []string{"root", "daemon", "app", "nohome", "nobody"}) {
		t.Errorf("passwd names %q (comments, NIS and broken lines must be skipped)", names)
	}
	gr, err := ParseGroup(strings.NewReader(testGroup))
	if err != nil {
		t.Fatal(err)
	}
	if len(gr) != 8 || gr[3].Name != "audio" || gr[3].GID != 29 || !slices.Equal(gr[3].Members, []string{"app", "daemon"}) {
		t.Errorf("group %+v", gr)
	}
}

// TestHostNetwork: only the network namespace goes; the others stay.
func TestHostNetwork(t *testing.T) {
	root := testRootfs(t)
	kinds := func(host bool) map[specs.LinuxNamespaceType]bool {
		t.Helper()
		s, err := Spec(Config{Image: v1.Config{Cmd: []string{"/app"}}, Rootfs: root, HostNetwork: host})
		if err != nil {
			t.Fatal(err)
		}
		m := map[specs.LinuxNamespaceType]bool{}
		for _, ns := range s.Linux.Namespaces {
			m[ns.Type] = true
		}
		return m
	}
	own, host := kinds(false), kinds(true)
	if !own[specs.NetworkNamespace] {
		t.Fatal("by default a container gets its own network namespace")
	}
	if host[specs.NetworkNamespace] {
		t.Fatal("HostNetwork kept the network namespace")
	}
	for k := range own {
		if k != specs.NetworkNamespace && !host[k] {
			t.Errorf("HostNetwork also dropped the %s namespace", k)
		}
	}
}
