package main

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"nexus.dev/nexus/internal/proc"
)

// memReading is a process's resident memory, and the Go runtime's view of
// it when the process exports /metrics.
type memReading struct {
	rssMiB, anonMiB, fileMiB float64
	threads                  int
	heapMiB                  float64
	goroutines               int
}

func (m memReading) String() string {
	s := fmt.Sprintf("RSS %.1f MiB (anonymous %.1f, file %.1f), %d threads", m.rssMiB, m.anonMiB, m.fileMiB, m.threads)
	if m.goroutines > 0 {
		s += fmt.Sprintf(", Go heap in use %.1f MiB (garbage not yet collected included), %d goroutines", m.heapMiB, m.goroutines)
	}
	return s
}

// readProcMem reads pid's resident memory (zero when it is gone).
func readProcMem(pid int) memReading {
	m, _ := proc.ReadMemory(pid)
	return memReading{rssMiB: mib(m.RSS), anonMiB: mib(m.Anon), fileMiB: mib(m.File), threads: m.Threads}
}

func mib(bytes int64) float64 { return float64(bytes) / (1 << 20) }

// process is one process, as /proc shows it.
type process struct {
	pid, ppid int
	comm      string
	container string // the nexus container whose cgroup it is in, if any
	netns     string
	rssKiB    float64
}

// containerCgroup finds the agent's container ID ("nx-<uid>") in a
// /proc/PID/cgroup file: the runtime puts each container in
// nexus/<id> of every hierarchy.
var containerCgroup = regexp.MustCompile(`(?m)/(nx-[0-9a-f-]{36})(/|$)`)

// processes lists every process of the machine.
func processes() []process {
	entries, _ := os.ReadDir("/proc")
	var ps []process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := proc.ReadStat(pid)
		if err != nil {
			continue // gone meanwhile
		}
		p := process{pid: pid, ppid: st.PPID, comm: st.Comm}
		if cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err == nil {
			if m := containerCgroup.FindSubmatch(cg); m != nil {
				p.container = string(m[1])
			}
		}
		p.netns, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if m, err := proc.ReadMemory(pid); err == nil {
			p.rssKiB = float64(m.RSS) / 1024
		}
		ps = append(ps, p)
	}
	return ps
}

// census sorts the machine's processes into those of the containers in
// ours (by ID) and the others that exist because of nexus up: descendants
// of nexus up outside every container cgroup, and processes in the bench's
// network namespace (where a helper nexus up started would be) other than
// nexus up, this program and the ones listed in skip. Containers of other
// nexus instances on the machine are left out.
type census struct {
	containers map[string]int // processes per container
	rssKiB     float64        // of the containers' processes
	helpers    []process
}

func takeCensus(upPid int, ours map[string]bool, skip ...int) census {
	ps := processes()
	self := os.Getpid()
	myNetNS, _ := os.Readlink("/proc/self/ns/net")
	parent := map[int]int{}
	for _, p := range ps {
		parent[p.pid] = p.ppid
	}
	descends := func(pid int) bool {
		for i := 0; i < 64 && pid > 1; i++ {
			pid = parent[pid]
			if pid == upPid {
				return true
			}
		}
		return false
	}
	c := census{containers: map[string]int{}}
	for _, p := range ps {
		switch {
		case ours[p.container]:
			c.containers[p.container]++
			c.rssKiB += p.rssKiB
		case p.container != "":
		case p.pid == upPid || p.pid == self || slices.Contains(skip, p.pid):
		case descends(p.pid) || p.netns == myNetNS:
			c.helpers = append(c.helpers, p)
		}
	}
	return c
}

// String says how many containers there are, how many processes each
// has, and which other processes there are.
func (c census) String() string {
	perContainer := map[int]int{} // processes in a container -> containers
	total := 0
	for _, n := range c.containers {
		perContainer[n]++
		total += n
	}
	var counts []int
	for n := range perContainer {
		counts = append(counts, n)
	}
	sort.Ints(counts)
	var parts []string
	for _, n := range counts {
		parts = append(parts, fmt.Sprintf("%d with %d", perContainer[n], n))
	}
	s := fmt.Sprintf("%d containers, %d processes in them (containers by process count: %s); other processes of nexus up or in its network namespace: %d",
		len(c.containers), total, strings.Join(parts, ", "), len(c.helpers))
	for i, p := range c.helpers {
		if i == 10 {
			s += fmt.Sprintf(" …and %d more", len(c.helpers)-10)
			break
		}
		s += fmt.Sprintf(" [%d %s]", p.pid, p.comm)
	}
	return s
}

// conmons counts podman's per-container monitor processes (in the bench's
// network namespace, as podman runs there) and their resident memory.
func conmons() (n int, rssMiB float64) {
	myNetNS, _ := os.Readlink("/proc/self/ns/net")
	for _, p := range processes() {
		if p.comm == "conmon" && p.netns == myNetNS {
			n++
			rssMiB += p.rssKiB / 1024
		}
	}
	return n, rssMiB
}
