package sandbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/testrootfs"
	"nexus.dev/nexus/internal/testutil"
	"nexus.dev/nexus/runtime"
	"nexus.dev/nexus/runtime/sandbox"
	"nexus.dev/nexus/runtime/spec"
)

// TestMain lets the test binary act as the runsc shim: the tier
// re-executes its own binary, which here is this test binary.
func TestMain(m *testing.M) {
	if sandbox.IsShim() {
		sandbox.ShimMain()
	}
	os.Exit(m.Run())
}

func newTier(t *testing.T) *sandbox.Tier {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireProgram(t, "runsc", "runsc")
	tier, err := sandbox.New(sandbox.Config{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return tier
}

// bundle writes a busybox bundle running args with spec.Default().
func bundle(t *testing.T, args ...string) string {
	t.Helper()
	s := spec.Default()
	s.Process.Args = args
	return testrootfs.Bundle(t, s, nil)
}

// create creates a container whose stdout and stderr go to a file, and
// force-deletes it when the test ends.
func create(ctx context.Context, t *testing.T, tier *sandbox.Tier, id string, args ...string) (output string) {
	t.Helper()
	output = filepath.Join(t.TempDir(), "out")
	out, err := os.Create(output)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := tier.Delete(ctx, id, true); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := tier.Create(ctx, id, runtime.CreateOptions{Bundle: bundle(t, args...), Stdout: out, Stderr: out}); err != nil {
		t.Fatal(err)
	}
	return output
}

func testID(t *testing.T) string {
	return fmt.Sprintf("nexus-sbx-%s-%d", strings.ToLower(t.Name()), os.Getpid())
}

func TestRunsUnderGVisorAndReportsExitCode(t *testing.T) {
	tier := newTier(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := testID(t)
	begin := time.Now()
	output := create(ctx, t, tier, id, "sh", "-c", "echo hi from $(uname -r); exit 3")
	if st, err := tier.State(id); err != nil || st.Status != specs.StateCreated || st.Pid <= 0 {
		t.Fatalf("state after create = %+v, %v; want created with a pid", st, err)
	}
	if err := tier.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	es, err := tier.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("create+start+wait took %v", time.Since(begin))
	if es.Code != 3 || es.Signal != 0 || !es.Known {
		t.Errorf("exit status = %+v, want code 3", es)
	}
	b, _ := os.ReadFile(output)
	var host unix.Utsname
	if err := unix.Uname(&host); err != nil {
		t.Fatal(err)
	}
	hostRelease := unix.ByteSliceToString(host.Release[:])
	got := strings.TrimSpace(string(b))
	if !strings.HasPrefix(got, "hi from ") {
		t.Fatalf("output = %q, want \"hi from <release>\"", got)
	}
	if release := strings.TrimPrefix(got, "hi from "); release == hostRelease {
		t.Errorf("container saw the host's kernel %s: not running under gVisor", release)
	}

	// The status is on disk: another Tier value on the same root sees it.
	other, err := sandbox.New(sandbox.Config{Root: tier.Root()})
	if err != nil {
		t.Fatal(err)
	}
	if es2, err := other.Wait(ctx, id); err != nil || es2.Code != 3 {
		t.Errorf("Wait from another Tier = %+v, %v; want code 3", es2, err)
	}
}

func TestKillIsReportedAsSignal(t *testing.T) {
	tier := newTier(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := testID(t)
	create(ctx, t, tier, id, "sleep", "100")
	if err := tier.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	if st, err := tier.State(id); err != nil || st.Status != specs.StateRunning {
		t.Fatalf("state after start = %+v, %v; want running", st, err)
	}
	if err := tier.Kill(id, syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	es, err := tier.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if es.Signal != syscall.SIGKILL || es.Code != 128+9 {
		t.Errorf("exit status = %v, want killed by SIGKILL", es)
	}
}

func TestDeleteCleansUp(t *testing.T) {
	tier := newTier(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := testID(t)
	create(ctx, t, tier, id, "sleep", "100")
	if err := tier.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := tier.Delete(ctx, id, false); err == nil {
		t.Fatal("Delete without force of a running sandbox succeeded")
	}
	if err := tier.Delete(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if st, err := tier.State(id); err == nil {
		t.Errorf("state after delete = %+v, want an error", st)
	}
	if _, err := tier.Wait(ctx, id); err == nil {
		t.Error("Wait after delete succeeded")
	}
	// runsc's processes (sandbox, gofer) carry the id on their command line.
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := exec.Command("pgrep", "-af", id).Output()
		if err != nil { // exit 1: no process matched
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("runsc processes left for %s:\n%s", id, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCreateFailureNamesContainerAndCleansUp(t *testing.T) {
	tier := newTier(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := testID(t)
	dir := bundle(t, "true")
	s, err := spec.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	// runsc checks bind sources only when the sandbox sets up its mounts.
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: "/no/such/dir", Options: []string{"rbind"}})
	b, _ := json.Marshal(s)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	err = tier.Create(ctx, id, runtime.CreateOptions{Bundle: dir, Stdout: devnull, Stderr: devnull})
	if err == nil {
		_ = tier.Delete(ctx, id, true)
		t.Fatal("Create with a missing bind source succeeded")
	}
	t.Logf("create error: %v", err)
	for _, want := range []string{id, "/no/such/dir"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if _, err := tier.State(id); err == nil {
		t.Error("failed Create left runsc state behind")
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/*/" + id); len(left) > 0 {
		t.Errorf("failed Create left cgroups behind: %v", left)
	}
	// Nothing is left in the way of the same id.
	t.Cleanup(func() { _ = tier.Delete(context.Background(), id, true) })
	if err := tier.Create(ctx, id, runtime.CreateOptions{Bundle: bundle(t, "true"), Stdout: devnull, Stderr: devnull}); err != nil {
		t.Errorf("Create with the same id after a failure: %v", err)
	}
}

func TestNewWithoutRunscSaysWhatToInstall(t *testing.T) {
	_, err := sandbox.New(sandbox.Config{Runsc: "/no/such/runsc"})
	if err == nil || !strings.Contains(err.Error(), "apt-get install -y runsc") {
		t.Errorf("New with a missing runsc: %v, want a hint to install runsc", err)
	}
}
