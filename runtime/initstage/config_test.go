package initstage

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// fullConfig sets every field the encoding carries.
func fullConfig() *Config {
	umask, oom, timeout := uint32(0o027), -500, 5
	mode, uid, gid := os.FileMode(0o620), uint32(7), uint32(8)
	return &Config{
		Mode: "create", ID: "c1", Bundle: "/b", Rootfs: "/b/rootfs",
		Spec: &Spec{
			Process: &specs.Process{
				Terminal: true, ConsoleSize: &specs.Box{Height: 24, Width: 80},
				User: specs.User{UID: 1000, GID: 1001, Umask: &umask, AdditionalGids: []uint32{5, 6}},
				Args: []string{"sh", "-c", "echo \"hi\"\n"}, Env: []string{"PATH=/bin", "ü=ö"}, Cwd: "/work",
				Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_KILL"}, Effective: []string{"CAP_KILL"},
					Inheritable: nil, Permitted: []string{"CAP_KILL", "CAP_CHOWN"}, Ambient: []string{"CAP_KILL"}},
				Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1 << 62, Soft: 1024}},
				NoNewPrivileges: true, OOMScoreAdj: &oom,
			},
			Root:     &specs.Root{Path: "rootfs", Readonly: true},
			Hostname: "h", Domainname: "d",
			Mounts: []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"},
				{Destination: "/data", Type: "bind", Source: "/srv", Options: []string{"rbind", "ro"}}},
			Hooks: &specs.Hooks{
				CreateContainer: []specs.Hook{{Path: "/bin/hook", Args: []string{"hook", "x"}, Env: []string{"A=1"}, Timeout: &timeout}},
				StartContainer:  []specs.Hook{{Path: "/bin/true"}},
			},
			Linux: &Linux{
				Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/proc/1/ns/net"}},
				Devices: []specs.LinuxDevice{{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: &mode, UID: &uid, GID: &gid},
					{Path: "/dev/x", Type: "b", Major: -1, Minor: 1 << 40}},
				Sysctl:            map[string]string{"net.ipv4.ip_forward": "1", "kernel.msgmax": "8192"},
				TimeOffsets:       map[string]specs.LinuxTimeOffset{"monotonic": {Secs: -3, Nanosecs: 999}},
				Personality:       &specs.LinuxPersonality{Domain: specs.PerLinux32},
				MaskedPaths:       []string{"/proc/kcore"},
				ReadonlyPaths:     []string{"/proc/sys"},
				RootfsPropagation: "rslave",
			},
		},
		JoinNS:      []specs.LinuxNamespace{{Type: specs.IPCNamespace, Path: "/proc/9/ns/ipc"}},
		NewCgroupNS: true, NewTimeNS: true, NewNetNS: true, HostMountNS: true,
		Chroot:       "/proc/9/root",
		CgroupMounts: []CgroupMount{{Name: "cpu,cpuacct", FSType: "cgroup", Options: "cpu,cpuacct", HostPath: "/sys/fs/cgroup/cpu/c1"}, {FSType: "cgroup2"}},
		NoPivot:      true, PreserveFDs: 2, ConsoleFD: 7, StartFD: 6, CgroupFDs: []int{8, 9, 10},
		State: []byte(`{"ociVersion":"1.0.2","id":"c1"}`),
		Seccomp: &Filter{Flags: unix.SECCOMP_FILTER_FLAG_LOG,
			Prog: []unix.SockFilter{{Code: 0x20, K: 4}, {Code: 0x15, Jt: 1, Jf: 255, K: 0xc000003e}, {Code: 0x6, K: 0x7fff0000}}},
	}
}

func decodeEncoded(t *testing.T, c *Config) *Config {
	t.Helper()
	b := Encode(c)
	if n := int(b[0]) | int(b[1])<<8 | int(b[2])<<16 | int(b[3])<<24; n != len(b)-4 {
		t.Fatalf("length prefix %d, message %d bytes", n, len(b)-4)
	}
	got, err := Decode(b[4:])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestConfigRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  *Config
	}{
		{"every field", fullConfig()},
		{"empty", &Config{}},
		{"exec without hooks or filter", &Config{Mode: "exec", ID: "c2", Spec: &Spec{Process: &specs.Process{Args: []string{"ls"}, Cwd: "/"}, Linux: &Linux{}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := decodeEncoded(t, tt.cfg); !reflect.DeepEqual(got, tt.cfg) {
				t.Fatalf("decoded\n%+v\nwant\n%+v", got, tt.cfg)
			}
		})
	}
}

// The init acts on every field it receives; one the encoding left out
// would silently lose a setting. Fields of the spec types the init does
// not act on (validation refuses them or the parent does them) are zero
// after the round trip, and this list says which.
func TestConfigCarriesEveryProcessFieldTheInitUses(t *testing.T) {
	notCarried := map[string]bool{
		"CommandLine": true, "ApparmorProfile": true, "Scheduler": true, "SelinuxLabel": true,
		"IOPriority": true, "ExecCPUAffinity": true,
	}
	typ := reflect.TypeOf(specs.Process{})
	c := fullConfig()
	got := decodeEncoded(t, c)
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		if notCarried[f.Name] {
			continue
		}
		if reflect.ValueOf(*c.Spec.Process).Field(i).IsZero() {
			t.Errorf("fullConfig leaves process.%s unset: set it, or list it as not carried", f.Name)
			continue
		}
		if !reflect.DeepEqual(reflect.ValueOf(*got.Spec.Process).Field(i).Interface(), reflect.ValueOf(*c.Spec.Process).Field(i).Interface()) {
			t.Errorf("process.%s did not survive the encoding", f.Name)
		}
	}
}

func TestDecodeRefusesTruncatedAndTrailing(t *testing.T) {
	b := Encode(fullConfig())[4:]
	for n := 0; n < len(b); n++ {
		if _, err := Decode(b[:n]); err == nil {
			t.Fatalf("decoded a message cut to %d of %d bytes", n, len(b))
		}
	}
	if _, err := Decode(append(append([]byte(nil), b...), 0)); err == nil || !strings.Contains(err.Error(), "past its end") {
		t.Fatalf("trailing byte: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode(fullConfig())[4:])
	f.Add(Encode(&Config{})[4:])
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			return
		}
		// What decodes encodes back to something that decodes the same.
		again, err := Decode(Encode(c)[4:])
		if err != nil {
			t.Fatalf("re-encoded config does not decode: %v", err)
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", c, again)
		}
	})
}

// The parent reads the init's messages with encoding/json.
func TestMessagesAreJSON(t *testing.T) {
	for _, m := range []Message{
		{Type: MsgReady},
		{Type: MsgError, Error: `mounts[0] (bind on /x): "quoted" \ back` + "\n\ttab\x01\x1f ü"},
		{Type: MsgError, Error: "bad byte \xff here"},
	} {
		var buf bytes.Buffer
		if err := writeMessage(&buf, m); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(buf.Bytes(), []byte("}\n")) || bytes.Count(buf.Bytes(), []byte("\n")) != 1 {
			t.Fatalf("%q is not one line", buf.Bytes())
		}
		var got Message
		if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
			t.Fatalf("%q: %v", buf.Bytes(), err)
		}
		want := m
		want.Error = strings.ToValidUTF8(m.Error, string(utf8.RuneError))
		if got != want {
			t.Fatalf("decoded %+v, want %+v", got, want)
		}
	}
}
