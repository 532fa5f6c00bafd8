package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteCostTable prints the cost per frame beside the loop rate: one line
// per backend and case with a cost.
func WriteCostTable(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  "+strings.Join([]string{"backend", "case", "Mpps", "cycles/frame", "min..max", "ns/frame", "busy", "x dpdk-io", "reps", "gen cycles/frame", "gen busy"}, "\t")+"\t")
	var notes []string
	for _, r := range rows {
		if r.PPS.N == 0 {
			continue
		}
		cells := []string{r.Backend, r.Case.Name(), fmt.Sprintf("%.3f", r.PPS.Median/1e6)}
		if r.Cyc.N == 0 {
			cells = append(cells, "-", "", "", "", "", fmt.Sprintf("0/%d", r.PPS.N))
			cells = append(cells, fmtGen(r)...)
			if r.CostErr != "" {
				notes = append(notes, fmt.Sprintf("  %s %s: no cost per frame: %s", r.Backend, r.Case.Name(), r.CostErr))
			}
		} else {
			ns, busy := "-", "-"
			if r.Ns.N > 0 {
				ns = fmt.Sprintf("%.1f", r.Ns.Median)
			}
			if r.Busy.N > 0 {
				busy = fmt.Sprintf("%.0f%%", r.Busy.Median)
			}
			cells = append(cells, fmt.Sprintf("%.0f", r.Cyc.Median), fmt.Sprintf("%.0f..%.0f", r.Cyc.Min, r.Cyc.Max),
				ns, busy, fmtRatio(r.CycVsDPDK), fmt.Sprintf("%d/%d", r.Cyc.N, r.PPS.N))
			cells = append(cells, fmtGen(r)...)
		}
		fmt.Fprintln(tw, "  "+strings.Join(cells, "\t")+"\t")
	}
	tw.Flush()
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
}

// TSCLine states the cycle-to-time conversion with the TSC rates the
// backends reported in rows.
func TSCLine(rows []Row) string {
	hz := map[string][]float64{}
	for _, r := range rows {
		if r.TSCHz > 0 {
			hz[r.Backend] = append(hz[r.Backend], r.TSCHz)
		}
	}
	var parts []string
	for _, b := range sortedKeys(hz) {
		how := ""
		switch b {
		case "vhostd":
			how = " (measured against the monotonic clock)"
		case RefDPDK:
			how = " (rte_get_tsc_hz, printed in whole MHz)"
		case RefOVS:
			how = " (derived from pmd-perf-show's used cycles, share and duration)"
		}
		parts = append(parts, fmt.Sprintf("%s %.3f GHz%s", b, median(hz[b])/1e9, how))
	}
	if len(parts) == 0 {
		return "cycles are TSC cycles; ns/frame = cycles/frame / TSC GHz (no TSC rate reported)"
	}
	return "cycles are TSC cycles; ns/frame = cycles/frame / TSC GHz, at the rate each backend reported: " + strings.Join(parts, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// RatioCI is one ratio of vhostd to a reference on one case, with its
// bootstrap interval.
type RatioCI struct {
	Case Case
	// What is "Mpps" (vhostd's rate over the reference's: higher is
	// better for vhostd) or "cycles/frame" (vhostd's cost over the
	// reference's: lower is better).
	What, Ref string
	CI        CI
}

// RatioCIs computes, per case, vhostd's ratio to each reference present,
// of the loop rate and of the cycles per frame, with percentile bootstrap
// intervals (BootLevel, BootResamples, BootSeed).
func RatioCIs(rows []Row) []RatioCI {
	type key struct {
		c Case
		b string
	}
	by := map[key]Row{}
	var cases []Case
	seen := map[Case]bool{}
	for _, r := range rows {
		by[key{r.Case, r.Backend}] = r
		if !seen[r.Case] {
			seen[r.Case] = true
			cases = append(cases, r.Case)
		}
	}
	var out []RatioCI
	for _, c := range cases {
		v, ok := by[key{c, "vhostd"}]
		if !ok {
			continue
		}
		for _, ref := range []string{RefDPDK, RefOVS} {
			rr, ok := by[key{c, ref}]
			if !ok {
				continue
			}
			if len(v.PPSVals) > 0 && len(rr.PPSVals) > 0 {
				out = append(out, RatioCI{c, "Mpps", ref, BootstrapRatio(v.PPSVals, rr.PPSVals, BootLevel, BootResamples, BootSeed)})
			}
			if len(v.CycVals) > 0 && len(rr.CycVals) > 0 {
				out = append(out, RatioCI{c, "cycles/frame", ref, BootstrapRatio(v.CycVals, rr.CycVals, BootLevel, BootResamples, BootSeed)})
			}
		}
	}
	return out
}

// WriteRatioCIs prints the ratios with their intervals and the
// repetitions a +-5% interval would take.
func WriteRatioCIs(w io.Writer, cis []RatioCI) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  "+strings.Join([]string{"case", "vhostd over", "ratio", fmt.Sprintf("%.0f%% CI", 100*BootLevel), "+-", "reps", fmt.Sprintf("reps for +-%.0f%%", 100*TargetHalfWidth)}, "\t")+"\t")
	for _, r := range cis {
		ci, hw, need := "-", "-", "-"
		if !math.IsNaN(r.CI.Lo) {
			ci = fmt.Sprintf("%.2f..%.2fx", r.CI.Lo, r.CI.Hi)
			hw = fmt.Sprintf("%.1f%%", r.CI.HalfWidthPct())
			if n := r.CI.RepsFor(TargetHalfWidth); n > 0 {
				need = fmt.Sprint(n)
			} else if r.CI.HalfWidthPct() == 0 {
				need = "?"
			}
		}
		fmt.Fprintln(tw, "  "+strings.Join([]string{r.Case.Name(), r.Ref + " " + r.What, fmtRatio(r.CI.Est), ci, hw,
			fmt.Sprintf("%d/%d", r.CI.N, r.CI.M), need}, "\t")+"\t")
	}
	tw.Flush()
}

// WriteRatiosCSV writes one line per ratio with its interval.
func WriteRatiosCSV(w io.Writer, cis []RatioCI) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"section", "case", "mem", "quantity", "reference", "ratio", "ci_lo", "ci_hi", "ci_level", "half_width_pct",
		"reps_vhostd", "reps_reference", "reps_for_5pct", "resamples", "seed"})
	for _, r := range cis {
		need := ""
		if n := r.CI.RepsFor(TargetHalfWidth); n > 0 {
			need = strconv.Itoa(n)
		}
		cw.Write([]string{string(r.Case.Topology), r.Case.Name(), r.Case.Mem(), r.What, r.Ref, csvFloat(r.CI.Est, 4),
			csvFloat(r.CI.Lo, 4), csvFloat(r.CI.Hi, 4), csvFloat(BootLevel, 2), csvFloat(r.CI.HalfWidthPct(), 2),
			strconv.Itoa(r.CI.N), strconv.Itoa(r.CI.M), need, strconv.Itoa(BootResamples), strconv.Itoa(BootSeed)})
	}
	cw.Flush()
	return cw.Error()
}

// fmtGen shows the generator's cycles per frame and busy share.
func fmtGen(r Row) []string {
	c, b := "-", "-"
	if r.GenCyc.N > 0 {
		c = fmt.Sprintf("%.0f", r.GenCyc.Median)
	}
	if r.GenBusy.N > 0 {
		b = fmt.Sprintf("%.0f%%", r.GenBusy.Median)
	}
	return []string{c, b}
}
