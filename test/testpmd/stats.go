package testpmd

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// PortStats is one port's block of "show port stats all" (the ethdev
// counters since start or since "clear port stats").
type PortStats struct {
	// Port is the DPDK port id.
	Port int
	// RxPackets, RxMissed, RxErrors, RxNombuf and RxBytes are the RX
	// counters ("RX-packets", "RX-missed", "RX-errors", "RX-nombuf",
	// "RX-bytes").
	RxPackets, RxMissed, RxErrors, RxNombuf, RxBytes uint64
	// TxPackets, TxErrors and TxBytes are the TX counters.
	TxPackets, TxErrors, TxBytes uint64
	// HasRates tells whether the "Throughput (since last show)" part was
	// there.
	HasRates bool
	// RxPPS, RxBPS, TxPPS and TxBPS are the throughput values, which
	// testpmd computes over the time since the previous show of this port
	// (0 when that was under a second or so ago).
	RxPPS, RxBPS, TxPPS, TxBPS uint64
}

// FwdStats is one port's block of the forward statistics that "stop"
// prints (counters since the forwarding started).
type FwdStats struct {
	// Port is the DPDK port id; -1 for the accumulated block of all ports.
	Port int
	// RxPackets, RxDropped (the ethdev's imissed) and RxTotal are the RX
	// counters.
	RxPackets, RxDropped, RxTotal uint64
	// RxErrors and RxNombufs are printed only when one is not zero.
	RxErrors, RxNombufs uint64
	// TxPackets, TxDropped (frames the forwarding engine could not queue,
	// plus ethdev oerrors) and TxTotal are the TX counters.
	TxPackets, TxDropped, TxTotal uint64
}

var (
	nicHdrRe = regexp.MustCompile(`#+ NIC statistics for port (\d+)\s*#+`)
	fwdHdrRe = regexp.MustCompile(`-+ Forward statistics for port (\d+)\s*-+`)
	accHdrRe = regexp.MustCompile(`\++ Accumulated forward statistics for all ports\s*\++`)
	kvRe     = regexp.MustCompile(`([A-Za-z][A-Za-z-]*):\s*(\d+)`)
)

// ParsePortStats parses the output of "show port stats all" (or "show port
// stats N").
func ParsePortStats(out string) ([]PortStats, error) {
	out = strings.ReplaceAll(out, "\r", "")
	locs := nicHdrRe.FindAllStringSubmatchIndex(out, -1)
	if len(locs) == 0 {
		return nil, fmt.Errorf("testpmd: no NIC statistics in %q", clip(out))
	}
	var res []PortStats
	for i, l := range locs {
		end := len(out)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		port, _ := strconv.Atoi(out[l[2]:l[3]])
		body := out[l[1]:end]
		// The block ends at the closing line of '#'.
		if j := strings.Index(body, "\n  ####"); j >= 0 {
			body = body[:j]
		}
		ps := PortStats{Port: port}
		seen := map[string]bool{}
		for _, m := range kvRe.FindAllStringSubmatch(body, -1) {
			v, err := strconv.ParseUint(m[2], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("testpmd: port %d: %s: %w", port, m[1], err)
			}
			seen[m[1]] = true
			switch m[1] {
			case "RX-packets":
				ps.RxPackets = v
			case "RX-missed":
				ps.RxMissed = v
			case "RX-bytes":
				ps.RxBytes = v
			case "RX-errors":
				ps.RxErrors = v
			case "RX-nombuf":
				ps.RxNombuf = v
			case "TX-packets":
				ps.TxPackets = v
			case "TX-errors":
				ps.TxErrors = v
			case "TX-bytes":
				ps.TxBytes = v
			case "Rx-pps":
				ps.RxPPS = v
				ps.HasRates = true
			case "Rx-bps":
				ps.RxBPS = v
			case "Tx-pps":
				ps.TxPPS = v
			case "Tx-bps":
				ps.TxBPS = v
			}
		}
		for _, k := range []string{"RX-packets", "RX-missed", "RX-bytes", "RX-errors", "TX-packets", "TX-errors", "TX-bytes"} {
			if !seen[k] {
				return nil, fmt.Errorf("testpmd: port %d: %s missing in %q", port, k, clip(body))
			}
		}
		res = append(res, ps)
	}
	return res, nil
}

// ParseFwdStats parses the forward statistics printed by "stop": one entry
// per port, then the accumulated entry (Port -1) when present.
func ParseFwdStats(out string) ([]FwdStats, error) {
	out = strings.ReplaceAll(out, "\r", "")
	type hdr struct {
		start, bodyStart, port int
	}
	var hs []hdr
	for _, l := range fwdHdrRe.FindAllStringSubmatchIndex(out, -1) {
		p, _ := strconv.Atoi(out[l[2]:l[3]])
		hs = append(hs, hdr{l[0], l[1], p})
	}
	if l := accHdrRe.FindStringIndex(out); l != nil {
		hs = append(hs, hdr{l[0], l[1], -1})
	}
	if len(hs) == 0 {
		return nil, fmt.Errorf("testpmd: no forward statistics in %q", clip(out))
	}
	var res []FwdStats
	for i, h := range hs {
		end := len(out)
		if i+1 < len(hs) {
			end = hs[i+1].start
		}
		body := out[h.bodyStart:end]
		// Blocks end with a line of '-' (ports) or '+' (accumulated).
		if j := strings.Index(body, "\n  ---"); j >= 0 {
			body = body[:j]
		}
		if j := strings.Index(body, "\n  +++"); j >= 0 {
			body = body[:j]
		}
		fs := FwdStats{Port: h.port}
		for _, m := range kvRe.FindAllStringSubmatch(body, -1) {
			v, err := strconv.ParseUint(m[2], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("testpmd: forward stats port %d: %s: %w", h.port, m[1], err)
			}
			switch m[1] {
			case "RX-packets":
				fs.RxPackets = v
			case "RX-dropped":
				fs.RxDropped = v
			case "RX-total":
				fs.RxTotal = v
			case "RX-error":
				fs.RxErrors = v
			case "RX-nombufs":
				fs.RxNombufs = v
			case "TX-packets":
				fs.TxPackets = v
			case "TX-dropped":
				fs.TxDropped = v
			case "TX-total":
				fs.TxTotal = v
			}
		}
		res = append(res, fs)
	}
	return res, nil
}

func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}
