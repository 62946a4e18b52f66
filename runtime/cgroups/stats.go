package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// unlimitedV1 is where v1 reports "no limit" (PAGE_COUNTER_MAX pages).
const unlimitedV1 = 1 << 62

func (m *manager) Stats() (*Stats, error) {
	s := &Stats{}
	var errs []error
	get := func(dst *uint64, dir, file string) {
		if dir == "" {
			return
		}
		v, err := readUint(dir, file)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		*dst = v
	}
	// kv reads a "key value" file once for all the counters wanted of it.
	kv := func(dir, file string, counters ...counter) {
		if dir == "" {
			return
		}
		if err := keyValues(dir, file, counters...); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}

	if ctrl, ok := m.place.where("memory", "memory"); ok {
		dir := m.dirOf(ctrl)
		if ctrl != unifiedKey {
			get(&s.Memory.Usage, dir, "memory.usage_in_bytes")
			get(&s.Memory.MaxUsage, dir, "memory.max_usage_in_bytes")
			get(&s.Memory.Limit, dir, "memory.limit_in_bytes")
			var memsw uint64
			get(&memsw, dir, "memory.memsw.usage_in_bytes")
			if memsw > s.Memory.Usage {
				s.Memory.SwapUsage = memsw - s.Memory.Usage
			}
		} else {
			get(&s.Memory.Usage, dir, "memory.current")
			get(&s.Memory.MaxUsage, dir, "memory.peak")
			get(&s.Memory.Limit, dir, "memory.max")
			get(&s.Memory.SwapUsage, dir, "memory.swap.current")
		}
		// v1's memory.stat has the cgroup's own counters and total_*
		// ones that include its descendants; v2's are always hierarchical.
		key := "inactive_file"
		if ctrl != unifiedKey {
			key = "total_inactive_file"
		}
		kv(dir, "memory.stat", counter{key, &s.Memory.InactiveFile, 1})
	}
	if n, err := m.OOMKillCount(); err == nil {
		s.Memory.OOMKills = n
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}

	// On v2 the usage and the throttling counters are in the one cpu.stat
	// (the throttling ones only with the cpu controller enabled).
	var v2cpu []counter
	if dir := m.v1["cpuacct"]; dir != "" {
		get(&s.CPU.UsageNanos, dir, "cpuacct.usage")
	} else if m.v2 != "" {
		v2cpu = append(v2cpu, counter{"usage_usec", &s.CPU.UsageNanos, 1000})
	}
	if dir := m.v1["cpu"]; dir != "" {
		kv(dir, "cpu.stat", counter{"nr_periods", &s.CPU.Periods, 1},
			counter{"nr_throttled", &s.CPU.ThrottledPeriods, 1}, counter{"throttled_time", &s.CPU.ThrottledNanos, 1})
	} else if m.v2 != "" && m.place.v2["cpu"] {
		v2cpu = append(v2cpu, counter{"nr_periods", &s.CPU.Periods, 1},
			counter{"nr_throttled", &s.CPU.ThrottledPeriods, 1}, counter{"throttled_usec", &s.CPU.ThrottledNanos, 1000})
	}
	if len(v2cpu) > 0 {
		kv(m.v2, "cpu.stat", v2cpu...)
	}

	if ctrl, ok := m.place.where("pids", "pids"); ok {
		get(&s.Pids.Current, m.dirOf(ctrl), "pids.current")
		get(&s.Pids.Limit, m.dirOf(ctrl), "pids.max")
	}

	if dir := m.v1["blkio"]; dir != "" {
		r, w, err := blkioBytes(dir)
		if err != nil {
			errs = append(errs, err)
		}
		s.IO.ReadBytes, s.IO.WriteBytes = r, w
	} else if m.v2 != "" && m.place.v2["io"] {
		r, w, err := ioStatBytes(m.v2)
		if err != nil {
			errs = append(errs, err)
		}
		s.IO.ReadBytes, s.IO.WriteBytes = r, w
	}
	if s.Memory.Limit >= unlimitedV1 {
		s.Memory.Limit = 0
	}
	if err := errors.Join(errs...); err != nil {
		return s, fmt.Errorf("cgroups: stats: %w", err)
	}
	return s, nil
}

func (m *manager) OOMKillCount() (uint64, error) {
	ctrl, ok := m.place.where("memory", "memory")
	if !ok {
		return 0, fmt.Errorf("cgroups: OOM kill count: no memory controller for this cgroup: %w", os.ErrNotExist)
	}
	file := "memory.oom_control"
	if ctrl == unifiedKey {
		file = "memory.events"
	}
	n, err := keyValue(m.dirOf(ctrl), file, "oom_kill")
	if err != nil {
		return 0, fmt.Errorf("cgroups: OOM kill count: %w", err)
	}
	return n, nil
}

// readUint reads a single-number file; "max" reads as 0 (unlimited).
func readUint(dir, file string) (uint64, error) {
	s, err := readString(dir, file)
	if err != nil || s == "max" {
		return 0, err
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s/%s: %w", dir, file, err)
	}
	return v, nil
}

// keyValue reads one key of "key value" lines (memory.events,
// oom_control, cgroup.events); a key that is absent reads as 0.
func keyValue(dir, file, key string) (uint64, error) {
	var n uint64
	err := keyValues(dir, file, counter{key, &n, 1})
	return n, err
}

// counter is a key of a "key value" file, where its value goes and the
// unit it is multiplied by (1000 for microseconds to nanoseconds).
type counter struct {
	key   string
	dst   *uint64
	scale uint64
}

// keyValues reads "key value" lines (cpu.stat, memory.stat) once for
// several keys: cpu.stat holds four of the counters Stats reports, which
// an agent reads for every container every interval. A key that is absent
// reads as 0.
func keyValues(dir, file string, counters ...counter) error {
	for _, c := range counters {
		*c.dst = 0
	}
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return err
	}
	var errs []error
	for line := range strings.Lines(string(data)) {
		k, v, ok := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		if !ok {
			continue
		}
		for _, c := range counters {
			if c.key != k {
				continue
			}
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				// The other counters are still read.
				errs = append(errs, fmt.Errorf("parse %s in %s/%s: %w", k, dir, file, err))
				continue
			}
			*c.dst = n * c.scale
		}
	}
	return errors.Join(errs...)
}

// blkioBytes sums "maj:min Read|Write N" lines of the throttle statistics,
// which count all I/O whatever the scheduler.
func blkioBytes(dir string) (r, w uint64, err error) {
	data, err := os.ReadFile(filepath.Join(dir, "blkio.throttle.io_service_bytes_recursive"))
	if errors.Is(err, os.ErrNotExist) {
		data, err = os.ReadFile(filepath.Join(dir, "blkio.throttle.io_service_bytes"))
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		n, _ := strconv.ParseUint(f[2], 10, 64)
		switch f[1] {
		case "Read":
			r += n
		case "Write":
			w += n
		}
	}
	return r, w, nil
}

func ioStatBytes(dir string) (r, w uint64, err error) {
	data, err := os.ReadFile(filepath.Join(dir, "io.stat"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			n, _ := strconv.ParseUint(v, 10, 64)
			switch k {
			case "rbytes":
				r += n
			case "wbytes":
				w += n
			}
		}
	}
	return r, w, nil
}
