package main

import (
	"fmt"
	"sort"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	vswitch "github.com/vhostd/vhostd/switch"
)

// Rate statuses: a port's rates are known (ok) only when an earlier poll
// gave it counters that the current ones have not gone below.
const (
	rateOK    = "ok"
	rateNew   = "new"   // first seen this poll: its rates come with the next
	rateReset = "reset" // a counter went backwards (port re-added, vhostd restarted): baseline taken again
)

// PortRate is one port's rates between two polls of `stats`.
type PortRate struct {
	Name   string `json:"name"`
	Status string `json:"status"` // ok, new or reset; the rates are zero unless ok
	// Packets and bits (bytes × 8) per second.
	RxPPS float64 `json:"rx_packets_per_sec"`
	TxPPS float64 `json:"tx_packets_per_sec"`
	RxBPS float64 `json:"rx_bits_per_sec"`
	TxBPS float64 `json:"tx_bits_per_sec"`
	// DropsPS is drops per second over every reason; TopDrop is the reason
	// with most of them (empty when none dropped), DropsByReason the
	// reasons that dropped.
	DropsPS       float64            `json:"drops_per_sec"`
	TopDrop       string             `json:"top_drop,omitempty"`
	TopDropPS     float64            `json:"top_drop_per_sec,omitempty"`
	DropsByReason map[string]float64 `json:"drops_by_reason_per_sec,omitempty"`
}

// rateReport is the rates of every port of the current poll, in the
// daemon's order, and the ports that the previous poll had and this one
// has not.
type rateReport struct {
	Ports   []PortRate
	Removed []string
	Pollers []PollerRate
}

// computeRates turns the counters of two polls elapsed apart (the time
// measured between them, not the nominal interval) into rates. prev may
// be nil (first poll). A port not in prev is new; one whose counters went
// backwards is reset; neither has rates.
func computeRates(prev, cur []control.PortStats, elapsed time.Duration) rateReport {
	before := make(map[string]*control.PortStats, len(prev))
	for i := range prev {
		before[prev[i].Name] = &prev[i]
	}
	var r rateReport
	seen := make(map[string]bool, len(cur))
	for _, c := range cur {
		seen[c.Name] = true
		p := before[c.Name]
		pr := PortRate{Name: c.Name}
		switch {
		case p == nil || elapsed <= 0:
			pr.Status = rateNew
		case wentBack(&p.Snapshot, &c.Snapshot):
			pr.Status = rateReset
		default:
			pr.Status = rateOK
			sec := elapsed.Seconds()
			per := func(now, then uint64) float64 { return float64(now-then) / sec }
			pr.RxPPS = per(c.RxPackets, p.RxPackets)
			pr.TxPPS = per(c.TxPackets, p.TxPackets)
			pr.RxBPS = 8 * per(c.RxBytes, p.RxBytes)
			pr.TxBPS = 8 * per(c.TxBytes, p.TxBytes)
			for _, name := range dropReasons(&c.Snapshot) {
				d := c.Drops[name] - p.Drops[name]
				if d == 0 {
					continue
				}
				if pr.DropsByReason == nil {
					pr.DropsByReason = make(map[string]float64)
				}
				rate := float64(d) / sec
				pr.DropsByReason[name] = rate
				pr.DropsPS += rate
				if rate > pr.TopDropPS {
					pr.TopDrop, pr.TopDropPS = name, rate
				}
			}
		}
		r.Ports = append(r.Ports, pr)
	}
	for _, p := range prev {
		if !seen[p.Name] {
			r.Removed = append(r.Removed, p.Name)
		}
	}
	return r
}

// dropReasons is the drop reasons of s: the switch's, in its order, then
// any other the daemon reports (a newer vhostd), so that the top reason
// is chosen the same way every time.
func dropReasons(s *vswitch.Snapshot) []string {
	names := append([]string(nil), vswitch.DropNames[:]...)
	known := make(map[string]bool, len(names))
	for _, n := range names {
		known[n] = true
	}
	var extra []string
	for n := range s.Drops {
		if !known[n] {
			extra = append(extra, n)
		}
	}
	sort.Strings(extra)
	return append(names, extra...)
}

// wentBack says whether a counter of cur is below the same one in prev.
func wentBack(prev, cur *vswitch.Snapshot) bool {
	if cur.RxPackets < prev.RxPackets || cur.TxPackets < prev.TxPackets ||
		cur.RxBytes < prev.RxBytes || cur.TxBytes < prev.TxBytes {
		return true
	}
	for name, n := range prev.Drops {
		if cur.Drops[name] < n {
			return true
		}
	}
	return false
}

// formatBits formats bits per second in decimal units, as link speeds are.
func formatBits(bps float64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.2f Gb/s", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.2f Mb/s", bps/1e6)
	case bps >= 1e3:
		return fmt.Sprintf("%.2f Kb/s", bps/1e3)
	}
	return fmt.Sprintf("%.0f b/s", bps)
}

// formatRate formats a count per second: whole numbers from 10 up, one
// decimal below (a drop every few seconds is not 0).
func formatRate(r float64) string {
	if r >= 10 || r == 0 {
		return fmt.Sprintf("%.0f", r)
	}
	return fmt.Sprintf("%.1f", r)
}
