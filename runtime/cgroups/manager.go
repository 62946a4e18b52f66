package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Config says where a container's cgroup goes and what it may use.
type Config struct {
	// Path is the spec's linux.cgroupsPath. Absolute paths are taken from
	// each hierarchy's root; relative ones go under DefaultParent.
	Path string
	// Resources are applied by Create.
	Resources *specs.LinuxResources
}

// Manager owns one container's cgroups in every hierarchy of the host.
type Manager interface {
	// Create makes the cgroup directories and applies the resources.
	Create() error
	// Add moves a process into the cgroup in every hierarchy.
	Add(pid int) error
	// OpenJoin opens what lets a new process enter the cgroup without
	// Add, which can wait for an RCU grace period (see Join).
	OpenJoin() (*Join, error)
	// Update applies new resources to an existing cgroup.
	Update(r *specs.LinuxResources) error
	// Stats reads usage counters; absent controllers leave zero values.
	Stats() (*Stats, error)
	// OOMKillCount is how many processes the kernel OOM killer killed in
	// the cgroup.
	OOMKillCount() (uint64, error)
	// Freeze stops every process in the cgroup; Thaw resumes them.
	Freeze() error
	Thaw() error
	// KillAll signals every process in the cgroup and its sub-cgroups,
	// including ones forked while it runs.
	KillAll(sig syscall.Signal) error
	// Processes lists the pids in the cgroup and its sub-cgroups.
	Processes() ([]int, error)
	// Destroy kills what is left and removes the directories. It is
	// idempotent.
	Destroy() error
	// Paths maps each controller (and "unified" for the cgroup2
	// directory) to its directory.
	Paths() map[string]string
	// Saved is what Load needs to rebuild the manager in another process.
	Saved() Saved
	// V2Path is the cgroup2 directory, "" on v1-only hosts. Attach cgroup
	// eBPF programs here.
	V2Path() string
}

// Stats are a cgroup's counters. Limits are 0 when unlimited.
type Stats struct {
	Memory struct {
		Usage, MaxUsage, Limit, SwapUsage, OOMKills uint64
		// InactiveFile is page cache the kernel reclaims first: Usage
		// minus it is the working set, as Kubernetes (cAdvisor) reports
		// it and evicts by.
		InactiveFile uint64
	}
	CPU struct {
		UsageNanos, Periods, ThrottledPeriods, ThrottledNanos uint64
	}
	Pids struct {
		Current, Limit uint64
	}
	IO struct {
		ReadBytes, WriteBytes uint64
	}
}

// Saved is a manager as a container's state file keeps it.
type Saved struct {
	// Paths are the manager's Paths.
	Paths map[string]string `json:"paths"`
	// Parents are directories above the cgroup, relative to each hierarchy
	// root and deepest first, that the runtime made for it and that
	// Destroy removes once they are empty.
	Parents []string `json:"parents,omitempty"`
}

type manager struct {
	v1    map[string]string // controller -> dir
	mount map[string]string // dir -> its hierarchy mount point
	dirs  []string          // distinct v1 dirs, in mount order
	v2    string
	v2mnt string
	// parents are Saved.Parents: for a relative path every directory
	// between DefaultParent and the cgroup (all of them the runtime's), for
	// an absolute one those that Create made.
	parents []string
	// rel is the cgroup's path below each hierarchy root; absolute says
	// whether linux.cgroupsPath was absolute (only set by New).
	rel      string
	absolute bool
	place    placement
	// writes and rules are what Create applies, planned by New.
	writes []write
	rules  *deviceRules
	pureV2 bool
}

// New checks cfg against the host and returns a Manager. It changes nothing.
func New(cfg Config) (Manager, error) {
	l, err := hostLayout()
	if err != nil {
		return nil, err
	}
	return newManager(cfg, l)
}

func newManager(cfg Config, l *layout) (*manager, error) {
	rel, err := cleanPath(cfg.Path)
	if err != nil {
		return nil, err
	}
	if err := validate(cfg.Resources); err != nil {
		return nil, err
	}
	m := &manager{v1: map[string]string{}, mount: map[string]string{}, pureV2: l.mode() == ModeV2}
	m.place = placement{v1: map[string]bool{}, v2: l.v2Controllers, hasV2: l.v2 != ""}
	for _, h := range l.v1 {
		dir := filepath.Join(h.mountpoint, rel)
		m.dirs = append(m.dirs, dir)
		m.mount[dir] = h.mountpoint
		for _, c := range h.controllers {
			m.v1[c] = dir
			m.place.v1[c] = true
		}
	}
	if l.v2 != "" {
		m.v2, m.v2mnt = filepath.Join(l.v2, rel), l.v2
	}
	m.rel, m.absolute = rel, strings.HasPrefix(cfg.Path, "/")
	if !m.absolute {
		for p := filepath.Dir(rel); p != DefaultParent && p != "."; p = filepath.Dir(p) {
			m.parents = append(m.parents, p)
		}
	}
	m.writes, m.rules, err = plan(cfg.Resources, m.place)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Load rebuilds a Manager from what an earlier process saved, checking
// that every path is a cgroup below the matching hierarchy's root.
func Load(s Saved) (Manager, error) {
	l, err := hostLayout()
	if err != nil {
		return nil, err
	}
	m, err := loadManager(s.Paths, l)
	if err != nil {
		return nil, err
	}
	for _, p := range s.Parents {
		if p == "" || filepath.IsAbs(p) || filepath.Clean(p) != p || p == "." || strings.HasPrefix(p, "../") || p == ".." {
			return nil, fmt.Errorf("cgroups: saved parent %q is not a path inside a hierarchy", p)
		}
	}
	m.parents = s.Parents
	return m, nil
}

func loadManager(paths map[string]string, l *layout) (*manager, error) {
	m := &manager{v1: map[string]string{}, mount: map[string]string{}, pureV2: l.mode() == ModeV2}
	m.place = placement{v1: map[string]bool{}, v2: l.v2Controllers}
	inside := func(dir, mnt string) bool {
		return filepath.IsAbs(dir) && filepath.Clean(dir) == dir && strings.HasPrefix(dir, mnt+"/") && !strings.Contains(dir, "/../")
	}
	keys := make([]string, 0, len(paths))
	for k := range paths {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		dir := paths[k]
		if k == unifiedKey {
			if l.v2 == "" || !inside(dir, l.v2) {
				return nil, fmt.Errorf("cgroups: saved path %q is not inside the cgroup2 hierarchy %q", dir, l.v2)
			}
			m.v2, m.v2mnt, m.place.hasV2 = dir, l.v2, true
			continue
		}
		var h *hierarchy
		for i := range l.v1 {
			for _, c := range l.v1[i].controllers {
				if c == k {
					h = &l.v1[i]
				}
			}
		}
		if h == nil || !inside(dir, h.mountpoint) {
			return nil, fmt.Errorf("cgroups: saved path %s=%q does not match a mounted %s hierarchy", k, dir, k)
		}
		m.v1[k] = dir
		m.place.v1[k] = true
		if _, ok := m.mount[dir]; !ok {
			m.mount[dir] = h.mountpoint
			m.dirs = append(m.dirs, dir)
		}
	}
	if len(m.dirs) == 0 && m.v2 == "" {
		return nil, errors.New("cgroups: no saved cgroup paths to load")
	}
	return m, nil
}

func (m *manager) Paths() map[string]string {
	p := make(map[string]string, len(m.v1)+1)
	for k, v := range m.v1 {
		p[k] = v
	}
	if m.v2 != "" {
		p[unifiedKey] = m.v2
	}
	return p
}

func (m *manager) Saved() Saved { return Saved{Paths: m.Paths(), Parents: m.parents} }

func (m *manager) V2Path() string { return m.v2 }

// roots are the mount points of every hierarchy the manager uses.
func (m *manager) roots() []string {
	var out []string
	for _, dir := range m.dirs {
		out = append(out, m.mount[dir])
	}
	if m.v2 != "" {
		out = append(out, m.v2mnt)
	}
	return out
}

// noteParents records, for an absolute path, the directories above the
// cgroup (in the hierarchy mounted at root) that mkdir made.
func (m *manager) noteParents(root string, made []string) {
	if !m.absolute {
		return
	}
	for _, dir := range made {
		rel, ok := strings.CutPrefix(dir, root+"/")
		if !ok || rel == m.rel || slices.Contains(m.parents, rel) {
			continue
		}
		m.parents = append(m.parents, rel)
	}
	// Deepest first, so that Destroy empties a parent before removing it.
	sort.SliceStable(m.parents, func(i, j int) bool {
		return strings.Count(m.parents[i], "/") > strings.Count(m.parents[j], "/")
	})
}

func (m *manager) Create() error {
	for _, dir := range m.dirs {
		made, err := mkdir(dir)
		if err != nil {
			return err
		}
		m.noteParents(m.mount[dir], made)
		if m.v1["cpuset"] == dir {
			if err := inheritCpuset(dir, m.mount[dir]); err != nil {
				return err
			}
		}
	}
	if m.v2 != "" {
		if err := m.enableV2(m.writes); err != nil {
			return err
		}
		made, err := mkdir(m.v2)
		if err != nil {
			return err
		}
		m.noteParents(m.v2mnt, made)
	}
	return m.apply(m.writes, m.rules)
}

func (m *manager) Update(r *specs.LinuxResources) error {
	if err := validate(r); err != nil {
		return err
	}
	ws, rules, err := plan(r, m.place)
	if err != nil {
		return err
	}
	if m.v2 != "" {
		if err := m.enableV2(ws); err != nil {
			return err
		}
	}
	return m.apply(ws, rules)
}

// enableV2 turns on, in every ancestor of the cgroup2 directory, the
// controllers the writes need; on pure v2 hosts also the ones Stats reads.
func (m *manager) enableV2(ws []write) error {
	need := map[string]bool{}
	if m.pureV2 {
		for _, c := range []string{"cpu", "memory", "pids", "io"} {
			need[c] = true
		}
	}
	for _, w := range ws {
		if w.ctrl == unifiedKey {
			need[strings.SplitN(w.file, ".", 2)[0]] = true
		}
	}
	var list []string
	for c := range need {
		if m.place.v2[c] {
			list = append(list, "+"+c)
		}
	}
	if len(list) == 0 {
		return nil
	}
	sort.Strings(list)
	val := strings.Join(list, " ")
	rel := strings.TrimPrefix(filepath.Dir(m.v2), m.v2mnt)
	dir := m.v2mnt
	for _, c := range append([]string{""}, strings.Split(strings.Trim(rel, "/"), "/")...) {
		if c != "" {
			dir = filepath.Join(dir, c)
			made, err := mkdir(dir)
			if err != nil {
				return err
			}
			m.noteParents(m.v2mnt, made)
		}
		if err := writeFile(dir, "cgroup.subtree_control", val); err != nil {
			return fmt.Errorf("cgroups: enable controllers %q in %s: %w", val, dir, err)
		}
	}
	return nil
}

func (m *manager) dirOf(ctrl string) string {
	if ctrl == unifiedKey {
		return m.v2
	}
	return m.v1[ctrl]
}

func (m *manager) apply(ws []write, rules *deviceRules) error {
	for i := 0; i < len(ws); i++ {
		err := m.writeOne(ws[i])
		if err != nil && ws[i].swapOnEINVAL && errors.Is(err, unix.EINVAL) && i+1 < len(ws) {
			if err = m.writeOne(ws[i+1]); err == nil {
				err = m.writeOne(ws[i])
			}
			i++
		}
		if err != nil {
			return err
		}
	}
	if rules != nil {
		return attachDevices(m.v2, rules)
	}
	return nil
}

func (m *manager) writeOne(w write) error {
	dir := m.dirOf(w.ctrl)
	err := writeFile(dir, w.file, w.value)
	if errors.Is(err, unix.ENOENT) {
		if w.alt != nil {
			return m.writeOne(*w.alt)
		}
		if w.optional {
			return nil
		}
	}
	if err != nil && errors.Is(err, unix.EBUSY) && strings.HasPrefix(w.file, "memory.") && strings.HasSuffix(w.file, "limit_in_bytes") {
		// cgroup v1 refuses a limit below what the cgroup already uses.
		return fmt.Errorf("cgroups: set %s to %q in %s: the cgroup already uses more memory than that (%w): raise the limit", w.file, w.value, dir, err)
	}
	if err != nil {
		return fmt.Errorf("cgroups: set %s to %q in %s: %w", w.file, w.value, dir, err)
	}
	return nil
}

// attachDevices attaches the policy to a cgroup2 directory with
// BPF_PROG_ATTACH, which outlives this process, then detaches the programs
// it replaces.
func attachDevices(dir string, rules *deviceRules) error {
	prog, err := loadDeviceProgram(rules.program())
	if err != nil {
		return err
	}
	defer unix.Close(prog)
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cgroups: open %s for the device program: %w", dir, err)
	}
	defer unix.Close(fd)
	old, err := deviceProgramIDs(fd)
	if err != nil {
		return fmt.Errorf("cgroups: query device programs on %s: %w", dir, err)
	}
	if err := attachProgram(fd, prog, unix.BPF_F_ALLOW_MULTI); err != nil {
		return fmt.Errorf("cgroups: attach device program to %s: %w", dir, err)
	}
	for _, id := range old {
		op, err := progFDByID(id)
		if err != nil {
			return fmt.Errorf("cgroups: open replaced device program %d: %w", id, err)
		}
		err = detachProgram(fd, op)
		unix.Close(op)
		if err != nil {
			return fmt.Errorf("cgroups: detach replaced device program %d from %s: %w", id, dir, err)
		}
	}
	return nil
}

func (m *manager) Add(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("cgroups: add pid %d: not a process id", pid)
	}
	p := strconv.Itoa(pid)
	for _, dir := range m.allDirs() {
		if err := writeFile(dir, "cgroup.procs", p); err != nil {
			return fmt.Errorf("cgroups: move pid %d into %s: %w", pid, dir, err)
		}
	}
	return nil
}

func (m *manager) allDirs() []string {
	if m.v2 == "" {
		return m.dirs
	}
	return append(m.dirs[:len(m.dirs):len(m.dirs)], m.v2)
}

// procsDir is the directory whose membership Processes, Freeze and KillAll
// agree on: the v1 freezer when there is one, else cgroup2.
func (m *manager) procsDir() string {
	if d := m.v1["freezer"]; d != "" {
		return d
	}
	if m.v2 != "" {
		return m.v2
	}
	for _, c := range []string{"pids", "memory", "cpu"} {
		if d := m.v1[c]; d != "" {
			return d
		}
	}
	if len(m.dirs) > 0 {
		return m.dirs[0]
	}
	return ""
}

func (m *manager) Processes() ([]int, error) {
	var pids []int
	err := filepath.WalkDir(m.procsDir(), func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cgroups: list processes: %w", err)
	}
	return pids, nil
}

func (m *manager) Freeze() error { return m.setFrozen(true) }
func (m *manager) Thaw() error   { return m.setFrozen(false) }

func (m *manager) setFrozen(frozen bool) error {
	const timeout = 2 * time.Second
	if dir := m.v1["freezer"]; dir != "" {
		want := "THAWED"
		if frozen {
			want = "FROZEN"
		}
		deadline := time.Now().Add(timeout)
		for i := 0; ; i++ {
			// Re-writing nudges tasks that were forking while we froze.
			if i%10 == 0 {
				if err := writeFile(dir, "freezer.state", want); err != nil {
					return fmt.Errorf("cgroups: set %s freezer.state %s: %w", dir, want, err)
				}
			}
			state, err := readString(dir, "freezer.state")
			if err != nil {
				return fmt.Errorf("cgroups: read freezer state: %w", err)
			}
			if state == want {
				return nil
			}
			if time.Now().After(deadline) {
				if frozen {
					_ = writeFile(dir, "freezer.state", "THAWED")
				}
				return fmt.Errorf("cgroups: %s still %s after %v", dir, state, timeout)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if m.v2 == "" {
		return errors.New("cgroups: no freezer: mount the v1 freezer controller or use cgroup v2")
	}
	want := "0"
	if frozen {
		want = "1"
	}
	if err := writeFile(m.v2, "cgroup.freeze", want); err != nil {
		return fmt.Errorf("cgroups: set %s cgroup.freeze %s: %w", m.v2, want, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		v, err := keyValue(m.v2, "cgroup.events", "frozen")
		if err != nil {
			return err
		}
		if strconv.FormatUint(v, 10) == want {
			return nil
		}
		if time.Now().After(deadline) {
			if frozen {
				_ = writeFile(m.v2, "cgroup.freeze", "0")
			}
			return fmt.Errorf("cgroups: %s cgroup.freeze did not reach %s after %v", m.v2, want, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

func (m *manager) KillAll(sig syscall.Signal) error {
	if sig == unix.SIGKILL && m.v2 != "" {
		err := writeFile(m.v2, "cgroup.kill", "1")
		if err == nil || errors.Is(err, unix.ENOENT) && !dirExists(m.v2) {
			return nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("cgroups: kill %s: %w", m.v2, err)
		}
		// Kernel before 5.14: no cgroup.kill; fall through.
	}
	if !dirExists(m.procsDir()) {
		return nil
	}
	if err := m.Freeze(); err != nil {
		return m.killLoop(sig, err)
	}
	pids, err := m.Processes()
	if err == nil {
		for _, pid := range pids {
			if e := unix.Kill(pid, sig); e != nil && !errors.Is(e, unix.ESRCH) {
				err = fmt.Errorf("cgroups: signal pid %d: %w", pid, e)
			}
		}
	}
	return errors.Join(err, m.Thaw())
}

// killLoop signals until no new processes appear, for hierarchies without
// a freezer. It cannot beat a fork loop as reliably as freezing does.
func (m *manager) killLoop(sig syscall.Signal, freezeErr error) error {
	seen := map[int]bool{}
	for range 100 {
		pids, err := m.Processes()
		if err != nil {
			return errors.Join(freezeErr, err)
		}
		fresh := false
		for _, pid := range pids {
			if !seen[pid] {
				seen[pid], fresh = true, true
				_ = unix.Kill(pid, sig)
			}
		}
		if !fresh {
			return nil
		}
	}
	return fmt.Errorf("cgroups: processes kept appearing while signalling (freezer unavailable: %v)", freezeErr)
}

func (m *manager) Destroy() error {
	const budget = 2 * time.Second
	deadline := time.Now().Add(budget)
	killed := false
	for delay := time.Millisecond; ; delay = min(delay*2, 100*time.Millisecond) {
		var busy error
		for _, dir := range m.allDirs() {
			if err := removeTree(dir); err != nil {
				if !errors.Is(err, unix.EBUSY) {
					return fmt.Errorf("cgroups: remove %s: %w", dir, err)
				}
				busy = fmt.Errorf("cgroups: remove %s: still has processes after %v: %w", dir, budget, err)
			}
		}
		if busy == nil {
			m.removeParents()
			return nil
		}
		if time.Now().After(deadline) {
			return busy
		}
		if !killed {
			killed = true
			_ = m.KillAll(unix.SIGKILL)
		}
		time.Sleep(delay)
	}
}

// removeParents removes the parents the runtime made for this cgroup, in
// every hierarchy, as long as they are empty: one that holds another
// container's cgroup stays (rmdir fails with EBUSY) for that container's
// Destroy to remove.
func (m *manager) removeParents() {
	for _, p := range m.parents {
		for _, root := range m.roots() {
			_ = unix.Rmdir(filepath.Join(root, p))
		}
	}
}

// removeTree removes dir and its sub-cgroups, deepest first.
func removeTree(dir string) error {
	// rmdir first: a cgroup without sub-cgroups is the usual case, and
	// listing a cgroup directory (15-40 files) before each rmdir cost a
	// delete about 0.3 ms over its ten hierarchies.
	err := unix.Rmdir(dir)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
		return err
	}
	entries, rerr := os.ReadDir(dir)
	if rerr != nil {
		return rerr
	}
	subs := false
	for _, e := range entries {
		if e.IsDir() {
			subs = true
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if !subs {
		return err // busy with processes
	}
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// mkdir creates dir, and its parents when missing, and returns every
// directory it made, outermost first. An existing dir is fine.
func mkdir(dir string) ([]string, error) {
	err := unix.Mkdir(dir, 0o755)
	switch {
	case err == nil:
		return []string{dir}, nil
	case errors.Is(err, unix.EEXIST):
		return nil, nil
	case !errors.Is(err, unix.ENOENT) || filepath.Dir(dir) == dir:
		return nil, fmt.Errorf("cgroups: create %s: %w", dir, err)
	}
	made, err := mkdir(filepath.Dir(dir))
	if err != nil {
		return nil, err
	}
	if err := unix.Mkdir(dir, 0o755); err == nil {
		made = append(made, dir)
	} else if !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("cgroups: create %s: %w", dir, err)
	}
	return made, nil
}

// inheritCpuset copies cpuset.cpus and cpuset.mems down from the nearest
// ancestor that has them: a v1 cpuset starts empty and refuses tasks.
func inheritCpuset(dir, root string) error {
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		if _, err := inherit(dir, root, f); err != nil {
			return err
		}
	}
	return nil
}

func inherit(dir, root, file string) (string, error) {
	v, err := readString(dir, file)
	if err != nil || v != "" || dir == root || !strings.HasPrefix(dir, root) {
		return v, err
	}
	pv, err := inherit(filepath.Dir(dir), root, file)
	if err != nil {
		return "", err
	}
	if err := writeFile(dir, file, pv); err != nil {
		return "", fmt.Errorf("cgroups: copy %s %q into %s: %w", file, pv, dir, err)
	}
	return pv, nil
}

func dirExists(dir string) bool {
	_, err := os.Stat(dir)
	return err == nil
}

// writeFile writes one value with a single write(2), as cgroupfs expects,
// and returns the raw errno so callers can tell EINVAL from ENOENT.
func writeFile(dir, file, value string) error {
	fd, err := unix.Open(filepath.Join(dir, file), unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	for {
		_, err = unix.Write(fd, []byte(value))
		if err != unix.EINTR {
			break
		}
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

func readString(dir, file string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	return strings.TrimSpace(string(b)), err
}
