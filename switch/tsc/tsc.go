// Package tsc reads the CPU's time-stamp counter, the cheapest clock there
// is, and converts its cycles to time.
//
// The pollers time every burst with it: time.Now costs, in a VM, about as
// much as forwarding a frame, a TSC read a few nanoseconds. On amd64 the
// counter is the TSC itself (constant and non-stop on every CPU vhostd is
// meant for: check for constant_tsc and nonstop_tsc in /proc/cpuinfo);
// elsewhere it is the monotonic clock in nanoseconds, and Hz is 1e9.
package tsc

import (
	"sync"
	"time"
)

// Now returns the counter. Readings from different threads compare only
// on a machine with a constant, synchronised TSC; the pollers only ever
// subtract two readings taken on their own thread.
func Now() uint64 { return now() }

var start = struct {
	once   sync.Once
	cycles uint64
	at     time.Time
}{}

// Start records the reference point of Hz. It is called at package
// initialisation; calling it again changes nothing.
func Start() {
	start.once.Do(func() {
		start.at = time.Now()
		start.cycles = Now()
	})
}

func init() { Start() }

// Hz returns the counter's rate in cycles per second, measured against
// the monotonic clock since the process started (so it grows more exact
// the longer vhostd runs: after a second, to within a few parts per
// million). It returns 0 in the first millisecond, when the measurement
// means nothing yet.
func Hz() float64 {
	if !isTSC {
		return 1e9
	}
	el := time.Since(start.at)
	if el < time.Millisecond {
		return 0
	}
	return float64(Now()-start.cycles) / el.Seconds()
}

// Seconds converts a number of cycles to seconds at the rate Hz reports
// (0 if the rate is not known yet).
func Seconds(cycles uint64) float64 {
	hz := Hz()
	if hz == 0 {
		return 0
	}
	return float64(cycles) / hz
}
