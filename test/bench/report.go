package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Reference backends of the ratio columns.
const (
	RefDPDK = "dpdk-io"
	RefOVS  = "ovs-dpdk"
)

// Row is one backend on one case, over its repetitions.
type Row struct {
	Backend string
	Case    Case
	// PPS summarises the successful repetitions' rates.
	PPS Summary
	// Failed counts failed repetitions; Err is the first failure.
	Failed int
	Err    string
	// VsDPDK and VsOVS are PPS.Median over the reference's median on the
	// same case in the same run (NaN if the reference has none).
	VsDPDK, VsOVS float64
	// Base is PPS.Median over the first row's (the multi-queue table's
	// baseline); NaN elsewhere.
	Base float64
	// IdleCPU summarises the CPU use right after the loop stopped.
	IdleCPU Summary
	// OtherLoad summarises RepResult.OtherLoad.
	OtherLoad Summary
	// Collapsed counts successful repetitions whose loop collapsed;
	// Retried counts the attempts thrown away for a collapse.
	Collapsed, Retried int
	// Lossy counts successful repetitions in which the generator or the
	// backend dropped frames; Dropped sums the drops they counted.
	Lossy   int
	Dropped uint64
	// PPSVals are the successful repetitions' rates, CycVals their
	// cycles per frame (repetitions with a cost), for the bootstrap.
	PPSVals, CycVals []float64
	// Cyc, Ns and Busy summarise the cost per frame: cycles, ns at the
	// TSC rate, share of the window busy forwarding (percent of a core).
	Cyc, Ns, Busy Summary
	// TSCHz is the median TSC rate the backend reported (0: unknown).
	TSCHz float64
	// CycVsDPDK is Cyc.Median over dpdk-io's on the same case.
	CycVsDPDK float64
	// CostErr is why a successful repetition had no cost (the first).
	CostErr string
	// GenCyc and GenBusy summarise the generator's cycles per frame and
	// busy share in the same windows.
	GenCyc, GenBusy Summary
}

// BuildRows groups results by case (in cases' order) and backend (in
// backends' order) and computes the ratios.
func BuildRows(results []RepResult, cases []Case, backends []string) []Row {
	var rows []Row
	for _, c := range cases {
		med, medCyc := map[string]float64{}, map[string]float64{}
		var caseRows []Row
		for _, b := range backends {
			var pps, idle, other, cyc, ns, busy, hz, gcyc, gbusy []float64
			r := Row{Backend: b, Case: c}
			seen := false
			for _, res := range results {
				if res.Backend != b || res.Case != c {
					continue
				}
				seen = true
				if res.Err != nil {
					r.Failed++
					if r.Err == "" {
						r.Err = firstLine(res.Err.Error())
					}
					continue
				}
				pps = append(pps, res.PPS)
				if res.Cost != nil {
					cyc = append(cyc, res.Cost.PerFrame())
					if v := res.Cost.NsPerFrame(); !math.IsNaN(v) {
						ns = append(ns, v)
						hz = append(hz, res.Cost.TSCHz)
					}
					if v := res.Cost.BusyPct(); !math.IsNaN(v) {
						busy = append(busy, v)
					}
				} else if res.CostErr != nil && r.CostErr == "" {
					r.CostErr = firstLine(res.CostErr.Error())
				}
				if g := res.GenCost; g != nil {
					gcyc = append(gcyc, g.PerFrame())
					if v := g.BusyPct(); !math.IsNaN(v) {
						gbusy = append(gbusy, v)
					}
				}
				if Collapsed(res.Samples) {
					r.Collapsed++
				}
				r.Retried += res.Retried
				if res.GenDrops > 0 || res.BackendDrops > 0 {
					r.Lossy++
					r.Dropped += uint64(max(res.GenDrops, 0) + max(res.BackendDrops, 0))
				}
				if !math.IsNaN(res.OtherLoad) {
					other = append(other, res.OtherLoad)
				}
				if res.IdleCPU != nil {
					idle = append(idle, res.IdleCPU.Best())
				}
			}
			if !seen {
				continue
			}
			r.PPS, r.IdleCPU, r.OtherLoad = Summarize(pps), Summarize(idle), Summarize(other)
			r.PPSVals, r.CycVals = pps, cyc
			r.Cyc, r.Ns, r.Busy = Summarize(cyc), Summarize(ns), Summarize(busy)
			r.GenCyc, r.GenBusy = Summarize(gcyc), Summarize(gbusy)
			if len(hz) > 0 {
				r.TSCHz = median(hz)
			}
			if r.PPS.N > 0 {
				med[b] = r.PPS.Median
			}
			if r.Cyc.N > 0 {
				medCyc[b] = r.Cyc.Median
			}
			caseRows = append(caseRows, r)
		}
		for i := range caseRows {
			caseRows[i].VsDPDK, caseRows[i].VsOVS, caseRows[i].Base, caseRows[i].CycVsDPDK = nan(), nan(), nan(), nan()
			if caseRows[i].Cyc.N > 0 {
				caseRows[i].CycVsDPDK = Ratio(caseRows[i].Cyc.Median, medCyc[RefDPDK])
			}
			if caseRows[i].PPS.N > 0 {
				caseRows[i].VsDPDK = Ratio(caseRows[i].PPS.Median, med[RefDPDK])
				caseRows[i].VsOVS = Ratio(caseRows[i].PPS.Median, med[RefOVS])
			}
		}
		rows = append(rows, caseRows...)
	}
	return rows
}

// SetBaseline fills Row.Base with each row's median over the median of
// the same backend's row on base.
func SetBaseline(rows []Row, base Case) {
	ref := map[string]float64{}
	for _, r := range rows {
		if r.Case == base && r.PPS.N > 0 {
			ref[r.Backend] = r.PPS.Median
		}
	}
	for i := range rows {
		rows[i].Base = nan()
		if rows[i].PPS.N > 0 {
			rows[i].Base = Ratio(rows[i].PPS.Median, ref[rows[i].Backend])
		}
	}
}

func fmtRatio(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", v)
}

// fmtLoad shows the median and worst other load of a row's repetitions.
func fmtLoad(s Summary) string {
	if s.N == 0 {
		return "-"
	}
	if s.N == 1 {
		return fmt.Sprintf("%.0f%%", s.Median)
	}
	return fmt.Sprintf("%.0f%% (max %.0f%%)", s.Median, s.Max)
}

func fmtPct(s Summary) string {
	if s.N == 0 {
		return "-"
	}
	if s.Median < 10 {
		return fmt.Sprintf("%.2f%%", s.Median)
	}
	return fmt.Sprintf("%.0f%%", s.Median)
}

// WriteTable prints the throughput table: one line per backend and case,
// then a note per row with failed repetitions. mq replaces the reference
// ratio columns with the factor over the first row.
func WriteTable(w io.Writer, rows []Row, mq bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := []string{"backend", "case", "Mpps", "min..max", "spread", "stdev", "Gbps"}
	if mq {
		head = append(head, "x baseline")
	} else {
		head = append(head, "x dpdk-io", "x ovs-dpdk", "idle CPU")
	}
	head = append(head, "other load", "reps ok")
	fmt.Fprintln(tw, "  "+strings.Join(head, "\t")+"\t")
	var notes []string
	for _, r := range rows {
		s := r.PPS
		cells := []string{r.Backend, r.Case.Name()}
		if s.N == 0 {
			cells = append(cells, "failed", "", "", "", "")
			if mq {
				cells = append(cells, "")
			} else {
				cells = append(cells, "", "", "")
			}
			cells = append(cells, "")
		} else {
			cells = append(cells, fmt.Sprintf("%.3f", s.Median/1e6), fmt.Sprintf("%.2f..%.2f", s.Min/1e6, s.Max/1e6),
				fmt.Sprintf("%.1f%%", s.SpreadPct()), fmt.Sprintf("%.1f%%", s.StdevPct()),
				fmt.Sprintf("%.2f", r.Case.Gbps(s.Median)))
			if mq {
				cells = append(cells, fmtRatio(r.Base))
			} else {
				cells = append(cells, fmtRatio(r.VsDPDK), fmtRatio(r.VsOVS), fmtPct(r.IdleCPU))
			}
			cells = append(cells, fmtLoad(r.OtherLoad))
		}
		cells = append(cells, fmt.Sprintf("%d/%d", s.N, s.N+r.Failed))
		fmt.Fprintln(tw, "  "+strings.Join(cells, "\t")+"\t")
		if r.Retried > 0 {
			notes = append(notes, fmt.Sprintf("  %s %s: %d attempt(s) thrown away and run again because the loop collapsed",
				r.Backend, r.Case.Name(), r.Retried))
		}
		if r.Collapsed > 0 {
			notes = append(notes, fmt.Sprintf("  %s %s: the loop collapsed in %d of %d repetitions (frames lost; see rate.svg and docs/bench.md)",
				r.Backend, r.Case.Name(), r.Collapsed, s.N))
		}
		if r.Lossy > 0 {
			notes = append(notes, fmt.Sprintf("  %s %s: frames dropped in %d of %d repetitions (%d in all, generator and backend): the loop carried fewer frames than seeded (docs/bench.md, Seeding)",
				r.Backend, r.Case.Name(), r.Lossy, s.N, r.Dropped))
		}
		if r.Failed > 0 {
			notes = append(notes, fmt.Sprintf("  %s %s: %d of %d repetitions failed: %s", r.Backend, r.Case.Name(), r.Failed, s.N+r.Failed, r.Err))
		}
	}
	tw.Flush()
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
}

// SetSplitBase fills Row.Base of the packed rows with each row's median
// over the median of the same backend on the split case of the same name
// among split (NaN where that was not measured).
func SetSplitBase(packed, split []Row) {
	for i := range packed {
		packed[i].Base = nan()
		if packed[i].PPS.N == 0 {
			continue
		}
		for _, r := range split {
			if r.Backend == packed[i].Backend && r.Case == packed[i].Case.Split() && r.PPS.N > 0 {
				packed[i].Base = Ratio(packed[i].PPS.Median, r.PPS.Median)
			}
		}
	}
}

// WritePackedTable prints the packed-ring table: per backend and case the
// rate, the ratio to dpdk-io on the same packed case, and the ratio to the
// backend's own split figure (Row.Base, see SetSplitBase).
func WritePackedTable(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  "+strings.Join([]string{"backend", "case", "Mpps", "min..max", "spread", "Gbps", "x dpdk-io packed", "x own split", "reps ok"}, "\t")+"\t")
	var notes []string
	for _, r := range rows {
		s := r.PPS
		cells := []string{r.Backend, r.Case.Name()}
		if s.N == 0 {
			cells = append(cells, "failed", "", "", "", "", "")
		} else {
			cells = append(cells, fmt.Sprintf("%.3f", s.Median/1e6), fmt.Sprintf("%.2f..%.2f", s.Min/1e6, s.Max/1e6),
				fmt.Sprintf("%.1f%%", s.SpreadPct()), fmt.Sprintf("%.2f", r.Case.Gbps(s.Median)),
				fmtRatio(r.VsDPDK), fmtRatio(r.Base))
		}
		cells = append(cells, fmt.Sprintf("%d/%d", s.N, s.N+r.Failed))
		fmt.Fprintln(tw, "  "+strings.Join(cells, "\t")+"\t")
		if r.Failed > 0 {
			notes = append(notes, fmt.Sprintf("  %s %s: %d of %d repetitions failed: %s", r.Backend, r.Case.Name(), r.Failed, s.N+r.Failed, r.Err))
		}
		if r.Lossy > 0 {
			notes = append(notes, fmt.Sprintf("  %s %s: frames dropped in %d of %d repetitions (%d in all)", r.Backend, r.Case.Name(), r.Lossy, s.N, r.Dropped))
		}
	}
	tw.Flush()
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
}

// IdleSummary condenses the idle probes.
type IdleSummary struct {
	// CPU is vhostd's CPU use over each idle gap, in percent of a core.
	CPU Summary
	// FirstUs and WarmUs are the delivery times in microseconds; FloorUs
	// the platform's wake-up floor (WakeFloor).
	FirstUs, WarmUs, FloorUs Summary
}

// SummarizeIdle condenses probes.
func SummarizeIdle(ps []IdleProbe) IdleSummary {
	var cpu, first, warm, floor []float64
	for _, p := range ps {
		cpu = append(cpu, p.CPU.Best())
		first = append(first, float64(p.First)/float64(time.Microsecond))
		warm = append(warm, float64(p.Warm)/float64(time.Microsecond))
		if p.Floor > 0 {
			floor = append(floor, float64(p.Floor)/float64(time.Microsecond))
		}
	}
	return IdleSummary{CPU: Summarize(cpu), FirstUs: Summarize(first), WarmUs: Summarize(warm), FloorUs: Summarize(floor)}
}

func passFail(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}

// WriteIdle prints the idle section.
func WriteIdle(w io.Writer, s IdleSummary, idle time.Duration) {
	fmt.Fprintf(w, "  vhostd CPU while idle (%v gaps, frontends connected): median %.3f%%, max %.3f%% of a core  [target <= 1%%: %s]\n",
		idle, s.CPU.Median, s.CPU.Max, passFail(s.CPU.Max <= 1))
	fmt.Fprintf(w, "  first frame after %v idle, A->B delivered: median %.1f us, min %.1f, max %.1f  [target <= 100 us: %s]\n",
		idle, s.FirstUs.Median, s.FirstUs.Min, s.FirstUs.Max, passFail(s.FirstUs.Max <= 100))
	fmt.Fprintf(w, "  a second frame right after the first: median %.1f us, max %.1f\n", s.WarmUs.Median, s.WarmUs.Max)
	if s.FloorUs.N > 0 {
		fmt.Fprintf(w, "  platform floor (eventfd wake of a thread in epoll_wait on the backend CPU after the same idle): median %.1f us, max %.1f\n",
			s.FloorUs.Median, s.FloorUs.Max)
	}
}

func csvFloat(v float64, prec int) string {
	if math.IsNaN(v) {
		return ""
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

// Section is a named group of rows in results.csv.
type Section struct {
	Name string
	Rows []Row
}

// WriteResultsCSV writes one line per Row, sections in order.
func WriteResultsCSV(w io.Writer, sections []Section) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"section", "backend", "case", "frame_bytes", "mrg_rxbuf", "queues", "pollers",
		"reps_ok", "reps_failed", "mpps_median", "mpps_min", "mpps_max", "spread_pct", "stdev_pct",
		"gbps_median", "ratio_dpdk_io", "ratio_ovs_dpdk", "ratio_baseline", "idle_cpu_pct_median",
		"other_load_pct_median", "other_load_pct_max", "reps_with_drops", "dropped", "error",
		"mem", "reps_with_cost", "cycles_per_frame_median", "cycles_per_frame_min", "cycles_per_frame_max", "ns_per_frame_median",
		"busy_pct_median", "tsc_hz", "cycles_ratio_dpdk_io"})
	for _, sect := range sections {
		sec := sect.Name
		for _, r := range sect.Rows {
			s := r.PPS
			rec := []string{sec, r.Backend, r.Case.Name(), strconv.Itoa(r.Case.Frame), onOff(r.Case.MrgRxbuf),
				strconv.Itoa(max(r.Case.Queues, 1)), strconv.Itoa(r.Case.Pollers),
				strconv.Itoa(s.N), strconv.Itoa(r.Failed)}
			if s.N > 0 {
				rec = append(rec, csvFloat(s.Median/1e6, 4), csvFloat(s.Min/1e6, 4), csvFloat(s.Max/1e6, 4),
					csvFloat(s.SpreadPct(), 2), csvFloat(s.StdevPct(), 2), csvFloat(r.Case.Gbps(s.Median), 3))
			} else {
				rec = append(rec, "", "", "", "", "", "")
			}
			idle := ""
			if r.IdleCPU.N > 0 {
				idle = csvFloat(r.IdleCPU.Median, 3)
			}
			rec = append(rec, csvFloat(r.VsDPDK, 3), csvFloat(r.VsOVS, 3), csvFloat(r.Base, 3), idle)
			if r.OtherLoad.N > 0 {
				rec = append(rec, csvFloat(r.OtherLoad.Median, 1), csvFloat(r.OtherLoad.Max, 1))
			} else {
				rec = append(rec, "", "")
			}
			rec = append(rec, strconv.Itoa(r.Lossy), strconv.FormatUint(r.Dropped, 10), r.Err)
			rec = append(rec, r.Case.Mem(), strconv.Itoa(r.Cyc.N))
			if r.Cyc.N > 0 {
				rec = append(rec, csvFloat(r.Cyc.Median, 1), csvFloat(r.Cyc.Min, 1), csvFloat(r.Cyc.Max, 1))
			} else {
				rec = append(rec, "", "", "")
			}
			ns, busy, hz := "", "", ""
			if r.Ns.N > 0 {
				ns = csvFloat(r.Ns.Median, 2)
			}
			if r.Busy.N > 0 {
				busy = csvFloat(r.Busy.Median, 1)
			}
			if r.TSCHz > 0 {
				hz = csvFloat(r.TSCHz, 0)
			}
			rec = append(rec, ns, busy, hz, csvFloat(r.CycVsDPDK, 3))
			cw.Write(rec)
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteRepsCSV writes one line per repetition.
func WriteRepsCSV(w io.Writer, results []RepResult) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"backend", "case", "rep", "mpps", "window_s", "max_sample_gap_s", "idle_cpu_pct", "other_load_pct", "loop_collapsed", "retried",
		"seed_bursts", "gen_dropped", "backend_dropped", "error",
		"mem", "cycles", "frames", "cycles_per_frame", "ns_per_frame", "busy_pct", "tsc_hz", "cost_error",
		"gen_cycles_per_frame", "gen_busy_pct", "xcore_rtt_ns"})
	count := func(v int64) string {
		if v < 0 {
			return ""
		}
		return strconv.FormatInt(v, 10)
	}
	for _, r := range results {
		rec := []string{r.Backend, r.Case.Name(), strconv.Itoa(r.Rep)}
		if r.Err != nil {
			rec = append(rec, "", "", "", "", "", "", strconv.Itoa(r.Retried), strconv.Itoa(r.Seed), count(r.GenDrops), count(r.BackendDrops),
				firstLine(r.Err.Error()))
		} else {
			idle := ""
			if r.IdleCPU != nil {
				idle = csvFloat(r.IdleCPU.Best(), 3)
			}
			rec = append(rec, csvFloat(r.PPS/1e6, 4), csvFloat(r.Span, 3), csvFloat(MaxGap(r.Samples), 3), idle, csvFloat(r.OtherLoad, 1),
				strconv.FormatBool(Collapsed(r.Samples)), strconv.Itoa(r.Retried), strconv.Itoa(r.Seed), count(r.GenDrops), count(r.BackendDrops), "")
		}
		rec = append(rec, r.Case.Mem())
		if c := r.Cost; c != nil {
			rec = append(rec, strconv.FormatUint(c.Cycles, 10), strconv.FormatUint(c.Frames, 10), csvFloat(c.PerFrame(), 1),
				csvFloat(c.NsPerFrame(), 2), csvFloat(c.BusyPct(), 1), csvFloat(c.TSCHz, 0), "")
		} else {
			e := ""
			if r.CostErr != nil {
				e = firstLine(r.CostErr.Error())
			}
			rec = append(rec, "", "", "", "", "", "", e)
		}
		if g := r.GenCost; g != nil {
			rec = append(rec, csvFloat(g.PerFrame(), 1), csvFloat(g.BusyPct(), 1))
		} else {
			rec = append(rec, "", "")
		}
		rec = append(rec, csvFloat(r.XCoreNs, 1))
		cw.Write(rec)
	}
	cw.Flush()
	return cw.Error()
}

// WriteSamplesCSV writes the rate-over-time series: one line per sampling
// interval, at the interval's end.
func WriteSamplesCSV(w io.Writer, results []RepResult) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"backend", "case", "rep", "t_s", "mpps"})
	for _, r := range results {
		for _, p := range Rates(r.Samples) {
			cw.Write([]string{r.Backend, r.Case.Name(), strconv.Itoa(r.Rep), csvFloat(p.T, 3), csvFloat(p.V/1e6, 4)})
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteIdleCSV writes one line per idle probe.
func WriteIdleCSV(w io.Writer, ps []IdleProbe) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"probe", "idle_s", "cpu_pct_schedstat", "cpu_pct_stat", "first_frame_us", "second_frame_us", "wake_floor_us"})
	for i, p := range ps {
		cw.Write([]string{strconv.Itoa(i + 1), csvFloat(p.CPU.Interval.Seconds(), 3), csvFloat(p.CPU.SchedPct, 4),
			csvFloat(p.CPU.StatPct, 2), csvFloat(float64(p.First)/1e3, 2), csvFloat(float64(p.Warm)/1e3, 2),
			csvFloat(float64(p.Floor)/1e3, 2)})
	}
	cw.Flush()
	return cw.Error()
}
