// Package cpus reads and writes CPU lists ("2,4-6", as taskset -c and
// DPDK's -l take them) and keeps vhostd's threads off the CPUs its
// pollers own.
//
// A poller spins on its CPU. Any other thread of the process that the
// kernel schedules there (the Go runtime's sysmon wakes a few hundred
// times a second under load, the control socket and vhost-user message
// goroutines run where they can) preempts it, each time for a context
// switch and the caches it disturbs, and delays the frames in its rings
// by as much. Pinning the pollers alone is not enough: their CPUs must
// also be taken out of every other thread's mask.
package cpus

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxCPU bounds the CPU numbers a list may name (the size of the kernel's
// affinity mask as golang.org/x/sys/unix handles it).
const MaxCPU = len(unix.CPUSet{})*64 - 1

// Parse reads a CPU list: comma-separated CPU numbers and ascending
// ranges "A-B", in the order given ("3,1" is 3 then 1). A CPU named twice
// is an error: each poller needs a CPU of its own.
func Parse(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty CPU list: give CPU numbers like 2,3 or 2-5")
	}
	var out []int
	seen := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := cpuNumber(lo, part)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = cpuNumber(hi, part); err != nil {
				return nil, err
			}
			if b < a {
				return nil, fmt.Errorf("CPU range %q goes down: write it low-high (%d-%d)", part, b, a)
			}
		}
		for c := a; c <= b; c++ {
			if seen[c] {
				return nil, fmt.Errorf("CPU %d is named twice in %q: each poller needs a CPU of its own", c, s)
			}
			seen[c] = true
			out = append(out, c)
		}
	}
	return out, nil
}

func cpuNumber(s, part string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a CPU number or range like 2 or 2-5", part)
	}
	if n > MaxCPU {
		return 0, fmt.Errorf("CPU %d: CPU numbers go up to %d", n, MaxCPU)
	}
	return n, nil
}

// Format writes cpus as a list with ranges, ascending: "0-3,6".
func Format(cpus []int) string {
	s := slices.Clone(cpus)
	slices.Sort(s)
	s = slices.Compact(s)
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(s[i]))
		if j > i {
			fmt.Fprintf(&b, "-%d", s[j])
		}
		i = j + 1
	}
	return b.String()
}

// Allowed returns the CPUs the calling thread may run on, ascending (at
// start, the process's: what taskset or a cgroup left it).
func Allowed() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("read CPU affinity: %w", err)
	}
	return members(&set), nil
}

// Check returns an error naming the CPUs of want that are not in allowed.
func Check(want, allowed []int) error {
	var bad []int
	for _, c := range want {
		if !slices.Contains(allowed, c) {
			bad = append(bad, c)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("CPU %s is not one vhostd may run on (allowed: %s; see taskset -p and the cgroup's cpuset)", Format(bad), Format(allowed))
}

// KeepOff sets the mask of every thread of the process to allowed less
// off, and returns that set. Threads created later inherit their
// creator's mask, so they stay off too: a thread the Go runtime needs
// while a goroutine is locked to a pinned thread (a poller) is created by
// its template thread, one of those KeepOff moved, not by the pinned one.
// If nothing would be left, it changes nothing and returns an empty set:
// the caller says that the pollers will share their CPUs.
func KeepOff(allowed, off []int) ([]int, error) {
	var rest []int
	for _, c := range allowed {
		if !slices.Contains(off, c) {
			rest = append(rest, c)
		}
	}
	if len(rest) == 0 {
		return nil, nil
	}
	return rest, SetAll(rest)
}

// SetAll sets the CPU mask of every thread of the process to cpus. A
// thread started while it runs (with its creator's old mask) is caught by
// the next pass; it gives up after a few passes that each still found
// one to change.
func SetAll(cpus []int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	for pass := 0; pass < 10; pass++ {
		tids, err := Threads()
		if err != nil {
			return err
		}
		changed := 0
		for _, tid := range tids {
			var cur unix.CPUSet
			if err := unix.SchedGetaffinity(tid, &cur); err != nil {
				continue // exited meanwhile
			}
			if cur == set {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil {
				if errors.Is(err, unix.ESRCH) {
					continue
				}
				return fmt.Errorf("set CPU affinity of thread %d to %s: %w", tid, Format(cpus), err)
			}
			changed++
		}
		if changed == 0 {
			return nil
		}
	}
	return fmt.Errorf("set CPU affinity to %s: threads kept appearing with another mask", Format(cpus))
}

// Threads returns the ids of the process's threads.
func Threads() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("list threads: %w", err)
	}
	var tids []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// OfThread returns the CPUs thread tid of process pid may run on (pid 0:
// this process), from /proc: for tests and diagnostics.
func OfThread(pid, tid int) ([]int, error) {
	p := "self"
	if pid != 0 {
		p = strconv.Itoa(pid)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%s/task/%d/status", p, tid))
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return Parse(strings.TrimSpace(v))
		}
	}
	return nil, fmt.Errorf("thread %d: no Cpus_allowed_list in its status", tid)
}

// Preemptions returns how often the kernel switched thread tid of this
// process out while it could still run (its nonvoluntary context
// switches, from /proc).
func Preemptions(tid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/status", tid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("thread %d: no nonvoluntary_ctxt_switches in its status", tid)
}

func members(set *unix.CPUSet) []int {
	var out []int
	for c := 0; c <= MaxCPU; c++ {
		if set.IsSet(c) {
			out = append(out, c)
		}
	}
	return out
}
