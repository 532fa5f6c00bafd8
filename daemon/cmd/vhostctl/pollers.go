package main

import (
	"fmt"
	"io"
	"strconv"

	"github.com/vhostd/vhostd/daemon/control"
)

// pollerUsage is the part of vhostctl's usage text about pollers.
const pollerUsage = `  pollers each poller (one thread, one core's worth of work) since vhostd
          started: the CPU it is pinned to (--poller-cpus), busy and idle
          time, busy share, frames, TSC cycles per frame, how often another
          thread took its CPU, and its ports. stats --watch shows the load
          per interval
`

// printPollers prints `vhostctl pollers`.
func printPollers(out io.Writer, ps []control.PollerStats) {
	rows := [][]string{{"POLLER", "CPU", "BUSY", "IDLE", "BUSY%", "FRAMES", "BURSTS", "FRAMES/BURST", "CYCLES/FRAME", "PREEMPTED", "PORTS"}}
	for _, p := range ps {
		cpu := "-"
		if p.CPU >= 0 {
			cpu = strconv.Itoa(p.CPU)
		}
		rows = append(rows, []string{strconv.Itoa(p.Poller), cpu, fmt.Sprintf("%.3fs", p.BusySeconds), fmt.Sprintf("%.3fs", p.IdleSeconds),
			busyPercent(p.BusyCycles, p.IdleCycles), strconv.FormatUint(p.Frames, 10), strconv.FormatUint(p.Bursts, 10),
			ratio(p.Frames, p.Bursts, 1), ratio(p.BusyCycles, p.Frames, 0), strconv.FormatUint(p.Preempted, 10), join(p.Ports)})
	}
	printColumns(out, rows, nil)
	if len(ps) > 0 && ps[0].TSCHz > 0 {
		fmt.Fprintf(out, "(cycles: TSC at %.3f GHz, measured against the monotonic clock)\n", ps[0].TSCHz/1e9)
	}
}

// busyPercent is busy's share of busy+idle, or "-" for no time at all.
func busyPercent(busy, idle uint64) string {
	if busy+idle == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*float64(busy)/float64(busy+idle), 'f', 1, 64) + "%"
}

// ratio is a/b with prec decimals, or "-" when b is 0.
func ratio(a, b uint64, prec int) string {
	if b == 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(a)/float64(b), 'f', prec, 64)
}

// PollerRate is one poller's load between two polls of `stats --watch`.
type PollerRate struct {
	Poller int      `json:"poller"`
	Ports  []string `json:"ports"`
	// BusyPercent is the share of the interval the poller spent moving
	// frames; -1 when it did not run (no time passed for it).
	BusyPercent float64 `json:"busy_percent"`
	FramesPS    float64 `json:"frames_per_sec"`
	// CyclesPerFrame is busy TSC cycles per frame taken; 0 without frames.
	CyclesPerFrame float64 `json:"cycles_per_frame"`
	// PreemptedPS is how often a second the kernel took the poller's
	// CPU for another thread; -1 when its thread changed between polls.
	PreemptedPS float64 `json:"preempted_per_sec"`
}

// computePollerRates turns two polls of the pollers into their load over
// elapsed seconds. Pollers not in prev, or whose counters went back
// (vhostd restarted), are left out until the next poll.
func computePollerRates(prev, cur []control.PollerStats, sec float64) []PollerRate {
	before := make(map[int]control.PollerStats, len(prev))
	for _, p := range prev {
		before[p.Poller] = p
	}
	var out []PollerRate
	for _, c := range cur {
		p, ok := before[c.Poller]
		if !ok || c.BusyCycles < p.BusyCycles || c.IdleCycles < p.IdleCycles || c.Frames < p.Frames || sec <= 0 {
			continue
		}
		busy, idle, frames := c.BusyCycles-p.BusyCycles, c.IdleCycles-p.IdleCycles, c.Frames-p.Frames
		r := PollerRate{Poller: c.Poller, Ports: c.Ports, BusyPercent: -1, FramesPS: float64(frames) / sec}
		if busy+idle > 0 {
			r.BusyPercent = 100 * float64(busy) / float64(busy+idle)
		}
		if frames > 0 {
			r.CyclesPerFrame = float64(busy) / float64(frames)
		}
		r.PreemptedPS = -1
		if c.TID == p.TID && c.Preempted >= p.Preempted {
			r.PreemptedPS = float64(c.Preempted-p.Preempted) / sec
		}
		out = append(out, r)
	}
	return out
}

// printPollerRates prints the pollers' load under the ports' rates.
func printPollerRates(out io.Writer, rs []PollerRate) {
	if len(rs) == 0 {
		return
	}
	rows := [][]string{{"POLLER", "BUSY%", "FRAMES/S", "CYCLES/FRAME", "PREEMPTED/S", "PORTS"}}
	for _, r := range rs {
		busy, cpf, pre := "-", "-", "-"
		if r.BusyPercent >= 0 {
			busy = strconv.FormatFloat(r.BusyPercent, 'f', 1, 64) + "%"
		}
		if r.CyclesPerFrame > 0 {
			cpf = strconv.FormatFloat(r.CyclesPerFrame, 'f', 0, 64)
		}
		if r.PreemptedPS >= 0 {
			pre = strconv.FormatFloat(r.PreemptedPS, 'f', 0, 64)
		}
		rows = append(rows, []string{strconv.Itoa(r.Poller), busy, formatRate(r.FramesPS), cpf, pre, join(r.Ports)})
	}
	printColumns(out, rows, nil)
}
