package cgroups

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeTree writes files (name -> content) under dir.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStatsFiles: Stats reads the counters from the files the kernel
// writes, in each hierarchy's units, on a v2 host (which the host tests
// cannot reach on a v1 machine) and on a v1 one.
func TestStatsFiles(t *testing.T) {
	root := t.TempDir()
	v2 := filepath.Join(root, "unified")
	writeTree(t, filepath.Join(v2, "c"), map[string]string{
		"memory.current":      "104857600\n",
		"memory.peak":         "209715200\n",
		"memory.max":          "268435456\n",
		"memory.swap.current": "0\n",
		"memory.stat":         "anon 73400320\nfile 31457280\nactive_file 1048576\ninactive_file 30408704\nfile_mapped 0\n",
		"memory.events":       "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n",
		"cpu.stat":            "usage_usec 5000123\nuser_usec 4000000\nsystem_usec 1000123\nnr_periods 40\nnr_throttled 7\nthrottled_usec 350000\n",
		"pids.current":        "9\n",
		"pids.max":            "max\n",
		"io.stat":             "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
	})
	v1 := func(ctrl string) string { return filepath.Join(root, ctrl) }
	for ctrl, files := range map[string]map[string]string{
		"memory": {
			"memory.usage_in_bytes": "104857600\n", "memory.max_usage_in_bytes": "209715200\n",
			"memory.limit_in_bytes": "9223372036854771712\n", "memory.memsw.usage_in_bytes": "110100480\n",
			// v1 lists the cgroup's own inactive_file before the total.
			"memory.stat":        "cache 31457280\ninactive_file 1\ntotal_inactive_file 30408704\n",
			"memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
		},
		"cpu":     {"cpu.stat": "nr_periods 40\nnr_throttled 7\nthrottled_time 350000000\n"},
		"cpuacct": {"cpuacct.usage": "5000123000\n"},
		"pids":    {"pids.current": "9\n", "pids.max": "max\n"},
	} {
		writeTree(t, filepath.Join(v1(ctrl), "c"), files)
	}

	for _, tc := range []struct {
		name  string
		l     *layout
		paths map[string]string
		swap  uint64
		limit uint64
		io    bool
	}{
		{"v2", &layout{v2: v2, v2Controllers: map[string]bool{"memory": true, "cpu": true, "pids": true, "io": true}},
			map[string]string{unifiedKey: filepath.Join(v2, "c")}, 0, 256 << 20, true},
		{"v1", &layout{v1: []hierarchy{{v1("memory"), []string{"memory"}}, {v1("cpu"), []string{"cpu"}},
			{v1("cpuacct"), []string{"cpuacct"}}, {v1("pids"), []string{"pids"}}}},
			map[string]string{"memory": filepath.Join(v1("memory"), "c"), "cpu": filepath.Join(v1("cpu"), "c"),
				"cpuacct": filepath.Join(v1("cpuacct"), "c"), "pids": filepath.Join(v1("pids"), "c")}, 5 << 20, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := loadManager(tc.paths, tc.l)
			if err != nil {
				t.Fatal(err)
			}
			s, err := m.Stats()
			if err != nil {
				t.Fatal(err)
			}
			mem, cpu := s.Memory, s.CPU
			if mem.Usage != 100<<20 || mem.MaxUsage != 200<<20 || mem.Limit != tc.limit || mem.SwapUsage != tc.swap ||
				mem.InactiveFile != 29<<20 || mem.OOMKills != 2 {
				t.Errorf("memory %+v", mem)
			}
			if cpu.UsageNanos != 5000123000 || cpu.Periods != 40 || cpu.ThrottledPeriods != 7 || cpu.ThrottledNanos != 350000000 {
				t.Errorf("cpu %+v", cpu)
			}
			if s.Pids.Current != 9 || s.Pids.Limit != 0 {
				t.Errorf("pids %+v", s.Pids)
			}
			if tc.io && (s.IO.ReadBytes != 4096 || s.IO.WriteBytes != 8192) {
				t.Errorf("io %+v", s.IO)
			}
		})
	}

	// A counter that is not a number is an error naming the file; the
	// others are still read.
	writeTree(t, filepath.Join(v2, "c"), map[string]string{"cpu.stat": "nr_periods lots\nusage_usec 12\nnr_throttled 3\n"})
	m, err := loadManager(map[string]string{unifiedKey: filepath.Join(v2, "c")}, &layout{v2: v2, v2Controllers: map[string]bool{"memory": true, "cpu": true}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.Stats()
	if err == nil || !strings.Contains(err.Error(), "parse nr_periods in "+filepath.Join(v2, "c")+"/cpu.stat") {
		t.Errorf("a bad cpu.stat: %v", err)
	}
	if s == nil || s.CPU.UsageNanos != 12000 || s.CPU.ThrottledPeriods != 3 || s.Memory.Usage != 100<<20 {
		t.Errorf("with a bad cpu.stat: %+v", s)
	}
}
