package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// PrintReport writes the report's header, tables and idle section, and
// returns the rows it built (for the files).
func PrintReport(w io.Writer, opt Options, o *Outcome) (rows, mqRows []Row) {
	mode := "full"
	if opt.Quick {
		mode = "quick"
	}
	fmt.Fprintf(w, "\nvhostd bench, %s (%s, %.0f s)\n", o.Start.Format("2006-01-02 15:04"), mode, time.Since(o.Start).Seconds())
	fmt.Fprintf(w, "machine: %s\n", machineInfo())
	seed := fmt.Sprintf("tx_first %d", opt.SeedBursts)
	if opt.SeedBursts == 0 {
		seed = fmt.Sprintf("seeded with %d frames per port: tx_first %d", DefaultSeedFrames, SeedBursts(0, Case{Queues: 1}))
	}
	fmt.Fprintf(w, "generator: dpdk-testpmd, 2 x net_virtio_user, mac closed loop (%s), CPU %d; backend on CPU %d\n",
		seed, opt.GenCPU, opt.BackendCPU)
	fmt.Fprintf(w, "%d repetition(s) of %v after %v warm-up; Mpps = frames received back by the generator, both ports; load average before %s, after %s\n",
		opt.Reps, opt.Window, opt.Warmup, o.LoadBefore, loadAvg())
	if o.PoolNote != "" {
		fmt.Fprintf(w, "%s: medians, ratios and intervals below include them\n", o.PoolNote)
	}
	if o.Huge != nil || o.HugeErr != nil {
		fmt.Fprintf(w, "%s\n", o.Huge.Summary())
		if o.HugeErr != nil {
			fmt.Fprintf(w, "  hugepage setup failed: %v (measured without hugepages only)\n", o.HugeErr)
		}
	}

	for i, t := range []Topology{VMToVM, VMUplink} {
		cs := CasesOf(o.Cases, t)
		if len(cs) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s throughput (median over repetitions; ratios of medians in this run):\n", t.Title())
		if t == VMUplink {
			fmt.Fprintf(w, "  generator port 1 = the DPDK peer behind the backend's uplink (net_virtio_user on its net_vhost socket); each frame crosses the backend once\n")
		}
		rs := BuildRows(o.Results, cs, o.Names)
		WriteTable(w, rs, false)
		fmt.Fprintf(w, "\n%s cost per frame (the backend's busy cycles over the frames it forwarded, over the window; median over repetitions):\n", t.Title())
		WriteCostTable(w, rs)
		fmt.Fprintf(w, "  %s\n", TSCLine(rs))
		WriteMachineState(w, o.Results, cs, o.Names, opt.GenCPU, opt.BackendCPU)
		WriteLevels(w, o.Results, cs, o.Names)
		if cis := RatioCIs(rs); len(cis) > 0 {
			fmt.Fprintf(w, "\n%s ratios with %.0f%% confidence intervals (ratio of medians; percentile bootstrap, %d resamples, seed %d; reps for +-%.0f%%: at this spread, per backend):\n",
				t.Title(), 100*BootLevel, BootResamples, BootSeed, 100*TargetHalfWidth)
			WriteRatioCIs(w, cis)
		}
		for _, n := range o.Names {
			why, ok := o.Skipped[SkipKey(n, t)]
			if g, all := o.Skipped[n]; all && i == 0 {
				why, ok = g, true
			}
			if ok {
				fmt.Fprintf(w, "  %s skipped: %s\n", n, strings.ReplaceAll(strings.TrimRight(why, "\n"), "\n", "\n    "))
			}
		}
		rows = append(rows, rs...)
	}

	if len(o.PackedResults) > 0 {
		fmt.Fprintf(w, "\nPacked rings, VM-to-VM (generator packed_vq=1; x dpdk-io = over DPDK's backend on packed rings; x split = over the same backend's split figure of the same case in the VM-to-VM table above, this run):\n")
		o.PackedRows = BuildRows(o.PackedResults, o.PackedCases, o.PackedNames)
		SetSplitBase(o.PackedRows, rows)
		WritePackedTable(w, o.PackedRows)
	}

	if len(o.TSOReps) > 0 || o.TSOErr != nil {
		fmt.Fprintf(w, "\nTSO VM-to-VM: 64 KiB TCP/IPv4 segments (gso TCPV4, MSS %d, partial checksum) from tsogen port A to port B, one way, no hugepages, B's receive buffers %s; Gbps = TCP payload delivered to B over the window; x = ratio of medians; of memcpy = over one core's copy bandwidth measured in this run on the backend's CPU:\n", tsoMSS, rxBufWords(opt.TSORxBuf))
		if o.TSOErr != nil {
			fmt.Fprintf(w, "  not run: %v\n", o.TSOErr)
		} else {
			o.TSORows = BuildTSORows(o.TSOReps, o.TSOMem, o.TSONames)
			WriteTSOTable(w, o.TSORows, o.TSOMem)
		}
	}

	if len(o.MQResults) > 0 {
		fmt.Fprintf(w, "\nMulti-queue, backend confined to CPU %d (qN = queue pairs per generator port, pN = vhostd --pollers; x baseline = over the same backend's q1 p1):\n", opt.BackendCPU)
		mqRows = BuildRows(o.MQResults, o.MQCases, o.MQNames)
		SetBaseline(mqRows, o.MQCases[0])
		WriteTable(w, mqRows, true)
		fmt.Fprintf(w, "  Not measurable on %d CPUs: scaling across cores (two pollers on two cores needs a third core for the generator).\n", runtime.NumCPU())
	}

	if o.IdleRun {
		fmt.Fprintf(w, "\nIdle (own vhostd on CPU %d, two Go vhost-user frontends from vhost/vhosttest spinning on CPU %d):\n", opt.BackendCPU, opt.GenCPU)
		if len(o.Probes) > 0 {
			WriteIdle(w, SummarizeIdle(o.Probes), opt.Idle)
		}
		if o.IdleErr != nil {
			fmt.Fprintf(w, "  FAILED after %d probe(s): %v\n", len(o.Probes), o.IdleErr)
		} else if len(o.Probes) == 0 {
			fmt.Fprintf(w, "  not run (interrupted)\n")
		}
	}
	return rows, mqRows
}

// PrintEnd writes the report's last lines: the files and the cleanup check.
func PrintEnd(w io.Writer, o *Outcome, files []string) {
	fmt.Fprintf(w, "\nfiles: %s (logs in %s)\n", strings.Join(files, ", "), o.LogDir)
	if len(o.Left) == 0 {
		fmt.Fprintf(w, "cleanup: ok (%d processes stopped, %d temporary directories and %d DPDK runtime directories removed)\n",
			o.Pids, o.Dirs, o.Prefixes)
	} else {
		fmt.Fprintf(w, "cleanup: LEFT BEHIND:\n  %s\n", strings.Join(o.Left, "\n  "))
	}
}

// WriteOutputs writes the CSVs and the plot into opt.Out and returns the
// names of the files written.
func WriteOutputs(opt Options, o *Outcome, rows, mqRows []Row) ([]string, error) {
	// This run's repetitions only: pooled ones are in their own run's
	// reps.csv already.
	var all []RepResult
	for _, r := range append(append(append([]RepResult(nil), o.Results...), o.MQResults...), o.PackedResults...) {
		if !r.Pooled {
			all = append(all, r)
		}
	}
	var sections []Section
	var panels []Panel
	for _, t := range []Topology{VMToVM, VMUplink} {
		var rs []Row
		for _, r := range rows {
			if r.Case.Topology == t {
				rs = append(rs, r)
			}
		}
		if len(rs) > 0 {
			sections = append(sections, Section{string(t), rs})
		}
		panels = append(panels, RatePanels(o.Results, CasesOf(o.Cases, t), o.Names, t.Title()+" ", opt.Warmup.Seconds())...)
	}
	if len(o.PackedRows) > 0 {
		sections = append(sections, Section{"packed", o.PackedRows})
		panels = append(panels, RatePanels(o.PackedResults, o.PackedCases, o.PackedNames, "packed ", opt.Warmup.Seconds())...)
	}
	if len(mqRows) > 0 {
		sections = append(sections, Section{"mq", mqRows})
	}
	panels = append(panels, RatePanels(o.MQResults, o.MQCases, o.MQNames, "multi-queue ", opt.Warmup.Seconds())...)
	type output struct {
		name string
		f    func(io.Writer) error
	}
	var cis []RatioCI
	for _, sec := range sections {
		if sec.Name != "mq" && sec.Name != "packed" {
			cis = append(cis, RatioCIs(sec.Rows)...)
		}
	}
	outs := []output{
		{"results.csv", func(w io.Writer) error { return WriteResultsCSV(w, sections) }},
		{"ratios.csv", func(w io.Writer) error { return WriteRatiosCSV(w, cis) }},
		{"reps.csv", func(w io.Writer) error { return WriteRepsCSV(w, all) }},
		{"samples.csv", func(w io.Writer) error { return WriteSamplesCSV(w, all) }},
		{"rate.svg", func(w io.Writer) error {
			return WriteSVG(w, "Frames per second over time, per backend (each line one repetition)", panels)
		}},
	}
	if len(o.TSOReps) > 0 || len(o.TSOMem) > 0 {
		outs = append(outs, output{"tso.csv", func(w io.Writer) error { return WriteTSOCSV(w, o.TSOReps, o.TSOMem) }})
	}
	if len(o.Probes) > 0 {
		outs = append(outs, output{"idle.csv", func(w io.Writer) error { return WriteIdleCSV(w, o.Probes) }})
	}
	var files []string
	for _, out := range outs {
		if err := writeFile(filepath.Join(opt.Out, out.name), out.f); err != nil {
			return files, err
		}
		files = append(files, out.name)
	}
	return files, nil
}

func writeFile(path string, f func(io.Writer) error) error {
	fh, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f(fh); err != nil {
		fh.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// machineInfo names the CPU model, the CPU count and the kernel, so
// reports from different machines are not compared by mistake.
func machineInfo() string {
	model := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s, %d CPUs, Linux %s", model, runtime.NumCPU(), kernel)
}

// loadAvg is /proc/loadavg's three load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
