package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// The TSO section: 64 KiB TCP segments with TSO metadata from generator
// port A to port B (test/bench/tsogen), one way, through each backend,
// and one core's copy bandwidth measured in the same run. See
// docs/bench.md, "TSO VM-to-VM".

// tsoMSS is tsogen's MSS (its gso_size).
const tsoMSS = 1448

// tsoMbufSize is the mbuf size (data room) of DPDK's backend in the TSO
// section: the largest even one (see DPDKRef.Start).
const tsoMbufSize = 65534

// TSOFrame is the frame of one segment the TSO section sends (headers
// included): 45 MSS of payload, as a Linux guest's largest (tsogen's
// SegFrameLen).
const TSOFrame = 54 + 45*tsoMSS

// TSOCase is the case the TSO section hands the backends (env.Case):
// VM-to-VM, mergeable buffers, one queue pair, no hugepages, TSO.
func TSOCase() Case {
	return Case{Frame: TSOFrame, MrgRxbuf: true, Topology: VMToVM, Queues: 1, TSO: true}
}

// DefaultTSORxBuf is the data room of tsogen's receive buffers unless
// told otherwise: the largest even one, so that a segment fills two.
const DefaultTSORxBuf = 65534

// CheckTSORxBuf says what is wrong with a receive buffer data room for
// tsogen, or nil. Even, because DPDK's software checksum over an mbuf
// chain (rte_raw_cksum_mbuf, net_vhost's compliant mode) is wrong when an
// mbuf ends at an odd offset of the frame; at least 2048, so that a
// segment takes at most 64 buffers (tsogen's limit per frame).
func CheckTSORxBuf(n int) error {
	if n < 2048 || n > DefaultTSORxBuf || n%2 != 0 {
		return fmt.Errorf("%d: want an even number of bytes from 2048 to %d", n, DefaultTSORxBuf)
	}
	return nil
}

// rxBufWords describes tsogen's receive buffers of data room n (0: the
// default) for the TSO section's heading.
func rxBufWords(n int) string {
	if n == 0 {
		n = DefaultTSORxBuf
	}
	return fmt.Sprintf("of %d bytes (--tso-rx-buf) from a pool of %d (%.0f MiB)", n, tsoRxPool, float64(n*tsoRxPool)/(1<<20))
}

// tsoRxPool is how many mbufs tsogen's receive pool holds (both ports'
// receive rings, 256 each, draw from it).
const tsoRxPool = 1023

// TSOGen is tsogen's JSON result (test/bench/tsogen's Result).
type TSOGen struct {
	Refused        string  `json:"refused"`
	TxTSO          bool    `json:"tx_tso"`
	RxLRO          bool    `json:"rx_lro"`
	Window         float64 `json:"window_s"`
	TxFrames       uint64  `json:"tx_frames"`
	RxFrames       uint64  `json:"rx_frames"`
	RxBytes        uint64  `json:"rx_bytes"`
	PayloadBytes   uint64  `json:"payload_bytes"`
	Gbps           float64 `json:"gbps"`
	WholeGSO       uint64  `json:"whole_gso"`
	WholePlain     uint64  `json:"whole_plain"`
	Segmented      uint64  `json:"segmented"`
	Other          uint64  `json:"other_size"`
	Verified       uint64  `json:"verified"`
	Partial        uint64  `json:"csum_partial"`
	PartialNoLen   uint64  `json:"csum_partial_nolen"`
	Full           uint64  `json:"csum_full"`
	Bad            uint64  `json:"bad"`
	FirstBad       string  `json:"first_bad"`
	TxErrors       uint64  `json:"tx_errors"`
	RxMissed       uint64  `json:"rx_missed"`
	MemcpyHotGbps  float64 `json:"memcpy_hot_gbps"`
	MemcpyRingGbps float64 `json:"memcpy_ring_gbps"`
	// The copy into the receiver's whole pool, and the two routines'
	// figures of which MemcpyRingGbps is the faster.
	MemcpyPoolGbps        float64 `json:"memcpy_pool_gbps"`
	MemcpyRingBuiltinGbps float64 `json:"memcpy_ring_builtin_gbps"`
	MemcpyRingStringGbps  float64 `json:"memcpy_ring_string_gbps"`
}

// ParseTSOGen parses tsogen's output.
func ParseTSOGen(b []byte) (TSOGen, error) {
	var g TSOGen
	if err := json.Unmarshal(b, &g); err != nil {
		return g, fmt.Errorf("tsogen result %q: %w", clip(string(b), 200), err)
	}
	return g, nil
}

// Delivery says what a backend did with the segments, from what the
// receiver saw: "whole + GSO" (passed through with their metadata),
// "whole, no GSO" (one plain 64 KiB frame each), "segmented" (MSS-sized
// frames), a mix, or "nothing".
func (g TSOGen) Delivery() string {
	var parts []string
	add := func(n uint64, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", what, n))
		}
	}
	add(g.WholeGSO, "whole+GSO")
	add(g.WholePlain, "whole,no-GSO")
	add(g.Segmented, "segmented")
	add(g.Other, "other-size")
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// Csum says what the verified sample's TCP checksums held.
func (g TSOGen) Csum() string {
	var parts []string
	if g.Partial > 0 {
		parts = append(parts, fmt.Sprintf("partial %d", g.Partial))
	}
	if g.PartialNoLen > 0 {
		parts = append(parts, fmt.Sprintf("partial-no-len %d", g.PartialNoLen))
	}
	if g.Full > 0 {
		parts = append(parts, fmt.Sprintf("full %d", g.Full))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// TSORep is one repetition of one backend in the TSO section.
type TSORep struct {
	Backend string
	Rep     int
	Gen     TSOGen
	// BackendDrops is what the backend counted as dropped (-1 unknown).
	BackendDrops int64
	OtherLoad    float64
	Err          error
}

// MemcpyRep is one measurement of the backend CPU's copy bandwidth.
type MemcpyRep struct {
	Rep int
	// Gbps of 64 KiB copies: in cache, from 8 buffers into 256 (the
	// figure 'of memcpy' divides by) and into 1023 (the receiver's pool),
	// each the faster of Go's copy and REP MOVSB; and the into-256 figure
	// of each routine.
	Hot, Ring, Pool         float64
	RingBuiltin, RingString float64
	Err                     error
}

// TSOBackend is implemented by backends with more than one TSO
// configuration worth measuring (DPDK's vhost: compliant and legacy
// offload flags): the TSO section measures each variant as a backend of
// its own.
type TSOBackend interface {
	TSOVariants() []Backend
}

// TSOBackends expands backends into the TSO section's list.
func TSOBackends(bs []Backend) []Backend {
	var out []Backend
	for _, b := range bs {
		if v, ok := b.(TSOBackend); ok {
			out = append(out, v.TSOVariants()...)
		} else {
			out = append(out, b)
		}
	}
	return out
}

// TSO runs the TSO section: per repetition the backend CPU's copy
// bandwidth, then every backend (order rotating as in Throughput).
func (r *Runner) TSO(ctx context.Context, backends []Backend, gen string) ([]TSORep, []MemcpyRep) {
	var reps []TSORep
	var mems []MemcpyRep
	for rep := 1; rep <= r.opt.Reps && ctx.Err() == nil; rep++ {
		m := r.memcpy(ctx, gen, rep)
		mems = append(mems, m)
		if m.Err != nil {
			fmt.Fprintf(r.out, "  rep %d/%d  memcpy on CPU %d FAILED: %s\n", rep, r.opt.Reps, r.opt.BackendCPU, firstLine(m.Err.Error()))
		} else {
			fmt.Fprintf(r.out, "  rep %d/%d  memcpy on CPU %d: %.1f Gbps from 8 into 256 buffers of 64 KiB (Go copy %.1f, REP MOVSB %.1f), %.1f into 1023, %.1f in cache\n", rep, r.opt.Reps, r.opt.BackendCPU, m.Ring, m.RingBuiltin, m.RingString, m.Pool, m.Hot)
		}
		for i := range backends {
			b := backends[(i+rep-1)%len(backends)]
			if _, all := r.Skipped[b.Name()]; all || ctx.Err() != nil {
				continue
			}
			tr := r.runTSO(ctx, b, gen, rep)
			reps = append(reps, tr)
			if tr.Err != nil {
				fmt.Fprintf(r.out, "  rep %d/%d  tso %-16s FAILED: %s\n", rep, r.opt.Reps, b.Name(), firstLine(tr.Err.Error()))
			} else if tr.Gen.Refused != "" {
				fmt.Fprintf(r.out, "  rep %d/%d  tso %-16s refused: %s\n", rep, r.opt.Reps, b.Name(), tr.Gen.Refused)
			} else {
				fmt.Fprintf(r.out, "  rep %d/%d  tso %-16s %6.2f Gbps  (%s; checksums %s; bad %d; other load %.0f%%)\n",
					rep, r.opt.Reps, b.Name(), tr.Gen.Gbps, tr.Gen.Delivery(), tr.Gen.Csum(), tr.Gen.Bad, tr.OtherLoad)
			}
		}
	}
	return reps, mems
}

// memcpy measures one core's copy bandwidth on the backend's CPU.
func (r *Runner) memcpy(ctx context.Context, gen string, rep int) MemcpyRep {
	m := MemcpyRep{Rep: rep}
	dir, err := r.tr.TempDir("vhb")
	if err != nil {
		m.Err = err
		return m
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "memcpy.json")
	g, err := r.runGen(ctx, filepath.Join(r.logDir, fmt.Sprintf("tso-memcpy-r%d.log", rep)),
		[]string{"taskset", "-c", strconv.Itoa(r.opt.BackendCPU), gen, "-memcpy", "2s", "-out", out}, out, 30*time.Second, nil)
	if err != nil {
		m.Err = err
		return m
	}
	m.Hot, m.Ring, m.Pool = g.MemcpyHotGbps, g.MemcpyRingGbps, g.MemcpyPoolGbps
	m.RingBuiltin, m.RingString = g.MemcpyRingBuiltinGbps, g.MemcpyRingStringGbps
	return m
}

// runGen runs tsogen to its end, calling started (if not nil) with its
// pid once it runs, and parses its result file.
func (r *Runner) runGen(ctx context.Context, logPath string, argv []string, out string, timeout time.Duration, started func(pid int) error) (TSOGen, error) {
	p, err := StartProc(r.tr, "tsogen", logPath, nil, argv...)
	if err != nil {
		return TSOGen{}, err
	}
	if started != nil {
		if err := started(p.Pid()); err != nil {
			p.Stop(2 * time.Second)
			return TSOGen{}, err
		}
	}
	select {
	case <-p.Done():
	case <-ctx.Done():
	case <-time.After(timeout):
	}
	if !p.Exited() {
		p.Stop(2 * time.Second)
		return TSOGen{}, fmt.Errorf("tsogen did not finish within %v: see %s", timeout, logPath)
	}
	if err := p.Stop(0); err != nil {
		return TSOGen{}, fmt.Errorf("tsogen: %w: %s", err, lastLine(logPath))
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return TSOGen{}, fmt.Errorf("tsogen result: %w", err)
	}
	return ParseTSOGen(b)
}

// runTSO is one repetition of backend b: fresh directory, backend,
// tsogen for warm-up + window, drop counters, teardown.
func (r *Runner) runTSO(ctx context.Context, b Backend, gen string, rep int) (res TSORep) {
	res = TSORep{Backend: b.Name(), Rep: rep, BackendDrops: -1, OtherLoad: nan()}
	r.seq++
	tag := fmt.Sprintf("%03d-%s-tso-r%d", r.seq, b.Name(), rep)
	dir, err := r.tr.TempDir("vhb")
	if err != nil {
		res.Err = err
		return res
	}
	defer os.RemoveAll(dir)
	env := RunEnv{Dir: dir, CPU: r.opt.BackendCPU, Case: TSOCase(), LogDir: r.logDir, Tag: tag, Tracker: r.tr}
	if err := b.Check(); err != nil {
		res.Err = err
		return res
	}
	inst, err := b.Start(ctx, env)
	if err != nil {
		res.Err = err
		return res
	}
	defer func() {
		if err := inst.Stop(); err != nil && res.Err == nil {
			res.Err = fmt.Errorf("%s: stop: %w", b.Name(), err)
		}
	}()
	prefix := fmt.Sprintf("vhb-tsogen-%d-%d", os.Getpid(), r.seq)
	r.tr.AddPrefix(prefix)
	out := filepath.Join(dir, "tso.json")
	argv := []string{"taskset", "-c", strconv.Itoa(r.opt.GenCPU), gen, "-a", env.SockA(), "-b", env.SockB(),
		"-prefix", prefix, "-warmup", r.opt.Warmup.String(), "-window", r.opt.Window.String(), "-out", out,
		"-rx-buf", strconv.Itoa(r.opt.TSORxBuf)}
	if b.FrontendServer() {
		argv = append(argv, "-server")
	}
	// tsogen sends once this file exists: after the backend says it is
	// ready (OVS enables its receive queues a while after the links).
	startFile := filepath.Join(dir, "start")
	argv = append(argv, "-start-file", startFile)
	pids := []int{os.Getpid()}
	if p := inst.Pid(); p > 0 {
		pids = append(pids, p)
	}
	// Other load over (about) tsogen's window: it starts after B's
	// announcements (150 ms) and the warm-up; read before tsogen exits.
	load := make(chan float64, 1)
	res.Gen, res.Err = r.runGen(ctx, env.Log("tsogen"), argv, out, r.opt.Warmup+r.opt.Window+90*time.Second, func(gen int) error {
		if rw, ok := inst.(ReadyWaiter); ok {
			if err := rw.WaitReady(ctx, 30*time.Second); err != nil {
				return err
			}
		}
		go func() {
			time.Sleep(150*time.Millisecond + r.opt.Warmup)
			noise := StartInterference([]int{r.opt.GenCPU, r.opt.BackendCPU}, append(pids, gen))
			time.Sleep(r.opt.Window - min(r.opt.Window/10, 200*time.Millisecond))
			load <- noise.Pct()
		}()
		return os.WriteFile(startFile, nil, 0o644)
	})
	select {
	case res.OtherLoad = <-load:
	default:
	}
	if res.Err != nil {
		return res
	}
	if v, ok := inst.(*vhostdInst); ok {
		r.saveVhostdStats(ctx, v, env.Log("vhostd-stats"))
	}
	if dc, ok := inst.(DropCounter); ok {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		n, err := dc.Drops(cctx)
		cancel()
		if err == nil {
			res.BackendDrops = int64(n)
		}
	}
	return res
}

// tsoVhostdFailures counts vhostd's failed TSO repetitions (a refusal
// to negotiate TSO is a result, not a failure).
func tsoVhostdFailures(reps []TSORep) int {
	n := 0
	for _, r := range reps {
		if r.Backend == "vhostd" && r.Err != nil {
			n++
		}
	}
	return n
}

// lastLine returns the last non-empty line of a file.
func lastLine(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// TSORow is one backend over its TSO repetitions.
type TSORow struct {
	Backend string
	Gbps    Summary
	// Last is the last successful repetition's generator result (what
	// the backend did with the segments); Refused why the generator
	// could not negotiate TSO with it.
	Last    TSOGen
	Refused string
	Failed  int
	Err     string
	// Bad counts verified frames that failed the check, over all
	// repetitions; Drops the backend's own drop counters (summed, -1
	// unknown).
	Bad   uint64
	Drops int64
	// VsDPDK, VsLegacy, VsOVS: Gbps.Median over the reference's
	// (dpdk-io, dpdk-io-legacy-ol, ovs-dpdk); OfMemcpy over the median
	// copy bandwidth (out of cache). NaN when unknown.
	VsDPDK, VsLegacy, VsOVS, OfMemcpy float64
}

// BuildTSORows summarises the TSO repetitions per backend, in names'
// order.
func BuildTSORows(reps []TSORep, mems []MemcpyRep, names []string) []TSORow {
	var rows []TSORow
	for _, n := range names {
		row := TSORow{Backend: n, Drops: -1, VsDPDK: nan(), VsLegacy: nan(), VsOVS: nan(), OfMemcpy: nan()}
		var vs []float64
		for _, r := range reps {
			if r.Backend != n {
				continue
			}
			switch {
			case r.Err != nil:
				row.Failed++
				if row.Err == "" {
					row.Err = firstLine(r.Err.Error())
				}
			case r.Gen.Refused != "":
				row.Refused = r.Gen.Refused
			default:
				vs = append(vs, r.Gen.Gbps)
				row.Last = r.Gen
				row.Bad += r.Gen.Bad
				if r.BackendDrops >= 0 {
					row.Drops = max(row.Drops, 0) + r.BackendDrops
				}
			}
		}
		row.Gbps = Summarize(vs)
		rows = append(rows, row)
	}
	mem := MemcpyOf(mems, memcpyRing)
	for i := range rows {
		if rows[i].Gbps.N == 0 {
			continue
		}
		for _, ref := range rows {
			if ref.Gbps.N == 0 {
				continue
			}
			switch ref.Backend {
			case RefDPDK:
				rows[i].VsDPDK = Ratio(rows[i].Gbps.Median, ref.Gbps.Median)
			case RefDPDKLegacy:
				rows[i].VsLegacy = Ratio(rows[i].Gbps.Median, ref.Gbps.Median)
			case RefOVS:
				rows[i].VsOVS = Ratio(rows[i].Gbps.Median, ref.Gbps.Median)
			}
		}
		if mem.N > 0 {
			rows[i].OfMemcpy = Ratio(rows[i].Gbps.Median, mem.Median)
		}
	}
	return rows
}

// MemcpyOf summarises one figure of the copy bandwidths measured
// (pick returns it), over the measurements that worked.
func MemcpyOf(mems []MemcpyRep, pick func(MemcpyRep) float64) Summary {
	var vs []float64
	for _, m := range mems {
		if m.Err == nil {
			vs = append(vs, pick(m))
		}
	}
	return Summarize(vs)
}

func memcpyRing(m MemcpyRep) float64        { return m.Ring }
func memcpyHot(m MemcpyRep) float64         { return m.Hot }
func memcpyPool(m MemcpyRep) float64        { return m.Pool }
func memcpyRingBuiltin(m MemcpyRep) float64 { return m.RingBuiltin }
func memcpyRingString(m MemcpyRep) float64  { return m.RingString }

// TSO targets of issue 15.
const (
	TSOTargetVsDPDK = 1.5
	// RefDPDKLegacy is DPDK's backend with legacy offload flags, the one
	// configuration of it that hands the GSO request on.
	RefDPDKLegacy     = RefDPDK + "-legacy-ol"
	TSOTargetOfMemcpy = 0.8
)

// WriteTSOTable prints the TSO section's table and its target lines.
func WriteTSOTable(w io.Writer, rows []TSORow, mems []MemcpyRep) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  "+strings.Join([]string{"backend", "Gbps", "min..max", "x dpdk-io", "x legacy-ol", "x ovs-dpdk", "of memcpy", "delivered (last rep, frames)", "TCP checksum (sample)", "bad", "backend drops", "reps ok"}, "\t")+"\t")
	for _, r := range rows {
		if r.Gbps.N == 0 {
			why, reps := r.Err, fmt.Sprintf("0/%d", r.Failed)
			if r.Refused != "" {
				why, reps = "refused: "+r.Refused, "refused"
			}
			fmt.Fprintf(tw, "  %s\t-\t-\t-\t-\t-\t-\t%s\t-\t-\t-\t%s\t\n", r.Backend, clip(why, 100), reps)
			continue
		}
		drops := "?"
		if r.Drops >= 0 {
			drops = strconv.FormatInt(r.Drops, 10)
		}
		fmt.Fprintf(tw, "  %s\t%.2f\t%.2f..%.2f\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d/%d\t\n", r.Backend, r.Gbps.Median, r.Gbps.Min, r.Gbps.Max,
			fmtRatio(r.VsDPDK), fmtRatio(r.VsLegacy), fmtRatio(r.VsOVS), fmtPctOf(r.OfMemcpy), r.Last.Delivery(), r.Last.Csum(), r.Bad, drops, r.Gbps.N, r.Gbps.N+r.Failed)
	}
	tw.Flush()
	ring, hot, pool := MemcpyOf(mems, memcpyRing), MemcpyOf(mems, memcpyHot), MemcpyOf(mems, memcpyPool)
	if ring.N > 0 {
		fmt.Fprintf(w, "  memcpy, one core (the backend's CPU, 64 KiB buffers, the faster of Go's copy and REP MOVSB: %.1f and %.1f Gbps into 256): %.1f Gbps from 8 source buffers into 256 (16 MiB; min..max %.1f..%.1f), %.1f into 1023 (64 MiB, the receiver's pool at the default --tso-rx-buf), %.1f in cache; 'of memcpy' is over the first\n",
			MemcpyOf(mems, memcpyRingBuiltin).Median, MemcpyOf(mems, memcpyRingString).Median, ring.Median, ring.Min, ring.Max, pool.Median, hot.Median)
	} else {
		fmt.Fprintf(w, "  memcpy: not measured\n")
	}
	for _, r := range rows {
		if r.Backend != "vhostd" {
			continue
		}
		if r.Gbps.N == 0 {
			fmt.Fprintf(w, "  targets: not measurable, vhostd delivered nothing measurable (%s)\n", firstNonEmpty(r.Refused, r.Err))
			continue
		}
		fmt.Fprintf(w, "  target vhostd >= %.1fx DPDK: %s over dpdk-io (%s), %s over dpdk-io-legacy-ol (%s, the DPDK configuration that keeps the GSO request); vhostd >= %.0f%% of memcpy: %s (%s)\n",
			TSOTargetVsDPDK, verdict(r.VsDPDK, TSOTargetVsDPDK), fmtRatio(r.VsDPDK), verdict(r.VsLegacy, TSOTargetVsDPDK), fmtRatio(r.VsLegacy),
			100*TSOTargetOfMemcpy, verdict(r.OfMemcpy, TSOTargetOfMemcpy), fmtPctOf(r.OfMemcpy))
		if pool.N > 0 {
			fmt.Fprintf(w, "  (vhostd is %s of the copy into 1023 buffers of 64 KiB, the footprint the receiver's pool lets the run cycle through at the default --tso-rx-buf; the target is judged on the 256-buffer figure)\n",
				fmtPctOf(Ratio(r.Gbps.Median, pool.Median)))
		}
	}
}

func verdict(v, target float64) string {
	switch {
	case math.IsNaN(v):
		return "n/a"
	case v >= target:
		return "met"
	default:
		return "NOT met"
	}
}

func fmtPctOf(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*v)
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// WriteTSOCSV writes every TSO repetition and memcpy measurement.
func WriteTSOCSV(w io.Writer, reps []TSORep, mems []MemcpyRep) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"kind", "backend", "rep", "gbps", "refused", "whole_gso", "whole_plain", "segmented", "other_size",
		"tx_frames", "rx_frames", "payload_bytes", "window_s", "verified", "csum_partial", "csum_partial_nolen", "csum_full", "bad", "first_bad",
		"backend_drops", "other_load_pct", "memcpy_ring_gbps", "memcpy_hot_gbps", "memcpy_pool_gbps", "memcpy_ring_builtin_gbps", "memcpy_ring_string_gbps", "error"})
	f := func(v float64) string { return csvFloat(v, 3) }
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	for _, m := range mems {
		e := ""
		if m.Err != nil {
			e = m.Err.Error()
		}
		cw.Write([]string{"memcpy", "", strconv.Itoa(m.Rep), "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", f(m.Ring), f(m.Hot), f(m.Pool), f(m.RingBuiltin), f(m.RingString), e})
	}
	for _, r := range reps {
		e := ""
		if r.Err != nil {
			e = r.Err.Error()
		}
		g := r.Gen
		cw.Write([]string{"tso", r.Backend, strconv.Itoa(r.Rep), f(g.Gbps), g.Refused, u(g.WholeGSO), u(g.WholePlain), u(g.Segmented), u(g.Other),
			u(g.TxFrames), u(g.RxFrames), u(g.PayloadBytes), f(g.Window), u(g.Verified), u(g.Partial), u(g.PartialNoLen), u(g.Full), u(g.Bad), g.FirstBad,
			strconv.FormatInt(r.BackendDrops, 10), f(r.OtherLoad), "", "", "", "", "", e})
	}
	cw.Flush()
	return errors.Join(cw.Error())
}
