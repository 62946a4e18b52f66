package seccomp

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/runtime/initstage"
)

// childEnv selects a scenario when the test binary is re-executed as the
// child that loads a filter: a filter cannot be removed once loaded, so it
// must not be loaded into the test process itself.
const childEnv = "NEXUS_SECCOMP_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		if err := child(mode); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// childScenarios maps a mode to the profile the child loads and what it then
// does on the same (locked) thread.
var childScenarios = map[string]struct {
	profile func() *specs.LinuxSeccomp
	act     func() error
}{
	"errno": {
		profile: func() *specs.LinuxSeccomp {
			return allowAllBut(specs.LinuxSyscall{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: uintp(42)})
		},
		act: func() error {
			err := unix.Mkdirat(unix.AT_FDCWD, filepath.Join(os.Getenv("DIR"), "d"), 0o755)
			if !errors.Is(err, syscall.Errno(42)) {
				return fmt.Errorf("mkdirat: got %v, want errno 42", err)
			}
			if _, err := unix.Getcwd(make([]byte, 4096)); err != nil {
				return fmt.Errorf("getcwd is not filtered but failed: %v", err)
			}
			return nil
		},
	},
	"kill": {
		profile: func() *specs.LinuxSeccomp {
			return allowAllBut(specs.LinuxSyscall{Names: []string{"getcwd"}, Action: specs.ActKillProcess})
		},
		act: func() error {
			_, err := unix.Getcwd(make([]byte, 4096))
			return fmt.Errorf("getcwd returned (%v) instead of killing the process", err)
		},
	},
	"args": {
		profile: func() *specs.LinuxSeccomp {
			return allowAllBut(specs.LinuxSyscall{
				Names: []string{"personality"}, Action: specs.ActErrno, ErrnoRet: uintp(uint(unix.ENOSYS)),
				Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0xffffffff, Op: specs.OpEqualTo}},
			})
		},
		act: func() error {
			if _, _, e := unix.Syscall(unix.SYS_PERSONALITY, 0xffffffff, 0, 0); e != unix.ENOSYS {
				return fmt.Errorf("personality(0xffffffff): got errno %d, want ENOSYS", e)
			}
			if _, _, e := unix.Syscall(unix.SYS_PERSONALITY, 0, 0, 0); e != 0 {
				return fmt.Errorf("personality(0): got errno %d, want success", e)
			}
			return nil
		},
	},
	"default": {
		profile: DefaultProfile,
		act: func() error {
			if err := unix.Unshare(unix.CLONE_NEWUSER); !errors.Is(err, unix.EPERM) {
				return fmt.Errorf("unshare(CLONE_NEWUSER): got %v, want EPERM", err)
			}
			if err := unix.Mkdirat(unix.AT_FDCWD, filepath.Join(os.Getenv("DIR"), "d"), 0o755); err != nil {
				return fmt.Errorf("mkdirat under the default profile: %v", err)
			}
			if _, _, e := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0); e != unix.ENOSYS {
				return fmt.Errorf("clone3: got errno %d, want ENOSYS", e)
			}
			return nil
		},
	},
	"allocs": {
		profile: func() *specs.LinuxSeccomp { return allowAllBut() },
		act: func() error {
			f, err := Compile(allowAllBut())
			if err != nil {
				return err
			}
			var loadErr error
			p := f.Program()
			// Filters stack, so loading the same one repeatedly is harmless.
			n := testing.AllocsPerRun(10, func() {
				if err := initstage.Load(p); err != nil {
					loadErr = err
				}
			})
			if loadErr != nil {
				return loadErr
			}
			if n != 0 {
				return fmt.Errorf("Load allocates %v times, want 0", n)
			}
			return nil
		},
	},
	"flags": {
		profile: func() *specs.LinuxSeccomp {
			s := allowAllBut(specs.LinuxSyscall{Names: []string{"getcwd"}, Action: specs.ActLog})
			s.Flags = []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog, specs.LinuxSeccompFlagSpecAllow, specs.LinuxSeccompFlagWaitKillableRecv}
			return s
		},
		act: func() error {
			_, err := unix.Getcwd(make([]byte, 4096))
			return err
		},
	},
}

func child(mode string) error {
	sc, ok := childScenarios[mode]
	if !ok {
		return fmt.Errorf("unknown child mode %q", mode)
	}
	f, err := Compile(sc.profile())
	if err != nil {
		return err
	}
	// The filter applies to this thread only; keep the goroutine on it.
	runtime.LockOSThread()
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	if err := initstage.Load(f.Program()); err != nil {
		return err
	}
	return sc.act()
}

func TestLoad(t *testing.T) {
	tests := []struct {
		mode   string
		signal syscall.Signal // 0: the child must exit 0
	}{
		{"errno", 0},
		{"kill", unix.SIGSYS},
		{"args", 0},
		{"default", 0},
		{"flags", 0},
		{"allocs", 0},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"="+tt.mode, "DIR="+t.TempDir())
			out, err := cmd.CombinedOutput()
			if tt.signal == 0 {
				if err != nil {
					t.Fatalf("child: %v\n%s", err, out)
				}
				return
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("child: %v, want death by %v\n%s", err, tt.signal, out)
			}
			ws := ee.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != tt.signal {
				t.Fatalf("child: %v, want death by %v\n%s", err, tt.signal, out)
			}
		})
	}
}

func TestLoadEmpty(t *testing.T) {
	if err := initstage.Load((&Filter{}).Program()); err == nil {
		t.Fatal("Load of an empty filter succeeded")
	}
}
