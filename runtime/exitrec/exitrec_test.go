package exitrec

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testutil"
)

// openTest loads a private recorder pinned under a test directory of bpffs
// and removes it afterwards (unpinning detaches the program).
func openTest(t *testing.T) (*Recorder, string) {
	t.Helper()
	return openTestAt(t, filepath.Join("/sys/fs/bpf/nexus-test", filepath.Base(t.TempDir())))
}

// openTestAt is openTest with the pins in dir.
func openTestAt(t *testing.T, dir string) (*Recorder, string) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequirePath(t, "/sys/kernel/btf/vmlinux", "kernel BTF")
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close()
		for _, n := range []string{"link", "watch", "exits", ""} {
			syscall.Unlink(filepath.Join(dir, n))
		}
		syscall.Rmdir(dir)
		syscall.Rmdir(filepath.Dir(dir)) // fails while another test uses it
	})
	return r, dir
}

func TestRecordsExitCodesAndSignals(t *testing.T) {
	r, _ := openTest(t)
	tests := []struct {
		name   string
		script string
		signal bool
		want   int
	}{
		{"exit code", "exit 7", false, 7},
		{"zero", "true", false, 0},
		{"killed by signal", "kill -9 $$", true, int(unix.SIGKILL)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("/bin/sh", "-c", "read x; "+tt.script)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if err := r.Watch(cmd.Process.Pid); err != nil {
				t.Fatal(err)
			}
			stdin.Close() // let it exit now that it is watched
			_ = cmd.Wait()
			ws, ok, err := r.Lookup(cmd.Process.Pid)
			if err != nil || !ok {
				t.Fatalf("no record for pid %d: %v", cmd.Process.Pid, err)
			}
			if tt.signal {
				if !ws.Signaled() || int(ws.Signal()) != tt.want {
					t.Fatalf("status %#x, want killed by signal %d", uint32(ws), tt.want)
				}
			} else if !ws.Exited() || ws.ExitStatus() != tt.want {
				t.Fatalf("status %#x, want exit code %d", uint32(ws), tt.want)
			}
			r.Forget(cmd.Process.Pid)
			if _, ok, _ := r.Lookup(cmd.Process.Pid); ok {
				t.Fatal("Forget left the record")
			}
		})
	}
}

func TestUnwatchedProcessesAreNotRecorded(t *testing.T) {
	r, _ := openTest(t)
	cmd := exec.Command("/bin/sh", "-c", "exit 3")
	if err := cmd.Run(); err == nil {
		t.Fatal("want exit status 3")
	}
	if _, ok, _ := r.Lookup(cmd.Process.Pid); ok {
		t.Fatal("an unwatched process was recorded")
	}
}

func TestPinnedRecorderOutlivesItsLoader(t *testing.T) {
	r, dir := openTest(t)
	cmd := exec.Command("/bin/sh", "-c", "sleep 0.2; exit 9")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := r.Watch(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	r.Close() // like an agent that stops while the container runs
	_ = cmd.Wait()
	time.Sleep(10 * time.Millisecond)
	again, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	ws, ok, err := again.Lookup(cmd.Process.Pid)
	if err != nil || !ok || ws.ExitStatus() != 9 {
		t.Fatalf("after reopening: status %#x, found %v, err %v; want exit code 9", uint32(ws), ok, err)
	}
}

// TestOpenMountsBPFFSOnlyAtItsPlace: pins asked for somewhere that is not
// on a bpffs are refused, and nothing is mounted there: a bpffs mounted
// over /sys/fs (the parent of the parent of /sys/fs/bpf/x) once hid the
// cgroup hierarchies.
func TestOpenMountsBPFFSOnlyAtItsPlace(t *testing.T) {
	testutil.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "a", "b")
	before := mounts(t)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "is not on a bpffs: pin it under /sys/fs/bpf") {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	if after := mounts(t); after != before {
		t.Fatalf("Open mounted something: %d mounts before, %d after", before, after)
	}
	// One level under bpffs is on bpffs: nothing is mounted above it.
	_, pins := openTestAt(t, filepath.Join("/sys/fs/bpf", "nexus-test-"+filepath.Base(t.TempDir())))
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs", &st); err != nil || st.Type == unix.BPF_FS_MAGIC {
		if err == nil {
			_ = unix.Unmount("/sys/fs", 0) // what the old code did, undone
		}
		t.Fatalf("opening %s put a bpffs over /sys/fs (%v)", pins, err)
	}
}

func mounts(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "\n")
}
