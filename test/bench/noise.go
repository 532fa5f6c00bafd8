package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// CPUTimes are the busy and total ticks of some CPUs from /proc/stat.
type CPUTimes struct {
	// Busy is user+nice+system+irq+softirq+steal (steal: time the
	// hypervisor gave to someone else); Total adds idle and iowait.
	Busy, Total uint64
}

// ParseProcStat sums the "cpuN" lines of /proc/stat for the given CPUs.
func ParseProcStat(stat string, cpus []int) (CPUTimes, error) {
	want := map[string]bool{}
	for _, c := range cpus {
		want["cpu"+strconv.Itoa(c)] = true
	}
	var t CPUTimes
	found := 0
	for _, line := range strings.Split(stat, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !want[f[0]] {
			continue
		}
		var v [8]uint64
		for i := range v {
			n, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return t, fmt.Errorf("/proc/stat %s: %w", f[0], err)
			}
			v[i] = n
		}
		user, nice, system, idle, iowait, irq, softirq, steal := v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
		busy := user + nice + system + irq + softirq + steal
		t.Busy += busy
		t.Total += busy + idle + iowait
		found++
	}
	if found != len(want) {
		return t, fmt.Errorf("/proc/stat: found %d of CPUs %v", found, cpus)
	}
	return t, nil
}

// Interference estimates how much of the bench's CPUs other load took
// during a run: the CPUs' busy time that is not the bench's own processes'
// CPU time, as a share of the CPUs' total time. The pinned generator and a
// polling backend keep their CPUs busy all the time, so anything else that
// runs there (other tests, the hypervisor's steal) shows up here and the
// measured rate is lower by about as much.
type Interference struct {
	cpus   []int
	pids   []int
	t0     CPUTimes
	ours0  uint64
	failed bool
}

// StartInterference takes the first snapshot for cpus and pids.
func StartInterference(cpus, pids []int) *Interference {
	in := &Interference{cpus: cpus, pids: pids}
	var err error
	in.t0, in.ours0, err = in.snap()
	in.failed = err != nil
	return in
}

func (in *Interference) snap() (CPUTimes, uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPUTimes{}, 0, err
	}
	t, err := ParseProcStat(string(b), in.cpus)
	if err != nil {
		return t, 0, err
	}
	var ours uint64
	for _, p := range in.pids {
		c, err := ReadCPU(p)
		if err != nil {
			return t, 0, err
		}
		ours += c.Ticks
	}
	return t, ours, nil
}

// Pct returns the other load since the start in percent of the CPUs' time,
// or NaN if it could not be measured.
func (in *Interference) Pct() float64 {
	t1, ours1, err := in.snap()
	if err != nil || in.failed {
		return nan()
	}
	return InterferencePct(in.t0, t1, ours1-in.ours0)
}

// InterferencePct is (busy - ours) / total between two snapshots, in
// percent, clamped at 0 (tick rounding can make ours exceed busy).
func InterferencePct(a, b CPUTimes, ours uint64) float64 {
	total := b.Total - a.Total
	if total == 0 {
		return nan()
	}
	busy := b.Busy - a.Busy
	if ours >= busy {
		return 0
	}
	return 100 * float64(busy-ours) / float64(total)
}
