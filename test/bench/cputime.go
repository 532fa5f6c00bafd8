package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports (the kernel fixes it for
// the ABI), so it is not read from sysconf.
const clockTicks = 100

// ParseStatCPU returns utime+stime of a /proc/PID/stat line, in clock
// ticks. The command name (field 2) may hold spaces and parentheses, so
// fields are counted from the last ')'.
func ParseStatCPU(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat %q: no ')'", clip(stat, 60))
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat %q: %d fields after the name", clip(stat, 60), len(f))
	}
	u, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat utime: %w", err)
	}
	s, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat stime: %w", err)
	}
	return u + s, nil
}

// ParseSchedstat returns the first field of a /proc/PID/task/TID/schedstat
// line: the time the task ran on a CPU, in nanoseconds.
func ParseSchedstat(s string) (uint64, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, fmt.Errorf("empty schedstat")
	}
	v, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("schedstat %q: %w", clip(s, 60), err)
	}
	return v, nil
}

// CPUSample is a process's CPU time at one instant, from two sources.
type CPUSample struct {
	// At is when it was read.
	At time.Time
	// Ticks is utime+stime of /proc/PID/stat (all threads, 10 ms units).
	Ticks uint64
	// RunNs sums the run time of every live thread from
	// /proc/PID/task/*/schedstat (ns resolution); 0 if unavailable.
	RunNs uint64
}

// ReadCPU samples process pid's CPU time.
func ReadCPU(pid int) (CPUSample, error) {
	c := CPUSample{At: time.Now()}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return c, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	if c.Ticks, err = ParseStatCPU(string(b)); err != nil {
		return c, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	for _, t := range tasks {
		if b, err := os.ReadFile(t); err == nil {
			if v, err := ParseSchedstat(string(b)); err == nil {
				c.RunNs += v
			}
		}
	}
	return c, nil
}

// CPUUse is the share of one core a process used between two samples.
type CPUUse struct {
	// Interval is the wall-clock time between the samples.
	Interval time.Duration
	// StatPct is from utime+stime: coarse (one tick is 1% of a core over
	// 1 s).
	StatPct float64
	// SchedPct is from schedstat run times (ns); NaN when unavailable. A
	// thread that exited between the samples makes it an underestimate.
	SchedPct float64
}

// Use returns the CPU use between a and b (a first).
func Use(a, b CPUSample) CPUUse {
	iv := b.At.Sub(a.At)
	u := CPUUse{Interval: iv, SchedPct: nan()}
	if iv <= 0 {
		return u
	}
	u.StatPct = 100 * float64(b.Ticks-a.Ticks) / clockTicks / iv.Seconds()
	if a.RunNs > 0 && b.RunNs >= a.RunNs {
		u.SchedPct = 100 * float64(b.RunNs-a.RunNs) / float64(iv.Nanoseconds())
	}
	return u
}

// Best returns the most precise figure available: schedstat's, else
// stat's.
func (u CPUUse) Best() float64 {
	if u.SchedPct == u.SchedPct { // not NaN
		return u.SchedPct
	}
	return u.StatPct
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
