package main

import (
	"bytes"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhostd/vhostd/daemon/control"
)

func TestBootstrapMedianKnownDistribution(t *testing.T) {
	// A normal distribution with median 100 and sd 10, as 41 values at
	// its quantiles (i+0.5)/41, shuffled: a sample that is exactly
	// representative, so the test does not depend on a random draw
	// landing near the truth.
	vs := normalQuantiles(41, 100, 10)
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(vs), func(i, j int) { vs[i], vs[j] = vs[j], vs[i] })
	ci := BootstrapMedian(vs, 0.95, BootResamples, BootSeed)
	if !(ci.Lo <= 100 && 100 <= ci.Hi) {
		t.Errorf("95%% interval %.2f..%.2f does not contain the true median 100", ci.Lo, ci.Hi)
	}
	if !(ci.Lo <= ci.Est && ci.Est <= ci.Hi) || ci.Est != median(vs) {
		t.Errorf("estimate %.2f outside %.2f..%.2f or not the sample median", ci.Est, ci.Lo, ci.Hi)
	}
	// The normal median's standard error is 1.2533*sd/sqrt(n) = 1.96:
	// a 95% interval about +-3.8 wide, not 0 and not 20.
	if w := ci.Hi - ci.Lo; w < 3 || w > 15 {
		t.Errorf("interval width %.2f, want about 7.7", w)
	}
	// Same data and seed: the same interval, to the bit.
	if again := BootstrapMedian(vs, 0.95, BootResamples, BootSeed); again != ci {
		t.Errorf("not deterministic: %+v then %+v", ci, again)
	}
	if other := BootstrapMedian(vs, 0.95, BootResamples, BootSeed+1); !(other.Lo <= 100 && 100 <= other.Hi) {
		t.Errorf("seed %d: %+v", BootSeed+1, other)
	}
	// Fewer than two values: the estimate, no interval.
	if one := BootstrapMedian([]float64{5}, 0.95, 100, 1); one.Est != 5 || !math.IsNaN(one.Lo) || one.RepsFor(0.05) != 0 {
		t.Errorf("one value: %+v", one)
	}
}

func TestBootstrapRatio(t *testing.T) {
	// b's median 5, a's median 10: the ratio is 2.
	a, b := normalQuantiles(31, 10, 1), normalQuantiles(25, 5, 0.5)
	ci := BootstrapRatio(a, b, 0.95, BootResamples, BootSeed)
	if !(ci.Lo <= 2 && 2 <= ci.Hi) || ci.N != 31 || ci.M != 25 {
		t.Errorf("ratio interval %+v does not contain 2", ci)
	}
	if again := BootstrapRatio(a, b, 0.95, BootResamples, BootSeed); again != ci {
		t.Errorf("not deterministic")
	}
	// A wider level gives a wider interval.
	if w := BootstrapRatio(a, b, 0.99, BootResamples, BootSeed); !(w.Lo <= ci.Lo && w.Hi >= ci.Hi) {
		t.Errorf("99%% %+v narrower than 95%% %+v", w, ci)
	}
	if n := BootstrapRatio(a, []float64{}, 0.95, 10, 1); !math.IsNaN(n.Est) || !math.IsNaN(n.Lo) {
		t.Errorf("no reference: %+v", n)
	}
}

func TestRepsFor(t *testing.T) {
	// +-10% from 5 repetitions: (10/5)^2 = 4 times as many for +-5%.
	c := CI{Est: 1, Lo: 0.9, Hi: 1.1, N: 5, M: 7}
	if got := c.RepsFor(0.05); got != 20 {
		t.Errorf("RepsFor = %d, want 20", got)
	}
	if !near(c.HalfWidthPct(), 10) {
		t.Errorf("HalfWidthPct = %v", c.HalfWidthPct())
	}
	// Narrower than asked: fewer than now.
	c = CI{Est: 2, Lo: 1.96, Hi: 2.04, N: 16, M: 16}
	if got := c.RepsFor(0.05); got != 3 {
		t.Errorf("RepsFor = %d, want 3 (16 x (2%%/5%%)^2 = 2.56)", got)
	}
	if got := (CI{Est: 1, Lo: 1, Hi: 1, N: 3, M: 3}).RepsFor(0.05); got != 0 {
		t.Errorf("zero-width interval: RepsFor = %d, want 0 (unknown)", got)
	}
}

func TestParseCoreCycles(t *testing.T) {
	b, err := os.ReadFile("testdata/testpmd-fwd-stats-core-cycles.txt")
	if err != nil {
		t.Fatal(err)
	}
	m, ok := ParseCoreCycles(string(b))
	if !ok || m.Cycles != 3989471892 || m.Frames != 1148832 || m.TSCHz != 2100e6 {
		t.Fatalf("ParseCoreCycles = %+v, %v", m, ok)
	}
	// Two blocks (show fwd stats, then stop): the last wins.
	m, ok = ParseCoreCycles(string(b) + "\n  CPU cycles/packet=10.00 (total cycles=100 / total io packets=10) at 2000 MHz Clock\n")
	if !ok || m.Cycles != 100 || m.Frames != 10 || m.TSCHz != 2e9 {
		t.Errorf("last block: %+v", m)
	}
	if _, ok := ParseCoreCycles("  RX-packets: 0  RX-dropped: 0\n"); ok {
		t.Error("parsed a cost from statistics without --record-core-cycles")
	}
}

func TestParsePMDPerf(t *testing.T) {
	b, err := os.ReadFile("testdata/ovs-pmd-perf-show.txt")
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParsePMDPerf(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if m.Frames != 895168 || m.Cycles != 2420*895168 {
		t.Errorf("frames %d cycles %d, want 895168 and 2420 each", m.Frames, m.Cycles)
	}
	// 29268015378 used cycles, 96.6% of the total, in 14.425 s.
	if hz := 29268015378 / 0.966 / 14.425; math.Abs(m.TSCHz-hz) > 1 || math.Abs(m.TSCHz-2.1e9) > 0.01e9 {
		t.Errorf("TSC %.0f Hz, want %.0f", m.TSCHz, hz)
	}
	// Two PMD threads add up.
	two := strings.Replace(string(b), "Histograms", "pmd thread numa_id 0 core_id 2:\n  Rx packets:     10  (0 Kpps, 300 cycles/pkt)\nHistograms", 1)
	if m2, err := ParsePMDPerf(two); err != nil || m2.Frames != m.Frames+10 || m2.Cycles != m.Cycles+3000 {
		t.Errorf("two threads: %+v, %v", m2, err)
	}
	if _, err := ParsePMDPerf("ovs-appctl: no such command\n"); err == nil {
		t.Error("no error without pmd threads")
	}
}

func TestCostBetween(t *testing.T) {
	a := CostMark{Cycles: 1000, Frames: 10, TSCHz: 2e9}
	b := CostMark{Cycles: 31000, Frames: 110, TSCHz: 2e9}
	c, err := CostBetween(a, b, 0.0001)
	if err != nil {
		t.Fatal(err)
	}
	// 30000 cycles for 100 frames: 300 cycles, 150 ns at 2 GHz; 30000
	// cycles are 15 us of 100 us.
	if c.PerFrame() != 300 || !near(c.NsPerFrame(), 150) || !near(c.BusyPct(), 15) {
		t.Errorf("cost %+v: %v cycles, %v ns, %v%%", c, c.PerFrame(), c.NsPerFrame(), c.BusyPct())
	}
	if _, err := CostBetween(b, a, 1); err == nil {
		t.Error("counters going backwards accepted")
	}
	if _, err := CostBetween(a, a, 1); err == nil {
		t.Error("no frames accepted")
	}
	// OVS's first mark is zeros (cleared), without a TSC rate.
	if c, err := CostBetween(CostMark{}, b, 1); err != nil || c.TSCHz != 2e9 {
		t.Errorf("from zero: %+v %v", c, err)
	}
	if !math.IsNaN((Cost{Cycles: 1, Frames: 1}).NsPerFrame()) {
		t.Error("ns without a TSC rate")
	}
	m := PollersMark([]control.PollerStats{{BusyCycles: 100, Frames: 4, TSCHz: 2.1e9}, {BusyCycles: 50, Frames: 1, TSCHz: 2.1e9}})
	if m.Cycles != 150 || m.Frames != 5 || m.TSCHz != 2.1e9 {
		t.Errorf("PollersMark = %+v", m)
	}
}

func TestCostRowsAndTables(t *testing.T) {
	c := Case{Frame: 64, MrgRxbuf: true, Topology: VMToVM, Queues: 1, Huge: true}
	cost := func(cyc uint64) *Cost { return &Cost{Cycles: cyc * 1000, Frames: 1000, TSCHz: 2e9, Seconds: 1e-3} }
	var res []RepResult
	for i, v := range []float64{10e6, 12e6, 11e6} {
		res = append(res, RepResult{Backend: "vhostd", Case: c, Rep: i + 1, PPS: v, OtherLoad: 1, Cost: cost(uint64(200 + 10*i))})
		res = append(res, RepResult{Backend: RefDPDK, Case: c, Rep: i + 1, PPS: v / 2, OtherLoad: 1, Cost: cost(uint64(400 + 20*i))})
	}
	rows := BuildRows(res, []Case{c}, []string{"vhostd", RefDPDK})
	if rows[0].Cyc.Median != 210 || rows[1].Cyc.Median != 420 || !near(rows[0].CycVsDPDK, 0.5) || !near(rows[0].Ns.Median, 105) {
		t.Fatalf("rows: %+v", rows)
	}
	cis := RatioCIs(rows)
	if len(cis) != 2 || cis[0].What != "Mpps" || !near(cis[0].CI.Est, 2) || cis[1].What != "cycles/frame" || !near(cis[1].CI.Est, 0.5) {
		t.Fatalf("ratios: %+v", cis)
	}
	var buf bytes.Buffer
	WriteCostTable(&buf, rows)
	WriteRatioCIs(&buf, cis)
	out := buf.String()
	for _, want := range []string{"64B mrg=on huge", "210", "0.50x", "2.00x", "105.0"} {
		if !strings.Contains(out, want) {
			t.Errorf("tables lack %q:\n%s", want, out)
		}
	}
	recs := readCSV(t, func(w io.Writer) error { return WriteRatiosCSV(w, cis) })
	if col(t, recs, 2, "quantity") != "cycles/frame" || col(t, recs, 2, "ratio") != "0.5000" || col(t, recs, 1, "mem") != "2M" {
		t.Errorf("ratios.csv: %v", recs)
	}
	recs = readCSV(t, func(w io.Writer) error { return WriteRepsCSV(w, res) })
	if col(t, recs, 1, "cycles_per_frame") != "200.0" || col(t, recs, 1, "ns_per_frame") != "100.00" || col(t, recs, 1, "mem") != "2M" {
		t.Errorf("reps.csv: %v", recs[1])
	}
}

func TestPlanHuge(t *testing.T) {
	// 2 MiB pages: generator 128+64, dpdk-io 128+64, OVS (its limit)
	// 512+64.
	full := PlanHuge(2048, 1000, true)
	if full.Need != 192+576 || full.NeedNoOVS != 384 || !full.Run || !full.OVS || full.Note != "" {
		t.Errorf("plenty: %+v", full)
	}
	if p := PlanHuge(2048, 0, false); p.Need != 384 {
		t.Errorf("without OVS: need %d, want 384", p.Need)
	}
	short := PlanHuge(2048, 400, true)
	if !short.Run || short.OVS || !strings.Contains(short.Note, "granted 400 of the 768") || !strings.Contains(short.Note, "without ovs-dpdk") {
		t.Errorf("short: %+v", short)
	}
	none := PlanHuge(2048, 100, true)
	if none.Run || none.OVS || !strings.Contains(none.Note, "granted 100 of the 768") || !strings.Contains(none.Note, "only the no-hugepage") {
		t.Errorf("none: %+v", none)
	}
	// 1 GiB pages: one page per process (plus the margin, in pages).
	if g := PlanHuge(1024*1024, 0, false); g.NeedNoOVS != 2*(1+hugeMarginPages) {
		t.Errorf("1G pages: %+v", g)
	}
	if ReleaseTarget(600, 512) != 88 || ReleaseTarget(100, 512) != 0 {
		t.Error("ReleaseTarget")
	}
	h := &HugeSetup{Plan: short, Dir: "/tmp/vhb-huge-1", Mounted: true, Before: 0, Added: 400}
	if s := h.Summary(); !strings.Contains(s, "mounted by the bench on /tmp/vhb-huge-1") || !strings.Contains(s, short.Note) {
		t.Errorf("summary: %s", s)
	}
	var nilSetup *HugeSetup
	if nilSetup.Release() != nil || !strings.Contains(nilSetup.Summary(), "not used") {
		t.Error("nil setup")
	}
}

func TestHugeProcFiles(t *testing.T) {
	mi := "MemTotal:       24000000 kB\nHugePages_Total:     512\nHugePages_Free:      448\nHugePages_Rsvd:        0\nHugepagesize:       2048 kB\n"
	free, kb, err := ParseMeminfoHuge(mi)
	if err != nil || free != 448 || kb != 2048 {
		t.Errorf("ParseMeminfoHuge = %d %d %v", free, kb, err)
	}
	if _, _, err := ParseMeminfoHuge("MemTotal: 1 kB\n"); err == nil {
		t.Error("no hugepage lines accepted")
	}
	mounts := "proc /proc proc rw 0 0\nnone /dev/huge1g hugetlbfs rw,relatime,pagesize=1024M 0 0\nnone /tmp/my\\040huge hugetlbfs rw,relatime,pagesize=2M 0 0\n"
	if d := FindHugetlbfs(mounts, 2048, 2048); d != "/tmp/my huge" {
		t.Errorf("2M mount: %q", d)
	}
	if d := FindHugetlbfs(mounts, 1024*1024, 2048); d != "/dev/huge1g" {
		t.Errorf("1G mount: %q", d)
	}
	if d := FindHugetlbfs("hugetlbfs /dev/hugepages hugetlbfs rw,relatime 0 0\n", 2048, 2048); d != "/dev/hugepages" {
		t.Errorf("default size mount: %q", d)
	}
	if d := FindHugetlbfs("proc /proc proc rw 0 0\n", 2048, 2048); d != "" {
		t.Errorf("no mount: %q", d)
	}
}

func TestHugeWrapper(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	_ = sh
	p := filepath.Join(t.TempDir(), "w")
	if err := os.WriteFile(p, []byte(HugeWrapper("echo")), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p, "--lcores", "0@0", "--no-huge", "-m", "256", "a b", "--", "-i").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(out); got != "--lcores 0@0 -m 256 a b -- -i\n" {
		t.Errorf("wrapper ran %q", got)
	}
	env := RunEnv{HugeDir: "/h"}
	if a := strings.Join(env.HugeEAL(true), " "); a != "--in-memory --huge-dir=/h --single-file-segments" {
		t.Errorf("frontend EAL %q", a)
	}
	if a := (RunEnv{}).HugeEAL(true); a != nil {
		t.Errorf("EAL without hugepages: %q", a)
	}
}

// normalQuantiles returns n values of a normal distribution (median mu,
// standard deviation sd) at its quantiles (i+0.5)/n, in order.
func normalQuantiles(n int, mu, sd float64) []float64 {
	vs := make([]float64, n)
	for i := range vs {
		p := (float64(i) + 0.5) / float64(n)
		vs[i] = mu + sd*math.Sqrt2*math.Erfinv(2*p-1)
	}
	return vs
}

func TestPoolRepsCSV(t *testing.T) {
	c := Case{Frame: 64, MrgRxbuf: true, Topology: VMToVM, Queues: 1, Huge: true}
	res := []RepResult{
		{Backend: "vhostd", Case: c, Rep: 1, PPS: 10e6, OtherLoad: 3, Cost: &Cost{Cycles: 2000, Frames: 10, TSCHz: 2e9}},
		{Backend: RefDPDK, Case: c, Rep: 1, PPS: 5e6, OtherLoad: 3},
		{Backend: RefDPDK, Case: c, Rep: 2, Err: errors.New("boom")},
		{Backend: "vhostd", Case: Case{Frame: 1518, Topology: VMToVM, Queues: 1}, Rep: 1, PPS: 1e6},
	}
	var buf bytes.Buffer
	if err := WriteRepsCSV(&buf, res); err != nil {
		t.Fatal(err)
	}
	got, skipped, err := ReadRepsCSV(&buf, []Case{c})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || skipped != 1 || !got[0].Pooled || got[0].Case != c || got[0].PPS != 10e6 || got[1].Backend != RefDPDK {
		t.Fatalf("pooled %+v, skipped %d", got, skipped)
	}
	if got[0].Cost == nil || got[0].Cost.PerFrame() != 200 || got[0].Cost.TSCHz != 2e9 || got[1].Cost != nil || got[0].OtherLoad != 3 {
		t.Errorf("costs: %+v %+v", got[0].Cost, got[1].Cost)
	}
	if _, _, err := ReadRepsCSV(strings.NewReader("a,b\n1,2\n"), []Case{c}); err == nil {
		t.Error("not a reps.csv accepted")
	}
}

func TestRxqsEnabled(t *testing.T) {
	out := "Displaying last 60 seconds pmd usage %\npmd thread numa_id 0 core_id 1:\n  isolated : false\n" +
		"  port: a                 queue-id:  0 (enabled)   pmd usage:  0 %\n" +
		"  port: b                 queue-id:  0 (enabled)   pmd usage:  0 %\n  overhead:  0 %\n"
	if !RxqsEnabled(out, []string{"a", "b"}) {
		t.Error("all enabled: not ready")
	}
	if RxqsEnabled(strings.Replace(out, "queue-id:  0 (enabled)", "queue-id:  0 (disabled)", 1), []string{"a", "b"}) {
		t.Error("a disabled queue: ready")
	}
	if RxqsEnabled(out, []string{"a", "u"}) || RxqsEnabled(out, nil) {
		t.Error("a missing port: ready")
	}
}
