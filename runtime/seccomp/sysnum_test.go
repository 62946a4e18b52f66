package seccomp

import (
	"bufio"
	"os"
	"regexp"
	"strconv"
	"testing"

	"nexus.dev/nexus/internal/testutil"
)

// TestTableMatchesKernelHeaders cross-checks the generated table, and in
// particular the x32 column gen_sysnum.go derives rather than reads, against
// the host's kernel UAPI headers (linux-libc-dev).
func TestTableMatchesKernelHeaders(t *testing.T) {
	const dir = "/usr/include/x86_64-linux-gnu/asm/"
	testutil.RequirePath(t, dir+"unistd_x32.h", "x86 UAPI headers from linux-libc-dev")
	re := regexp.MustCompile(`^#define __NR_(\w+) (?:\(__X32_SYSCALL_BIT \+ )?(\d+)\)?$`)
	for _, tc := range []struct {
		file string
		arch archIndex
	}{
		{"unistd_64.h", archAMD64},
		{"unistd_32.h", arch386},
		{"unistd_x32.h", archX32},
	} {
		fh, err := os.Open(dir + tc.file)
		if err != nil {
			t.Fatal(err)
		}
		header := map[string]int32{}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				n, _ := strconv.Atoi(m[2])
				header[m[1]] = int32(n)
			}
		}
		fh.Close()
		if len(header) < 300 {
			t.Fatalf("%s: parsed only %d syscalls", tc.file, len(header))
		}
		// Syscalls newer than the host headers are not checked.
		for name, n := range header {
			nrs, ok := lookup(name)
			if !ok || nrs[tc.arch] != n {
				got := int32(-1)
				if ok {
					got = nrs[tc.arch]
				}
				t.Errorf("%s: %s is %d, table has %d", tc.file, name, n, got)
			}
		}
	}
}
