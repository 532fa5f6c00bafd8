// Command bench is `make bench`: it measures vhostd side by side with DPDK's
// own vhost-user backend (testpmd io forwarding) and Open vSwitch with
// DPDK, on the same traffic generator in the same run, and reports
// throughput, ratios, rate over time, vhostd's idle CPU use and first-frame
// latency, and multi-queue scaling. See docs/bench.md.
//
// It needs root, two CPUs, dpdk-testpmd, and for the OVS rows
// openvswitch-switch-dpdk (.ci/bench-deps installs them). Every process it
// starts is stopped by PID and every file it creates outside the output
// directory is removed; the last line says whether anything was left.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	code, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// Outcome is everything one run measured, for the report and the files.
type Outcome struct {
	Start              time.Time
	LoadBefore         string
	Cases, MQCases     []Case
	Names, MQNames     []string
	Results, MQResults []RepResult
	// PackedCases and PackedResults are the packed-ring section, on
	// PackedNames (vhostd and dpdk-io of the backends run).
	PackedCases   []Case
	PackedNames   []string
	PackedResults []RepResult
	PackedRows    []Row // built by PrintReport
	// TSOReps and TSOMem are the TSO section's repetitions and memcpy
	// measurements on TSONames; TSOErr why the section could not run;
	// TSORows are built by PrintReport.
	TSOReps              []TSORep
	TSOMem               []MemcpyRep
	TSONames             []string
	TSOErr               error
	TSORows              []TSORow
	Probes               []IdleProbe
	IdleErr              error
	IdleRun              bool
	Skipped              map[string]string
	Left                 []string
	Pids, Dirs, Prefixes int
	LogDir               string
	// Huge is the hugepage setup (nil when no case runs on hugepages);
	// HugeErr why it failed.
	Huge    *HugeSetup
	HugeErr error
	// PoolNote says what --pool added (or why it could not).
	PoolNote string
}

func run(args []string) (int, error) {
	opt, err := ParseOptions(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0, nil
	}
	if err != nil {
		return 2, err
	}
	if os.Geteuid() != 0 {
		return 1, fmt.Errorf("needs root (DPDK without hugepages, OVS, vhostd sockets)")
	}
	if n := runtime.NumCPU(); n <= max(opt.GenCPU, opt.BackendCPU) {
		return 1, fmt.Errorf("needs CPUs %d and %d, this machine has %d", opt.GenCPU, opt.BackendCPU, n)
	}
	// Go (1.25+) lowers GOMAXPROCS to the affinity mask when it changes:
	// after PinProcess that would be 1, and a thread woken from a
	// syscall (WakeFloor's waiter) would wait for the spinning probe to
	// be preempted before it could run. Fixing it keeps two Ps.
	runtime.GOMAXPROCS(runtime.NumCPU())
	if err := PinProcess(opt.GenCPU); err != nil {
		return 1, err
	}
	if opt.VhostdBin, err = filepath.Abs(opt.VhostdBin); err != nil {
		return 1, err
	}
	if opt.TSOGen, err = filepath.Abs(opt.TSOGen); err != nil {
		return 1, err
	}
	backends, err := makeBackends(opt)
	if err != nil {
		return 2, err
	}
	o := &Outcome{Start: time.Now(), LoadBefore: loadAvg(), LogDir: filepath.Join(opt.Out, "logs")}
	if err := os.RemoveAll(o.LogDir); err != nil {
		return 1, fmt.Errorf("clear %s: %w", o.LogDir, err)
	}
	if err := os.MkdirAll(o.LogDir, 0o755); err != nil {
		return 1, fmt.Errorf("output directory: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// measure gives the hugepages back itself (and reports it); this is
	// for a panic on the way.
	defer func() { o.Huge.Release() }()

	measure(ctx, opt, backends, o)

	repf, err := os.Create(filepath.Join(opt.Out, "report.txt"))
	if err != nil {
		return 1, fmt.Errorf("report: %w", err)
	}
	defer repf.Close()
	w := io.MultiWriter(os.Stdout, repf)
	rows, mqRows := PrintReport(w, opt, o)
	files, werr := WriteOutputs(opt, o, rows, mqRows)
	PrintEnd(w, o, files)

	switch {
	case werr != nil:
		return 1, werr
	case ctx.Err() != nil:
		return 130, fmt.Errorf("interrupted")
	case len(o.Left) > 0:
		return 1, fmt.Errorf("left processes or files behind")
	case opt.Throughput && !vhostdMeasured(rows):
		return 1, fmt.Errorf("no vhostd measurement succeeded")
	case tsoVhostdFailures(o.TSOReps) > 0:
		return 1, fmt.Errorf("%d vhostd TSO repetition(s) failed (see the TSO section)", tsoVhostdFailures(o.TSOReps))
	case vhostdFailures(o.Results, o.MQResults, o.PackedResults) > 0:
		return 1, fmt.Errorf("%d vhostd repetition(s) failed (see the notes under the tables)", vhostdFailures(o.Results, o.MQResults, o.PackedResults))
	case o.IdleErr != nil:
		return 1, fmt.Errorf("idle probe: %w", o.IdleErr)
	}
	return 0, nil
}

// measure runs the three sections (throughput VM-to-VM and VM-to-uplink,
// multi-queue, idle), then
// removes what they left and checks nothing remains. Progress goes to
// stderr.
func measure(ctx context.Context, opt Options, backends []Backend, o *Outcome) {
	tr := NewTracker()
	prog := os.Stderr
	r := NewRunner(opt, tr, o.LogDir, prog)
	for _, b := range backends {
		o.Names = append(o.Names, b.Name())
	}
	huge := opt.Huge
	if slices.Contains(huge, true) {
		o.Huge, o.HugeErr = SetupHugepages(backendByName(backends, RefOVS) != nil)
		switch {
		case o.HugeErr != nil:
			fmt.Fprintf(prog, "bench: hugepages: %v: measuring without hugepages only\n", o.HugeErr)
			huge = slices.DeleteFunc(slices.Clone(huge), func(h bool) bool { return h })
		case !o.Huge.Plan.Run:
			huge = slices.DeleteFunc(slices.Clone(huge), func(h bool) bool { return h })
		case !o.Huge.Plan.OVS && backendByName(backends, RefOVS) != nil:
			r.Skipped[HugeSkipKey(RefOVS)] = o.Huge.Plan.Note
		}
		fmt.Fprintf(prog, "bench: %s\n", o.Huge.Summary())
		if o.HugeErr == nil && o.Huge.Plan.Run {
			if err := r.UseHugepages(o.Huge.Dir); err != nil {
				fmt.Fprintf(prog, "bench: hugepages: %v: measuring without hugepages only\n", err)
				o.HugeErr = err
				huge = slices.DeleteFunc(slices.Clone(huge), func(h bool) bool { return h })
			}
		}
	}
	if len(huge) == 0 {
		huge = []bool{false}
	}
	if opt.VMVM && opt.Throughput {
		o.Cases = append(o.Cases, Cases(opt.Frames, opt.Mrg, huge, VMToVM)...)
	}
	if opt.Uplink && opt.Throughput {
		o.Cases = append(o.Cases, Cases(opt.Frames, opt.Mrg, huge, VMUplink)...)
	}
	fmt.Fprintf(prog, "bench: %d case(s) x %d backend(s) x %d rep(s), warm-up %v, window %v; generator on CPU %d, backend on CPU %d\n",
		len(o.Cases), len(backends), opt.Reps, opt.Warmup, opt.Window, opt.GenCPU, opt.BackendCPU)
	o.Results = r.Throughput(ctx, backends, o.Cases)
	if len(opt.Pool) > 0 {
		pooled, note, err := PoolFiles(opt.Pool, o.Cases)
		if err != nil {
			o.PoolNote = err.Error()
		} else {
			o.Results = append(o.Results, pooled...)
			o.PoolNote = note
		}
		fmt.Fprintf(prog, "bench: %s\n", o.PoolNote)
	}

	var packedBackends []Backend
	for _, n := range []string{"vhostd", RefDPDK} {
		if b := backendByName(backends, n); b != nil {
			packedBackends = append(packedBackends, b)
			o.PackedNames = append(o.PackedNames, n)
		}
	}
	if opt.Packed && opt.VMVM && ctx.Err() == nil && len(packedBackends) > 0 {
		o.PackedCases = PackedCases(opt.Frames, opt.Mrg[0])
		fmt.Fprintf(prog, "bench: packed rings: %d case(s) on %s\n", len(o.PackedCases), strings.Join(o.PackedNames, ", "))
		o.PackedResults = r.Throughput(ctx, packedBackends, o.PackedCases)
	}

	if opt.TSO && opt.VMVM && ctx.Err() == nil {
		tb := TSOBackends(backends)
		for _, b := range tb {
			o.TSONames = append(o.TSONames, b.Name())
		}
		if _, err := os.Stat(opt.TSOGen); err != nil {
			o.TSOErr = fmt.Errorf("tsogen: %w (go build -o %s ./test/bench/tsogen)", err, opt.TSOGen)
			fmt.Fprintf(prog, "bench: TSO: %v\n", o.TSOErr)
		} else {
			fmt.Fprintf(prog, "bench: TSO: 64 KiB TCP segments VM-to-VM on %s, and memcpy on CPU %d\n", strings.Join(o.TSONames, ", "), opt.BackendCPU)
			o.TSOReps, o.TSOMem = r.TSO(ctx, tb, opt.TSOGen)
		}
	}

	var mqBackends []Backend
	for _, n := range opt.MQBackends {
		if b := backendByName(backends, n); b != nil {
			mqBackends = append(mqBackends, b)
			o.MQNames = append(o.MQNames, n)
		}
	}
	if opt.MQ && ctx.Err() == nil && len(mqBackends) > 0 {
		o.MQCases = MQCases(opt.Frames[0], opt.Mrg[0], opt.Quick)
		fmt.Fprintf(prog, "bench: multi-queue: %d configuration(s) on %s\n", len(o.MQCases), strings.Join(o.MQNames, ", "))
		o.MQResults = r.Throughput(ctx, mqBackends, o.MQCases)
	}

	o.IdleRun = opt.IdleProbes > 0 && backendByName(backends, "vhostd") != nil
	if o.IdleRun && ctx.Err() == nil {
		fmt.Fprintf(prog, "bench: idle CPU and first-frame latency: %d probe(s) after %v idle\n", opt.IdleProbes, opt.Idle)
		o.Probes, o.IdleErr = IdleProbes(ctx, opt, tr, o.LogDir, opt.IdleProbes)
	}

	tr.RemoveAll()
	if o.Huge != nil {
		if err := o.Huge.Release(); err != nil {
			o.Left = append(o.Left, "hugepages: "+err.Error())
		}
		fmt.Fprintf(prog, "bench: hugepages given back: %s\n", o.Huge.Released)
	}
	o.Left = append(o.Left, tr.Leftovers()...)
	o.Pids, o.Dirs, o.Prefixes = tr.Counts()
	o.Skipped = r.Skipped
}

func makeBackends(opt Options) ([]Backend, error) {
	var out []Backend
	for _, n := range opt.Backends {
		switch n {
		case "vhostd":
			out = append(out, &Vhostd{Bin: opt.VhostdBin})
		case RefDPDK:
			out = append(out, DPDKRef{})
		case RefOVS:
			out = append(out, &OVS{Vswitchd: opt.OVSVswitchd})
		default:
			return nil, fmt.Errorf("unknown backend %q (want vhostd, %s, %s)", n, RefDPDK, RefOVS)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no backends")
	}
	return out, nil
}

func backendByName(bs []Backend, name string) Backend {
	for _, b := range bs {
		if b.Name() == name {
			return b
		}
	}
	return nil
}

func vhostdMeasured(rows []Row) bool {
	for _, r := range rows {
		if r.Backend == "vhostd" && r.PPS.N > 0 {
			return true
		}
	}
	return false
}

// vhostdFailures counts failed vhostd repetitions: a product failure fails
// the bench (the outputs are written all the same).
func vhostdFailures(sets ...[]RepResult) int {
	n := 0
	for _, rs := range sets {
		for _, r := range rs {
			if r.Backend == "vhostd" && r.Err != nil {
				n++
			}
		}
	}
	return n
}
