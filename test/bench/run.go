package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vhostd/vhostd/test/testpmd"
)

// RepResult is one repetition of one backend on one case.
type RepResult struct {
	Backend string
	Case    Case
	Rep     int
	// PPS is the generator's total RX rate over the window (both ports,
	// so both directions together); Span the exact window length.
	PPS, Span float64
	// Samples is the RX counter from the seed to the window's end.
	Samples []Sample
	// IdleCPU is the backend's CPU use over Options.Idle right after the
	// loop stopped, with the generator still connected; nil if not
	// measured.
	IdleCPU *CPUUse
	// OtherLoad is the share of the two CPUs' time taken by anything but
	// the bench's processes during the loop (see Interference); NaN if
	// unknown.
	OtherLoad float64
	// Retried counts earlier attempts of this repetition thrown away
	// because their loop collapsed (Options.RetryCollapsed).
	Retried int
	// Seed is N of the "start tx_first N" that seeded the loop.
	Seed int
	// Cost is the backend's forwarding cost over the window (CostMeter);
	// nil if not measured, with CostErr saying why.
	Cost    *Cost
	CostErr error
	// GenCost is the generator's cost over the same window (nil if not
	// measured).
	GenCost *Cost
	// GenDrops is what the generator lost from the seed to the loop's
	// stop (FwdDrops); BackendDrops what the backend counted as dropped
	// (DropCounter), -1 if unknown. In a closed loop every lost frame is
	// gone for good: non-zero means the loop carried fewer frames than
	// seeded.
	GenDrops, BackendDrops int64
	// Err is why the repetition failed (PPS is then not valid).
	Err error
	// XCoreNs is the cross-core round trip between the generator's and
	// the backend's CPUs measured just before the repetition
	// (CrossCoreRTT); NaN if not measured.
	XCoreNs float64
	// Pooled marks a repetition of an earlier run (--pool): it has a
	// rate and a cost, nothing else.
	Pooled bool
}

// Runner runs measurements and remembers which backends cannot run.
type Runner struct {
	opt    Options
	tr     *Tracker
	logDir string
	out    io.Writer
	seq    int
	// Skipped maps a backend name, or SkipKey of a backend and a
	// topology, to why it was not (or no longer) measured.
	Skipped map[string]string
	// startFails counts a backend's start failures in a row, per
	// SkipKey.
	startFails map[string]int
	// hugeDir is the hugetlbfs mount of the hugepage cases, testpmdBin
	// the testpmd wrapper that runs on it (UseHugepages).
	hugeDir, testpmdBin string
	// xcoreFailed: the cross-core probe failed once and was reported.
	xcoreFailed bool
}

// UseHugepages readies the hugepage cases: DPDK's --huge-dir is dir, and
// testpmd runs through a wrapper that drops the --no-huge the testpmd
// package always passes (HugeWrapper).
func (r *Runner) UseHugepages(dir string) error {
	d, err := r.tr.TempDir("vhb")
	if err != nil {
		return err
	}
	bin := filepath.Join(d, "dpdk-testpmd-huge")
	if err := os.WriteFile(bin, []byte(HugeWrapper(testpmd.DefaultBinary)), 0o755); err != nil {
		return fmt.Errorf("testpmd hugepage wrapper: %w", err)
	}
	r.hugeDir, r.testpmdBin = dir, bin
	return nil
}

// HugeWrapper is a shell script that runs prog with its arguments but
// without "--no-huge": the testpmd package (test/testpmd) always passes
// it, and the hugepage cases must not. The hugepage EAL options
// (--in-memory, --huge-dir, ...) come in through Config.ExtraEALArgs.
func HugeWrapper(prog string) string {
	return "#!/bin/sh\n" +
		"# vhostd-bench: " + prog + " on hugepages; drops the --no-huge of test/testpmd.\n" +
		"for a; do shift; [ \"$a\" = --no-huge ] || set -- \"$@\" \"$a\"; done\n" +
		"exec " + prog + " \"$@\"\n"
}

// HugeSkipKey is the key of Runner.Skipped for backend name in the
// hugepage cases alone.
func HugeSkipKey(name string) string { return name + " huge" }

// maxStartFails is how many times in a row a reference backend may fail to
// start before the run goes on without it: once can be other load on the
// machine, twice in a row is this machine.
const maxStartFails = 2

// NewRunner returns a Runner writing logs to logDir and progress to out.
func NewRunner(opt Options, tr *Tracker, logDir string, out io.Writer) *Runner {
	return &Runner{opt: opt, tr: tr, logDir: logDir, out: out, Skipped: map[string]string{}, startFails: map[string]int{}}
}

// Throughput measures every backend on every case, opt.Reps times. The
// backends of one case run back to back, and their order rotates with each
// repetition, so a burst of noise from other load on the machine hits them
// alike rather than always the same one.
func (r *Runner) Throughput(ctx context.Context, backends []Backend, cases []Case) []RepResult {
	var res []RepResult
	for _, b := range backends {
		if err := b.Check(); err != nil {
			r.skip(b.Name(), err)
		}
	}
	for rep := 1; rep <= r.opt.Reps; rep++ {
		for _, c := range cases {
			for i := range backends {
				b := backends[(i+rep-1)%len(backends)]
				if r.skipped(b, c) || !applies(b, c) {
					continue
				}
				if ctx.Err() != nil {
					return res
				}
				rr := r.runOne(ctx, b, c, rep)
				// A collapsed loop measures the stall that killed it
				// (usually other load), not the backend: try again.
				for rr.Err == nil && Collapsed(rr.Samples) && rr.Retried < r.opt.RetryCollapsed && ctx.Err() == nil {
					fmt.Fprintf(r.out, "  rep %d/%d  %-28s %-9s loop collapsed at %.3f Mpps (other load %.0f%%): once more\n",
						rep, r.opt.Reps, c.Name(), b.Name(), rr.PPS/1e6, rr.OtherLoad)
					n := rr.Retried + 1
					rr = r.runOne(ctx, b, c, rep)
					rr.Retried = n
				}
				res = append(res, rr)
				if rr.Err != nil {
					fmt.Fprintf(r.out, "  rep %d/%d  %-28s %-9s FAILED: %s\n", rep, r.opt.Reps, c.Name(), b.Name(), firstLine(rr.Err.Error()))
				} else {
					idle := ""
					if rr.IdleCPU != nil {
						idle = fmt.Sprintf("  (idle after: %.1f%% CPU)", rr.IdleCPU.Best())
					}
					fmt.Fprintf(r.out, "  rep %d/%d  %-28s %-9s %7.3f Mpps  (other load on the CPUs %.0f%%; seed %d, dropped %s)%s\n",
						rep, r.opt.Reps, c.Name(), b.Name(), rr.PPS/1e6, rr.OtherLoad, rr.Seed, fmtDrops(rr.GenDrops, rr.BackendDrops), idle)
				}
			}
		}
	}
	return res
}

// applies tells whether case c means anything for backend b: only vhostd
// has pollers to vary.
func applies(b Backend, c Case) bool {
	_, isVhostd := b.(*Vhostd)
	return c.Pollers <= 1 || isVhostd
}

// SkipKey is the key of Runner.Skipped for backend name on topology t
// alone: a backend may run VM-to-VM and still be unable to run with an
// uplink.
func SkipKey(name string, t Topology) string { return name + " " + string(t) }

func (r *Runner) skipped(b Backend, c Case) bool {
	_, all := r.Skipped[b.Name()]
	_, topo := r.Skipped[SkipKey(b.Name(), c.Topology)]
	_, huge := r.Skipped[HugeSkipKey(b.Name())]
	return all || topo || (huge && c.Huge)
}

func (r *Runner) skip(key string, err error) {
	r.Skipped[key] = err.Error()
	fmt.Fprintf(r.out, "  %s: skipped: %s\n", key, firstLine(err.Error()))
}

// startFailed handles a backend that did not start on case c's topology:
// a reference backend that failed maxStartFails times in a row there, or
// once with ErrUnsupported, is skipped from then on on that topology (it
// would fail the same way each time; the reason is reported); vhostd is
// tried again every time.
func (r *Runner) startFailed(b Backend, c Case, err error) {
	key := SkipKey(b.Name(), c.Topology)
	r.startFails[key]++
	if _, isVhostd := b.(*Vhostd); isVhostd {
		return
	}
	switch {
	case errors.Is(err, ErrUnsupported):
		r.skip(key, err)
	case r.startFails[key] >= maxStartFails:
		r.skip(key, fmt.Errorf("could not start here (%d times in a row): %w", maxStartFails, err))
	}
}

// runOne is one repetition: fresh directory, backend, generator; seed,
// sample, stop; measure idle CPU; tear everything down.
func (r *Runner) runOne(ctx context.Context, b Backend, c Case, rep int) (res RepResult) {
	res = RepResult{Backend: b.Name(), Case: c, Rep: rep, OtherLoad: nan(), XCoreNs: nan(),
		Seed: SeedBursts(r.opt.SeedBursts, c), GenDrops: -1, BackendDrops: -1}
	// Before anything of this repetition runs on the two CPUs.
	if ns, err := CrossCoreRTT(r.opt.GenCPU, r.opt.BackendCPU, xcoreProbe); err == nil {
		res.XCoreNs = ns
	} else if !r.xcoreFailed {
		r.xcoreFailed = true
		fmt.Fprintf(r.out, "  %v (not measured from now on)\n", err)
	}
	r.seq++
	tag := fmt.Sprintf("%03d-%s-%s-r%d", r.seq, b.Name(), slug(c.Name()), rep)
	dir, err := r.tr.TempDir("vhb")
	if err != nil {
		res.Err = err
		return res
	}
	defer os.RemoveAll(dir)
	env := RunEnv{Dir: dir, CPU: r.opt.BackendCPU, Case: c, LogDir: r.logDir, Tag: tag, Tracker: r.tr}
	if c.Huge {
		if r.hugeDir == "" {
			res.Err = fmt.Errorf("hugepage case without hugepages set up")
			return res
		}
		env.HugeDir, env.Testpmd = r.hugeDir, r.testpmdBin
	}
	inst, err := b.Start(ctx, env)
	if err != nil {
		res.Err = err
		if ctx.Err() == nil {
			r.startFailed(b, c, err)
		}
		return res
	}
	r.startFails[SkipKey(b.Name(), c.Topology)] = 0
	defer func() {
		if err := inst.Stop(); err != nil && res.Err == nil {
			res.Err = fmt.Errorf("%s: stop: %w", b.Name(), err)
		}
	}()
	gen, err := StartGenerator(ctx, env, r.opt.GenCPU, b.FrontendServer())
	if err != nil {
		if _, ok := inst.(*vhostdInst); ok {
			// The generator's error is often only the symptom.
			err = fmt.Errorf("%s [vhostd's log: %s]\n%w", firstLine(err.Error()), lastErrorLine(env.Log("vhostd")), err)
		}
		res.Err = err
		return res
	}
	// Deferred after inst.Stop, so it runs first: the frontend
	// disconnects before the backend stops.
	defer func() {
		if err := gen.Close(); err != nil && res.Err == nil {
			res.Err = err
		}
	}()
	if rw, ok := inst.(ReadyWaiter); ok {
		if err := rw.WaitReady(ctx, 30*time.Second); err != nil {
			res.Err = err
			return res
		}
	}
	pids := []int{os.Getpid(), gen.Pid()}
	if p := inst.Pid(); p > 0 {
		pids = append(pids, p)
	}
	noise := StartInterference([]int{r.opt.GenCPU, r.opt.BackendCPU}, pids)
	lo := LoopOptions{SeedBursts: res.Seed, Warmup: r.opt.Warmup, Window: r.opt.Window, Every: r.opt.Every}
	var marks, genMarks [2]CostMark
	var markAt [2]time.Time
	var markErr, genErr [2]error
	cm, hasCost := inst.(CostMeter)
	if !hasCost {
		res.CostErr = fmt.Errorf("%s does not account its cycles", b.Name())
	}
	lo.Mark = func(end bool) {
		i := 0
		if end {
			i = 1
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		markAt[i] = time.Now()
		if hasCost {
			marks[i], markErr[i] = cm.CostMark(cctx)
		}
		genMarks[i], genErr[i] = gen.CostMark(cctx)
	}
	res.Samples, err = gen.RunLoop(ctx, lo)
	if err != nil {
		res.Err = err
		return res
	}
	if genErr[0] == nil && genErr[1] == nil && !markAt[1].IsZero() {
		if c, err := CostBetween(genMarks[0], genMarks[1], markAt[1].Sub(markAt[0]).Seconds()); err == nil {
			res.GenCost = &c
		}
	}
	if hasCost {
		if e := errors.Join(markErr[0], markErr[1]); e != nil {
			res.CostErr = e
		} else if markAt[0].IsZero() || markAt[1].IsZero() {
			res.CostErr = fmt.Errorf("cost marks not taken")
		} else if c, err := CostBetween(marks[0], marks[1], markAt[1].Sub(markAt[0]).Seconds()); err != nil {
			res.CostErr = err
		} else {
			res.Cost = &c
		}
		if res.CostErr != nil {
			fmt.Fprintf(r.out, "  %s %s: cost per frame: %s\n", b.Name(), c.Name(), firstLine(res.CostErr.Error()))
		}
	}
	res.OtherLoad = noise.Pct()
	pps, span, ok := WindowRate(res.Samples, r.opt.Warmup.Seconds(), r.opt.Window.Seconds())
	if !ok {
		res.Err = fmt.Errorf("samples do not cover the window")
		return res
	}
	res.PPS, res.Span = pps, span
	gd, err := gen.StopLoop(ctx)
	if err != nil {
		res.Err = err
		return res
	}
	res.GenDrops = int64(gd)
	if pid := inst.Pid(); pid > 0 {
		if u, err := measureCPU(ctx, pid, r.opt.Idle); err == nil {
			res.IdleCPU = &u
		}
	}
	if v, ok := inst.(*vhostdInst); ok {
		r.saveVhostdStats(ctx, v, env.Log("vhostd-stats"))
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := v.CheckLayout(cctx, c.Packed)
		cancel()
		if err != nil {
			res.Err = err
			return res
		}
	}
	if dc, ok := inst.(DropCounter); ok {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		n, err := dc.Drops(cctx)
		cancel()
		if err == nil {
			res.BackendDrops = int64(n)
		} else {
			fmt.Fprintf(r.out, "  %s %s: drop counters: %s\n", b.Name(), c.Name(), firstLine(err.Error()))
		}
	}
	return res
}

// measureCPU returns pid's CPU use over d.
func measureCPU(ctx context.Context, pid int, d time.Duration) (CPUUse, error) {
	a, err := ReadCPU(pid)
	if err != nil {
		return CPUUse{}, err
	}
	select {
	case <-ctx.Done():
		return CPUUse{}, ctx.Err()
	case <-time.After(d):
	}
	b, err := ReadCPU(pid)
	if err != nil {
		return CPUUse{}, err
	}
	return Use(a, b), nil
}

// saveVhostdStats writes vhostd's counters (drops by reason) next to its
// log, for whoever wonders where frames went.
func (r *Runner) saveVhostdStats(ctx context.Context, v *vhostdInst, path string) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := v.Stats(cctx)
	if err != nil {
		os.WriteFile(path, []byte(err.Error()+"\n"), 0o644)
		return
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	os.WriteFile(path, append(b, '\n'), 0o644)
}

// slug makes a case name usable in file names.
func slug(s string) string {
	return strings.NewReplacer(" ", "_", "=", "-", "/", "-").Replace(s)
}

// lastErrorLine returns the last line of a log that mentions an error.
func lastErrorLine(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "level=error") || strings.Contains(lines[i], "level=fatal") {
			return lines[i]
		}
	}
	return "(no error line)"
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// fmtDrops shows a repetition's lost frames: "gen 0 + backend 12", with
// "?" for a count that is not known.
func fmtDrops(gen, backend int64) string {
	f := func(v int64) string {
		if v < 0 {
			return "?"
		}
		return fmt.Sprint(v)
	}
	return "gen " + f(gen) + " + backend " + f(backend)
}
