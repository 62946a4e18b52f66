package cgroups

import (
	"bufio"
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
	kv := func(dst *uint64, dir, file, key string, scale uint64) {
		if dir == "" {
			return
		}
		v, err := keyValue(dir, file, key)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		*dst = v * scale
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
		kv(&s.Memory.InactiveFile, dir, "memory.stat", key, 1)
	}
	if n, err := m.OOMKillCount(); err == nil {
		s.Memory.OOMKills = n
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}

	if dir := m.v1["cpuacct"]; dir != "" {
		get(&s.CPU.UsageNanos, dir, "cpuacct.usage")
	} else if m.v2 != "" {
		kv(&s.CPU.UsageNanos, m.v2, "cpu.stat", "usage_usec", 1000)
	}
	if dir := m.v1["cpu"]; dir != "" {
		kv(&s.CPU.Periods, dir, "cpu.stat", "nr_periods", 1)
		kv(&s.CPU.ThrottledPeriods, dir, "cpu.stat", "nr_throttled", 1)
		kv(&s.CPU.ThrottledNanos, dir, "cpu.stat", "throttled_time", 1)
	} else if m.v2 != "" && m.place.v2["cpu"] {
		kv(&s.CPU.Periods, m.v2, "cpu.stat", "nr_periods", 1)
		kv(&s.CPU.ThrottledPeriods, m.v2, "cpu.stat", "nr_throttled", 1)
		kv(&s.CPU.ThrottledNanos, m.v2, "cpu.stat", "throttled_usec", 1000)
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

// keyValue reads "key value" lines (cpu.stat, memory.events, oom_control).
func keyValue(dir, file, key string) (uint64, error) {
	f, err := os.Open(filepath.Join(dir, file))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s in %s/%s: %w", key, dir, file, err)
			}
			return n, nil
		}
	}
	return 0, sc.Err()
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
