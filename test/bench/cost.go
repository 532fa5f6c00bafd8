package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
)

// Cost per frame: each backend's CPU time per forwarded frame over the
// measured window, in TSC cycles, from the backend's own accounting:
//
//   - vhostd: its pollers' busy cycles (passes of the poller loop that
//     moved frames, timed with RDTSC) over the frames they took from their
//     receivers (control command "pollers"), summed over the pollers;
//   - dpdk-io: testpmd's --record-core-cycles, the forwarding lcore's
//     cycles in bursts that received frames over the frames received
//     ("CPU cycles/packet=... (total cycles=C / total io packets=N)" of
//     "show fwd stats all");
//   - ovs-dpdk: the PMD thread's busy cycles (iterations that received
//     frames) over the frames received (ovs-appctl
//     dpif-netdev/pmd-perf-show).
//
// Every one counts a frame once, when the backend takes it from a port:
// both directions, as the loop rate does. Idle polling is left out by
// all three, so cycles/frame is what forwarding one frame costs, even
// when the generator, not the backend, sets the loop rate. Cycles become
// time at the TSC rate (vhostd: measured against the monotonic clock,
// tsc_hz of "pollers"; testpmd: rte_get_tsc_hz(), printed in MHz; OVS:
// the same DPDK call): ns/frame = cycles/frame / (TSC Hz / 1e9).

// CostMark is a backend's cumulative cost counters at one moment.
type CostMark struct {
	// Cycles are TSC cycles spent forwarding, Frames the frames
	// forwarded, since the backend (or its forwarding) started.
	Cycles, Frames uint64
	// TSCHz is the TSC's rate, as the backend knows it (0: unknown).
	TSCHz float64
}

// CostMeter is implemented by instances that account their forwarding
// cycles: the bench marks the window's start and end.
type CostMeter interface {
	CostMark(ctx context.Context) (CostMark, error)
}

// Cost is a backend's forwarding cost over one window.
type Cost struct {
	Cycles, Frames uint64
	TSCHz          float64
	// Seconds is the wall time between the two marks.
	Seconds float64
}

// CostBetween returns the cost from mark a to mark b, taken secs apart.
// Counters that went backwards (a restart) or no frames are an error.
func CostBetween(a, b CostMark, secs float64) (Cost, error) {
	if b.Cycles < a.Cycles || b.Frames < a.Frames {
		return Cost{}, fmt.Errorf("cost counters went backwards (%d->%d cycles, %d->%d frames)", a.Cycles, b.Cycles, a.Frames, b.Frames)
	}
	if b.Frames == a.Frames {
		return Cost{}, fmt.Errorf("no frames forwarded between the cost marks")
	}
	hz := b.TSCHz
	if hz == 0 {
		hz = a.TSCHz
	}
	return Cost{Cycles: b.Cycles - a.Cycles, Frames: b.Frames - a.Frames, TSCHz: hz, Seconds: secs}, nil
}

// PerFrame is cycles per frame.
func (c Cost) PerFrame() float64 {
	if c.Frames == 0 {
		return nan()
	}
	return float64(c.Cycles) / float64(c.Frames)
}

// NsPerFrame is nanoseconds per frame at the TSC rate (NaN if unknown).
func (c Cost) NsPerFrame() float64 {
	if c.TSCHz <= 0 {
		return nan()
	}
	return c.PerFrame() / c.TSCHz * 1e9
}

// BusyPct is the share of the window the backend spent forwarding, in
// percent of a core (NaN if the TSC rate is unknown).
func (c Cost) BusyPct() float64 {
	if c.TSCHz <= 0 || c.Seconds <= 0 {
		return nan()
	}
	return 100 * float64(c.Cycles) / c.TSCHz / c.Seconds
}

var coreCyclesRe = regexp.MustCompile(`CPU cycles/packet=[0-9.]+ \(total cycles=(\d+) / total \S+ packets=(\d+)\) at (\d+) MHz Clock`)

// ParseCoreCycles reads the line testpmd's --record-core-cycles adds to
// its forward statistics ("show fwd stats all", "stop"):
//
//	CPU cycles/packet=326.46 (total cycles=4335665754 / total io packets=13280928) at 2100 MHz Clock
//
// The last such line wins. ok is false when there is none (forwarding
// not started, no frames yet, or no --record-core-cycles).
func ParseCoreCycles(out string) (CostMark, bool) {
	ms := coreCyclesRe.FindAllStringSubmatch(out, -1)
	if ms == nil {
		return CostMark{}, false
	}
	m := ms[len(ms)-1]
	c, err1 := strconv.ParseUint(m[1], 10, 64)
	n, err2 := strconv.ParseUint(m[2], 10, 64)
	mhz, err3 := strconv.ParseFloat(m[3], 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return CostMark{}, false
	}
	return CostMark{Cycles: c, Frames: n, TSCHz: mhz * 1e6}, true
}
