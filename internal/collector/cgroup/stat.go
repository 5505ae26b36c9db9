package cgroup

import (
	"bytes"
	"errors"
)

// userHZ is the unit of cpuacct.stat (USER_HZ, 100 on every Linux ABI).
const userHZ = 100

// Read fills st with c's counters. Files that do not exist (a controller not
// enabled for this cgroup, PSI compiled out) leave their fields out of
// st.Has; when the cgroup vanished during the read, st.Has is 0 and the
// error nil. Other failures are returned after reading every other file.
//
// Two files are not read on every call, to save their system calls; their
// last values are reported instead, as long as memory.current (v1
// memory.usage_in_bytes) could be read:
//   - The memory limit (memory.max, v1 memory.limit_in_bytes) is read when
//     the container is found and after each [Reader.Discover] that listed
//     its subtree. A limit is changed through the engine (docker update,
//     an event) or by Kubernetes, whose subtrees are listed every cycle.
//   - v2 memory.events is read when it changed: the kernel sends an inotify
//     "modified" event for every change of its values (cgroup-v2.rst), so
//     an OOM kill shows in the next Read after the event arrived, in
//     practice the next cycle. Without an inotify watch (v1
//     memory.oom_control has none, or inotify is unavailable or out of
//     watches) the file is read every time.
func (r *Reader) Read(c *Container, st *Stats) error {
	*st = Stats{}
	var errs error
	note := func(err error) {
		if err != nil && !errors.Is(err, errNotExist) && errs == nil {
			errs = err
		}
	}
	if r.mode == ModeV2 {
		note(r.readV2(c, st))
	} else {
		note(r.readV1(c, st))
	}
	for i := range st.Pressure {
		slot := filePressureCPU + i
		b, err := r.fr.read(c, slot)
		if err != nil {
			note(err)
			continue
		}
		st.Pressure[i], err = parsePressure(b, c.paths[slot])
		note(err)
	}
	if st.Has&(FieldMemUsage|FieldWorkingSet) == FieldMemUsage|FieldWorkingSet {
		// working set = usage - inactive_file, floored at 0 (cAdvisor).
		if st.WorkingSet > st.MemUsage {
			st.WorkingSet = 0
		} else {
			st.WorkingSet = st.MemUsage - st.WorkingSet
		}
	} else {
		st.Has &^= FieldWorkingSet
	}
	return errs
}

// readUint reads a single-number file into *dst and sets bit in st.Has.
// "max" (v2's "no limit") reads as 0.
func (r *Reader) readUint(c *Container, slot int, st *Stats, bit Field, dst *uint64) error {
	path := c.paths[slot]
	b, err := r.fr.read(c, slot)
	if err != nil {
		return err
	}
	v, ok := parseUint(b)
	if !ok {
		if string(bytes.TrimSpace(b)) != "max" {
			return &ParseError{Path: path, Line: string(bytes.TrimSpace(b))}
		}
		v = 0
	}
	*dst = v
	st.Has |= bit
	return nil
}

// readLimit reports c's memory limit, reading it when due (see
// [Reader.Read]).
func (r *Reader) readLimit(c *Container, st *Stats) error {
	if c.limitDue {
		var s Stats
		if err := r.readUint(c, fileMemMax, &s, FieldMemLimit, &s.MemLimit); err != nil && !errors.Is(err, errNotExist) {
			return err // read again next time
		}
		if s.MemLimit >= unlimited {
			s.MemLimit = 0
		}
		c.limit, c.hasLimit, c.limitDue = s.MemLimit, s.Has != 0, false
	}
	if c.hasLimit && st.Has&FieldMemUsage != 0 {
		st.MemLimit, st.Has = c.limit, st.Has|FieldMemLimit
	}
	return nil
}

// readOOMKills reports c's OOM kill count (memory.events, v1
// memory.oom_control), reading it when it changed (see [Reader.Read]).
func (r *Reader) readOOMKills(c *Container, st *Stats) error {
	if r.mode == ModeV2 {
		r.w.watch(c) // before the read, so that no change after it goes unseen
	}
	if c.oomDue || c.wd < 0 {
		var s Stats
		err := r.readFlat(c, fileMemEvents, oomKillKeys, func(k string, v uint64) {
			if k == "oom_kill" {
				s.OOMKills, s.Has = v, FieldOOMKills
			}
		})
		if err != nil && !errors.Is(err, errNotExist) {
			return err // read again next time
		}
		c.oomKills, c.hasOOM, c.oomDue = s.OOMKills, s.Has != 0, false
	}
	if c.hasOOM && st.Has&FieldMemUsage != 0 {
		st.OOMKills, st.Has = c.oomKills, st.Has|FieldOOMKills
	}
	return nil
}

// readFlat reads the keys of a flat-keyed file (see flatKeyed).
func (r *Reader) readFlat(c *Container, slot int, keys *keySet, fn func(key string, v uint64)) error {
	b, err := r.fr.read(c, slot)
	if err != nil {
		return err
	}
	return flatKeyed(b, c.paths[slot], keys, fn)
}

// The keys read from the flat-keyed files.
var (
	cpuStatV2Keys   = newKeySet("usage_usec", "user_usec", "system_usec", "nr_throttled", "throttled_usec")
	memStatV2Keys   = newKeySet("anon", "file", "inactive_file")
	oomKillKeys     = newKeySet("oom_kill") // v2 memory.events, v1 memory.oom_control
	cpuAcctStatKeys = newKeySet("user", "system")
	cpuStatV1Keys   = newKeySet("nr_throttled", "throttled_time")
	memStatV1Keys   = newKeySet("total_rss", "total_cache", "total_inactive_file")
)

func (r *Reader) readV2(c *Container, st *Stats) error {
	var errs error
	note := func(err error) {
		if err != nil && !errors.Is(err, errNotExist) && errs == nil {
			errs = err
		}
	}
	note(r.readFlat(c, fileCPUStat, cpuStatV2Keys, func(k string, v uint64) {
		switch k {
		case "usage_usec":
			st.CPUUsage, st.Has = float64(v)/1e6, st.Has|FieldCPUUsage
		case "user_usec":
			st.CPUUser, st.Has = float64(v)/1e6, st.Has|FieldCPUUser
		case "system_usec":
			st.CPUSystem, st.Has = float64(v)/1e6, st.Has|FieldCPUSystem
		case "nr_throttled":
			st.ThrottledPeriods, st.Has = v, st.Has|FieldThrottledPeriods
		case "throttled_usec":
			st.ThrottledSeconds, st.Has = float64(v)/1e6, st.Has|FieldThrottledSeconds
		}
	}))
	note(r.readUint(c, fileMemCurrent, st, FieldMemUsage, &st.MemUsage))
	note(r.readFlat(c, fileMemStat, memStatV2Keys, func(k string, v uint64) {
		switch k {
		case "anon":
			st.RSS, st.Has = v, st.Has|FieldRSS
		case "file":
			st.Cache, st.Has = v, st.Has|FieldCache
		case "inactive_file":
			st.WorkingSet, st.Has = v, st.Has|FieldWorkingSet
		}
	}))
	note(r.readLimit(c, st))
	note(r.readOOMKills(c, st))
	note(r.readUint(c, filePids, st, FieldThreads, &st.Threads))
	note(r.readIOStat(c, fileIO, st))
	return errs
}

// readIOStat sums rbytes and wbytes over the devices of a v2 io.stat:
//
//	8:0 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0
func (r *Reader) readIOStat(c *Container, slot int, st *Stats) error {
	path := c.paths[slot]
	b, err := r.fr.read(c, slot)
	if err != nil {
		return err
	}
	st.Has |= FieldIO
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		_, fields := keyValue(line)
		// rbytes and wbytes lead a line (the kernel's blkcg_print_stat);
		// the fields after them are not looked at.
		var seen uint8
		for len(fields) > 0 && seen != 3 {
			var kv []byte
			kv, fields = keyValue(fields)
			k, v, ok := bytes.Cut(kv, []byte("="))
			if !ok {
				continue
			}
			var dst *uint64
			switch string(k) {
			case "rbytes":
				dst, seen = &st.ReadBytes, seen|1
			case "wbytes":
				dst, seen = &st.WriteBytes, seen|2
			default:
				continue
			}
			n, ok := parseUint(v)
			if !ok {
				return &ParseError{Path: path, Line: string(line)}
			}
			*dst += n
		}
	}
	return nil
}

func (r *Reader) readV1(c *Container, st *Stats) error {
	var errs error
	note := func(err error) {
		if err != nil && !errors.Is(err, errNotExist) && errs == nil {
			errs = err
		}
	}
	var usageNs uint64
	if err := r.readUint(c, fileCPUAcctUsage, st, FieldCPUUsage, &usageNs); err == nil {
		st.CPUUsage = float64(usageNs) / 1e9
	} else {
		note(err)
	}
	note(r.readFlat(c, fileCPUAcctStat, cpuAcctStatKeys, func(k string, v uint64) {
		switch k {
		case "user":
			st.CPUUser, st.Has = float64(v)/userHZ, st.Has|FieldCPUUser
		case "system":
			st.CPUSystem, st.Has = float64(v)/userHZ, st.Has|FieldCPUSystem
		}
	}))
	note(r.readFlat(c, fileCPUStat, cpuStatV1Keys, func(k string, v uint64) {
		switch k {
		case "nr_throttled":
			st.ThrottledPeriods, st.Has = v, st.Has|FieldThrottledPeriods
		case "throttled_time": // nanoseconds
			st.ThrottledSeconds, st.Has = float64(v)/1e9, st.Has|FieldThrottledSeconds
		}
	}))
	note(r.readUint(c, fileMemCurrent, st, FieldMemUsage, &st.MemUsage))
	note(r.readFlat(c, fileMemStat, memStatV1Keys, func(k string, v uint64) {
		switch k {
		case "total_rss":
			st.RSS, st.Has = v, st.Has|FieldRSS
		case "total_cache":
			st.Cache, st.Has = v, st.Has|FieldCache
		case "total_inactive_file":
			st.WorkingSet, st.Has = v, st.Has|FieldWorkingSet
		}
	}))
	note(r.readLimit(c, st))
	note(r.readOOMKills(c, st))
	note(r.readUint(c, filePids, st, FieldThreads, &st.Threads))
	note(r.readBlkio(c, fileIO, st))
	return errs
}

// readBlkio sums the Read and Write lines of a v1
// blkio.throttle.io_service_bytes:
//
//	8:0 Read 1459200
//	8:0 Write 314773504
//	8:0 Total 316232704
//	Total 316232704
func (r *Reader) readBlkio(c *Container, slot int, st *Stats) error {
	path := c.paths[slot]
	b, err := r.fr.read(c, slot)
	if err != nil {
		return err
	}
	st.Has |= FieldIO
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		_, rest := keyValue(line)
		op, val := keyValue(rest)
		var dst *uint64
		switch string(op) {
		case "Read":
			dst = &st.ReadBytes
		case "Write":
			dst = &st.WriteBytes
		default:
			continue
		}
		n, ok := parseUint(val)
		if !ok {
			return &ParseError{Path: path, Line: string(line)}
		}
		*dst += n
	}
	return nil
}
