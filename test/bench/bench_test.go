package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/test/testpmd"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9*math.Max(1, math.Abs(b)) }

func TestSummarize(t *testing.T) {
	s := Summarize([]float64{3, 1, 2})
	if s.N != 3 || s.Median != 2 || s.Min != 1 || s.Max != 3 || s.Mean != 2 || !near(s.Stdev, 1) {
		t.Errorf("odd: %+v", s)
	}
	if !near(s.SpreadPct(), 100) || !near(s.StdevPct(), 50) {
		t.Errorf("spread %v stdev%% %v", s.SpreadPct(), s.StdevPct())
	}
	s = Summarize([]float64{4, 1, 3, 2})
	if s.Median != 2.5 {
		t.Errorf("even median %v", s.Median)
	}
	if s := Summarize([]float64{7}); s.Stdev != 0 || s.Median != 7 || s.SpreadPct() != 0 {
		t.Errorf("single %+v", s)
	}
	if s := Summarize(nil); s.N != 0 || s.SpreadPct() != 0 || s.StdevPct() != 0 {
		t.Errorf("empty %+v", s)
	}
	in := []float64{3, 1, 2}
	Summarize(in)
	if in[0] != 3 {
		t.Error("Summarize sorted its input")
	}
}

func TestRatio(t *testing.T) {
	if Ratio(3, 2) != 1.5 || !math.IsNaN(Ratio(1, 0)) || !math.IsNaN(Ratio(1, math.NaN())) {
		t.Error("Ratio")
	}
}

func TestRatesAndWindow(t *testing.T) {
	// 1000 frames/s, sampled every 0.25 s, with one late sample.
	var ss []Sample
	for _, tt := range []float64{0, 0.25, 0.5, 0.75, 1.0, 1.3, 1.5, 1.75, 2.0, 2.25} {
		ss = append(ss, Sample{T: tt, RxPackets: uint64(tt * 1000)})
	}
	rs := Rates(ss)
	if len(rs) != len(ss)-1 {
		t.Fatalf("%d rates", len(rs))
	}
	for _, p := range rs {
		if math.Abs(p.V-1000) > 1e-6 {
			t.Errorf("rate at %v = %v", p.T, p.V)
		}
	}
	pps, span, ok := WindowRate(ss, 0.5, 1.0)
	if !ok || !near(span, 1.0) || math.Abs(pps-1000) > 1e-6 {
		t.Errorf("window: %v %v %v", pps, span, ok)
	}
	// The window starts at the first sample at or after from.
	if _, span, ok := WindowRate(ss, 1.1, 0.5); !ok || !near(span, 0.7) {
		t.Errorf("late start: span %v %v", span, ok)
	}
	if _, _, ok := WindowRate(ss, 1.0, 5); ok {
		t.Error("window longer than the samples accepted")
	}
	if _, _, ok := WindowRate(ss, 10, 1); ok {
		t.Error("window after the samples accepted")
	}
	// A counter going backwards (a restart) is no rate.
	back := []Sample{{0, 100}, {1, 50}, {2, 150}}
	if r := Rates(back); len(r) != 1 || r[0].V != 100 {
		t.Errorf("rates across a reset: %+v", r)
	}
	if _, _, ok := WindowRate(back, 0, 1); ok {
		t.Error("window across a reset accepted")
	}
	if g := MaxGap(ss); !near(g, 0.3) {
		t.Errorf("max gap %v", g)
	}
	if Collapsed(ss) {
		t.Error("a steady loop collapsed")
	}
	// 1000/s for 2 s, then almost nothing for 1.5 s.
	var dead []Sample
	n := uint64(0)
	for i := 0; i <= 14; i++ {
		dead = append(dead, Sample{T: float64(i) * 0.25, RxPackets: n})
		if i < 8 {
			n += 250
		} else {
			n += 2
		}
	}
	if !Collapsed(dead) {
		t.Error("a dead loop not seen as collapsed")
	}
}

func TestParseStatCPU(t *testing.T) {
	// Field 14 utime = 1500, field 15 stime = 250; a name with a space
	// and a parenthesis.
	line := "4242 (vhost d) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1500 250 0 0 20 0 5 0 123 1000 200 " +
		"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	v, err := ParseStatCPU(line)
	if err != nil || v != 1750 {
		t.Fatalf("ParseStatCPU = %d, %v", v, err)
	}
	for _, bad := range []string{"", "1 (x S 1 2", "1 (x) S 1 2 3"} {
		if _, err := ParseStatCPU(bad); err == nil {
			t.Errorf("ParseStatCPU(%q) succeeded", bad)
		}
	}
	if v, err := ParseSchedstat("123456789 1000 42\n"); err != nil || v != 123456789 {
		t.Errorf("ParseSchedstat = %d, %v", v, err)
	}
	if _, err := ParseSchedstat(""); err == nil {
		t.Error("empty schedstat accepted")
	}
}

func TestCPUUse(t *testing.T) {
	t0 := time.Unix(100, 0)
	a := CPUSample{At: t0, Ticks: 10, RunNs: 1_000_000}
	b := CPUSample{At: t0.Add(2 * time.Second), Ticks: 12, RunNs: 21_000_000}
	u := Use(a, b)
	if !near(u.StatPct, 1) || !near(u.SchedPct, 1) || !near(u.Best(), 1) {
		t.Errorf("use %+v", u)
	}
	u = Use(CPUSample{At: t0, Ticks: 1}, CPUSample{At: t0.Add(time.Second), Ticks: 2})
	if !math.IsNaN(u.SchedPct) || !near(u.Best(), 1) {
		t.Errorf("without schedstat %+v", u)
	}
}

func TestParseProcStat(t *testing.T) {
	stat := "cpu  300 0 300 1000 0 0 0 0 0 0\n" +
		"cpu0 100 0 100 500 10 5 5 30 0 0\n" +
		"cpu1 200 10 200 500 0 0 0 0 0 0\n" +
		"intr 1 2 3\n"
	got, err := ParseProcStat(stat, []int{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	if got.Busy != 240+410 || got.Total != 240+510+410+500 {
		t.Errorf("times %+v", got)
	}
	if _, err := ParseProcStat(stat, []int{2}); err == nil {
		t.Error("missing CPU accepted")
	}
	a := CPUTimes{Busy: 100, Total: 1000}
	b := CPUTimes{Busy: 1100, Total: 2000}
	if p := InterferencePct(a, b, 900); !near(p, 10) {
		t.Errorf("interference %v", p)
	}
	if p := InterferencePct(a, b, 2000); p != 0 {
		t.Errorf("clamped interference %v", p)
	}
	if p := InterferencePct(a, a, 0); !math.IsNaN(p) {
		t.Errorf("no time: %v", p)
	}
}

func TestCases(t *testing.T) {
	cs := Cases([]int{64, 1518}, []bool{true, false}, []bool{false}, VMToVM)
	var names []string
	for _, c := range cs {
		names = append(names, c.Name())
	}
	if got := strings.Join(names, "|"); got != "64B mrg=on|64B mrg=off|1518B mrg=on|1518B mrg=off" {
		t.Errorf("names %s", got)
	}
	if cs[0].TxPkts() != 60 || cs[2].TxPkts() != 1514 {
		t.Error("txpkts")
	}
	if g := cs[0].Gbps(1e6); !near(g, 0.512) {
		t.Errorf("gbps %v", g)
	}
	mq := MQCases(64, true, false)
	if len(mq) != 4 || mq[0].Name() != "64B mrg=on q1 p1" || mq[3].Name() != "64B mrg=on q2 p2" {
		t.Errorf("mq %v", mq)
	}
	up := Cases([]int{64, 1518}, []bool{true}, []bool{false}, VMUplink)
	if len(up) != 2 || up[0].Name() != "64B mrg=on vm-uplink" || up[1].Topology != VMUplink || up[1].Queues != 1 {
		t.Errorf("uplink cases %+v", up)
	}
	all := append(append([]Case(nil), cs...), up...)
	if got := CasesOf(all, VMUplink); len(got) != 2 || got[0] != up[0] {
		t.Errorf("CasesOf uplink %+v", got)
	}
	if got := CasesOf(all, VMToVM); len(got) != 4 {
		t.Errorf("CasesOf vm-vm %+v", got)
	}
	if VMUplink.Title() != "VM-to-uplink" || VMToVM.Title() != "VM-to-VM" {
		t.Error("titles")
	}
	env := RunEnv{Dir: "/d", Case: up[0]}
	if env.Sock1() != "/d/u.sock" || !env.Uplink() {
		t.Errorf("uplink env: port 1 on %s", env.Sock1())
	}
	env.Case = cs[0]
	if env.Sock1() != "/d/b.sock" || env.Uplink() {
		t.Errorf("vm-vm env: port 1 on %s", env.Sock1())
	}
	if !applies(&Vhostd{}, mq[3]) || applies(DPDKRef{}, mq[3]) || !applies(DPDKRef{}, mq[2]) {
		t.Error("applies")
	}
	if _, err := ParseFrames("64,9000"); err == nil {
		t.Error("frame 9000 accepted")
	}
	if _, err := ParseOnOff("on,maybe"); err == nil {
		t.Error("maybe accepted")
	}
}

func TestParseOptions(t *testing.T) {
	o, err := ParseOptions([]string{"--quick"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Reps != 1 || len(o.Frames) != 1 || len(o.Mrg) != 1 || o.Window != 2*time.Second {
		t.Errorf("quick: %+v", o)
	}
	o, err = ParseOptions([]string{"--quick", "--reps", "2", "--frames", "1518"})
	if err != nil || o.Reps != 2 || o.Frames[0] != 1518 {
		t.Errorf("quick with overrides: %+v %v", o, err)
	}
	o, err = ParseOptions(nil)
	if err != nil || o.Reps != 3 || len(o.Frames)*len(o.Mrg) != 4 || len(o.Backends) != 3 || !o.VMVM || !o.Uplink || o.SeedBursts != 0 {
		t.Errorf("defaults: %+v %v", o, err)
	}
	o, err = ParseOptions([]string{"--vm-vm=false", "--seed-bursts", "64"})
	if err != nil || o.VMVM || !o.Uplink || o.SeedBursts != 64 {
		t.Errorf("uplink only: %+v %v", o, err)
	}
	for _, bad := range [][]string{{"--gen-cpu", "1"}, {"--reps", "0"}, {"--sample", "10s"}, {"extra"},
		{"--vm-vm=false", "--uplink=false"}, {"--seed-bursts", "-1"}} {
		if _, err := ParseOptions(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func testResults() ([]RepResult, []Case) {
	c64 := Case{Frame: 64, MrgRxbuf: true, Topology: VMToVM, Queues: 1}
	c1518 := Case{Frame: 1518, Topology: VMToVM, Queues: 1}
	idle := &CPUUse{SchedPct: 0.5}
	res := []RepResult{
		{Backend: "vhostd", Case: c64, Rep: 1, PPS: 8e6, IdleCPU: idle, OtherLoad: 1, Samples: []Sample{{0, 0}, {0.5, 4e6}}},
		{Backend: "vhostd", Case: c64, Rep: 2, PPS: 10e6, IdleCPU: idle, OtherLoad: 3, Seed: 8, GenDrops: 2, BackendDrops: 5},
		{Backend: "vhostd", Case: c64, Rep: 3, Err: errors.New("boom\nmore")},
		{Backend: RefDPDK, Case: c64, Rep: 1, PPS: 6e6, OtherLoad: math.NaN(), GenDrops: -1, BackendDrops: -1},
		{Backend: RefDPDK, Case: c64, Rep: 2, PPS: 12e6, OtherLoad: math.NaN(), Samples: []Sample{{0, 0}, {0.25, 2e6}, {0.5, 5e6}}},
		{Backend: RefOVS, Case: c64, Rep: 1, PPS: 6e6, Retried: 1},
		{Backend: "vhostd", Case: c1518, Rep: 1, PPS: 3e6},
	}
	return res, []Case{c64, c1518}
}

func TestBuildRows(t *testing.T) {
	res, cases := testResults()
	rows := BuildRows(res, cases, []string{"vhostd", RefDPDK, RefOVS})
	if len(rows) != 4 {
		t.Fatalf("%d rows: %+v", len(rows), rows)
	}
	v := rows[0]
	if v.PPS.N != 2 || v.PPS.Median != 9e6 || v.Failed != 1 || v.Err != "boom" || v.Lossy != 1 || v.Dropped != 7 {
		t.Errorf("vhostd row %+v", v)
	}
	if !near(v.VsDPDK, 1) || !near(v.VsOVS, 1.5) || v.IdleCPU.Median != 0.5 || v.OtherLoad.Max != 3 {
		t.Errorf("vhostd ratios %+v", v)
	}
	if rows[1].OtherLoad.N != 0 {
		t.Error("NaN other load counted")
	}
	if r := rows[3]; r.Case.Frame != 1518 || !math.IsNaN(r.VsDPDK) {
		t.Errorf("1518 row without a reference %+v", r)
	}
	SetBaseline(rows, cases[0])
	if !near(rows[0].Base, 1) || !near(rows[3].Base, 1.0/3) || !near(rows[1].Base, 1) {
		t.Errorf("baseline %v %v", rows[0].Base, rows[3].Base)
	}

	var buf bytes.Buffer
	WriteTable(&buf, rows, false)
	out := buf.String()
	for _, want := range []string{"x dpdk-io", "9.000", "1.50x", "n/a", "2/3", "1 of 3 repetitions failed: boom",
		"ovs-dpdk 64B mrg=on: 1 attempt(s) thrown away", "vhostd 64B mrg=on: frames dropped in 1 of 2 repetitions (7 in all"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func readCSV(t *testing.T, f func(w io.Writer) error) [][]string {
	t.Helper()
	var buf bytes.Buffer
	if err := f(&buf); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatalf("CSV does not parse back: %v\n%s", err, buf.String())
	}
	return recs
}

func col(t *testing.T, recs [][]string, row int, name string) string {
	t.Helper()
	for i, h := range recs[0] {
		if h == name {
			return recs[row][i]
		}
	}
	t.Fatalf("no column %q in %v", name, recs[0])
	return ""
}

func TestCSV(t *testing.T) {
	res, cases := testResults()
	rows := BuildRows(res, cases, []string{"vhostd", RefDPDK, RefOVS})
	recs := readCSV(t, func(w io.Writer) error { return WriteResultsCSV(w, []Section{{"vm-vm", rows}}) })
	if len(recs) != 1+len(rows) {
		t.Fatalf("%d records", len(recs))
	}
	if col(t, recs, 1, "backend") != "vhostd" || col(t, recs, 1, "mpps_median") != "9.0000" ||
		col(t, recs, 1, "ratio_ovs_dpdk") != "1.500" || col(t, recs, 4, "ratio_dpdk_io") != "" ||
		col(t, recs, 1, "reps_failed") != "1" || col(t, recs, 1, "gbps_median") != "4.608" ||
		col(t, recs, 1, "reps_with_drops") != "1" || col(t, recs, 1, "dropped") != "7" || col(t, recs, 2, "dropped") != "0" {
		t.Errorf("results.csv: %v", recs[1])
	}
	recs = readCSV(t, func(w io.Writer) error { return WriteRepsCSV(w, res) })
	if len(recs) != 1+len(res) || col(t, recs, 3, "error") != "boom" || col(t, recs, 1, "mpps") != "8.0000" ||
		col(t, recs, 6, "retried") != "1" || col(t, recs, 1, "loop_collapsed") != "false" ||
		col(t, recs, 2, "seed_bursts") != "8" || col(t, recs, 2, "gen_dropped") != "2" || col(t, recs, 2, "backend_dropped") != "5" ||
		col(t, recs, 4, "gen_dropped") != "" || col(t, recs, 1, "gen_dropped") != "0" {
		t.Errorf("reps.csv: %v", recs)
	}
	recs = readCSV(t, func(w io.Writer) error { return WriteSamplesCSV(w, res) })
	// One rate from the first vhostd rep, two from the second dpdk rep.
	if len(recs) != 4 || col(t, recs, 1, "mpps") != "8.0000" || col(t, recs, 3, "t_s") != "0.500" {
		t.Errorf("samples.csv: %v", recs)
	}
	ps := []IdleProbe{{CPU: CPUUse{Interval: time.Second, SchedPct: 0.01}, First: 40 * time.Microsecond, Warm: 5 * time.Microsecond}}
	recs = readCSV(t, func(w io.Writer) error { return WriteIdleCSV(w, ps) })
	if col(t, recs, 1, "first_frame_us") != "40.00" || col(t, recs, 1, "cpu_pct_schedstat") != "0.0100" {
		t.Errorf("idle.csv: %v", recs)
	}
	is := SummarizeIdle(ps)
	var buf bytes.Buffer
	WriteIdle(&buf, is, time.Second)
	if !strings.Contains(buf.String(), "median 40.0 us") || !strings.Contains(buf.String(), "[target <= 1%: ok]") {
		t.Errorf("idle text:\n%s", buf.String())
	}
}

func TestNiceStep(t *testing.T) {
	for _, tc := range []struct{ max, want float64 }{{10, 2}, {7.3, 2}, {1, 0.2}, {0.04, 0.01}, {95, 20}, {0, 1}} {
		if got := NiceStep(tc.max, 5); !near(got, tc.want) {
			t.Errorf("NiceStep(%v) = %v, want %v", tc.max, got, tc.want)
		}
	}
}

func TestSVG(t *testing.T) {
	res, cases := testResults()
	panels := RatePanels(res, cases, []string{"vhostd", RefDPDK, "a<b&c"}, "VM-to-VM ", 0.25)
	if len(panels) != 1 || len(panels[0].Series) != 2 {
		t.Fatalf("panels %+v", panels)
	}
	panels = append(panels, Panel{Title: "<escaped & title>", Series: []Series{{Label: "x<y", Color: BackendColor("other"), Points: []Point{{0, 1}, {1, 2}}}}})
	panels = append(panels, Panel{Title: "empty"})
	var buf bytes.Buffer
	if err := WriteSVG(&buf, `a "title" <here>`, panels); err != nil {
		t.Fatal(err)
	}
	// Well-formed XML, one polyline per non-empty series, escaped text.
	dec := xml.NewDecoder(bytes.NewReader(buf.Bytes()))
	polylines, texts := 0, []string{}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, buf.String())
		}
		switch e := tok.(type) {
		case xml.StartElement:
			if e.Name.Local == "polyline" {
				polylines++
			}
		case xml.CharData:
			texts = append(texts, string(e))
		}
	}
	if polylines != 3 {
		t.Errorf("%d polylines", polylines)
	}
	all := strings.Join(texts, "|")
	for _, want := range []string{`a "title" <here>`, "<escaped & title>", "x<y", "warm-up", "vhostd", RefDPDK, "VM-to-VM 64B mrg=on"} {
		if !strings.Contains(all, want) {
			t.Errorf("SVG text lacks %q: %s", want, all)
		}
	}
	if BackendColor("vhostd") == BackendColor(RefDPDK) || BackendColor("zz") != BackendColor("zz") {
		t.Error("colors")
	}
}

func TestSeedBursts(t *testing.T) {
	q1 := Case{Frame: 64, Queues: 1}
	q2 := Case{Frame: 64, Queues: 2}
	if n := SeedBursts(0, q1); n*genBurst != DefaultSeedFrames {
		t.Errorf("default seed %d bursts at 1 queue, want %d frames", n, DefaultSeedFrames)
	}
	// Per port, over all its queues, the seed must fit one receive ring.
	for _, c := range []Case{q1, q2, {Queues: 0}, {Queues: 64}} {
		n := SeedBursts(0, c)
		if n < 1 || (n*genBurst*max(c.Queues, 1) > genRing && n > 1) {
			t.Errorf("queues %d: %d bursts per stream", c.Queues, n)
		}
	}
	if SeedBursts(64, q2) != 64 {
		t.Error("override ignored")
	}
}

func TestDropCounts(t *testing.T) {
	fs := []testpmd.FwdStats{
		{Port: 0, RxPackets: 100, RxDropped: 1, TxPackets: 90, TxDropped: 10},
		{Port: 1, RxErrors: 2, RxNombufs: 3, TxDropped: 4},
		{Port: -1, RxDropped: 1, TxDropped: 14, RxErrors: 2, RxNombufs: 3},
	}
	if n := FwdDrops(fs); n != 20 {
		t.Errorf("FwdDrops = %d, want 20 (the accumulated block not counted twice)", n)
	}
	st := []control.PortStats{
		{Name: "a", Snapshot: vswitch.Snapshot{Drops: map[string]uint64{"tx_no_buffers": 5, "same_port": 0}}},
		{Name: "uplink", Snapshot: vswitch.Snapshot{Drops: map[string]uint64{"tx_uplink_full": 7}}},
	}
	if n := VhostdDrops(st); n != 12 {
		t.Errorf("VhostdDrops = %d", n)
	}
}

// ovsDpctl is the layout of "ovs-appctl dpctl/show -s" as OVS 3.1's netdev
// datapath prints it with a dpdkvhostuserclient and a net_vhost dpdk port
// ("?" for counters a port does not have), with other numbers. br0 drops
// what NORMAL floods to it before the MACs are learned: not the loop's.
const ovsDpctl = `netdev@ovs-netdev:
  lookups: hit:2000 missed:3 lost:1
  flows: 2
  port 0: ovs-netdev (tap)
    RX packets:0 errors:0 dropped:0 overruns:0 frame:0
    TX packets:0 errors:0 dropped:9 aborted:0 carrier:0
    collisions:0
    RX bytes:0  TX bytes:0
  port 1: br0 (tap)
    RX packets:0 errors:0 dropped:0 overruns:0 frame:0
    TX packets:0 errors:0 dropped:5 aborted:0 carrier:0
    collisions:0
    RX bytes:0  TX bytes:0
  port 2: a (dpdkvhostuserclient: configured_rx_queues=1, configured_tx_queues=1, mtu=1500, requested_rx_queues=1, requested_tx_queues=1)
    RX packets:1000 errors:? dropped:2 overruns:? frame:?
    TX packets:1000 errors:? dropped:30 aborted:? carrier:?
    collisions:?
    RX bytes:60000 (58.6 KiB)  TX bytes:60000 (58.6 KiB)
  port 3: u (dpdk: configured_rx_queues=1, configured_rxq_descriptors=2048, configured_tx_queues=1, mtu=1500)
    RX packets:1000 errors:4 dropped:0 overruns:? frame:?
    TX packets:1000 errors:0 dropped:0 aborted:? carrier:?
    collisions:?
    RX bytes:60000 (58.6 KiB)  TX bytes:60000 (58.6 KiB)
`

func TestParseOVSDrops(t *testing.T) {
	n, err := ParseOVSDrops(ovsDpctl, []string{"a", "u"})
	if err != nil || n != 1+2+30+4 {
		t.Errorf("ParseOVSDrops = %d, %v; want 37 (lost upcalls and ports a, u; not br0 or ovs-netdev)", n, err)
	}
	if _, err := ParseOVSDrops(ovsDpctl, []string{"a", "b"}); err == nil {
		t.Error("missing port b accepted")
	}
}

// fakeBackend is a reference backend whose Start fails with err.
type fakeBackend struct{ err error }

func (f fakeBackend) Name() string         { return "fake" }
func (f fakeBackend) Check() error         { return nil }
func (f fakeBackend) FrontendServer() bool { return false }
func (f fakeBackend) Start(context.Context, RunEnv) (Instance, error) {
	return nil, f.err
}

func TestSkipPerTopology(t *testing.T) {
	r := NewRunner(Options{}, NewTracker(), t.TempDir(), io.Discard)
	vm := Case{Frame: 64, Topology: VMToVM, Queues: 1}
	up := Case{Frame: 64, Topology: VMUplink, Queues: 1}
	b := fakeBackend{err: fmt.Errorf("ovs-dpdk: %w: no net_vhost", ErrUnsupported)}
	r.startFailed(b, up, b.err)
	if !r.skipped(b, up) || r.skipped(b, vm) {
		t.Errorf("after an unsupported uplink: skipped uplink %v, vm-vm %v", r.skipped(b, up), r.skipped(b, vm))
	}
	if !strings.Contains(r.Skipped[SkipKey("fake", VMUplink)], "no net_vhost") {
		t.Errorf("reason %q", r.Skipped[SkipKey("fake", VMUplink)])
	}
	// An ordinary failure is forgiven once.
	other := errors.New("busy")
	r.startFailed(b, vm, other)
	if r.skipped(b, vm) {
		t.Error("skipped after one failure")
	}
	r.startFailed(b, vm, other)
	if !r.skipped(b, vm) {
		t.Error("not skipped after two failures in a row")
	}
	// vhostd is never skipped.
	v := &Vhostd{}
	r.startFailed(v, up, b.err)
	r.startFailed(v, up, other)
	r.startFailed(v, up, other)
	if r.skipped(v, up) {
		t.Error("vhostd skipped")
	}
}

// TestPackedRows: the packed section's cases are named apart from their
// split twins, ask the generator for packed_vq, and report the ratio to
// dpdk-io on packed rings and to the backend's own split figure.
func TestPackedRows(t *testing.T) {
	res, cases := testResults()
	split := BuildRows(res, cases, []string{"vhostd", RefDPDK})
	pc := PackedCases([]int{64, 1518}, true)
	if len(pc) != 2 || pc[0].Name() != "64B mrg=on packed" || !pc[0].Packed || pc[0].Split() != cases[0] {
		t.Fatalf("packed cases %+v", pc)
	}
	pres := []RepResult{
		{Backend: "vhostd", Case: pc[0], Rep: 1, PPS: 9e6},
		{Backend: RefDPDK, Case: pc[0], Rep: 1, PPS: 6e6},
		{Backend: "vhostd", Case: pc[1], Rep: 1, PPS: 2e6},
	}
	rows := BuildRows(pres, pc, []string{"vhostd", RefDPDK})
	SetSplitBase(rows, split)
	if !near(rows[0].VsDPDK, 1.5) || !near(rows[0].Base, 1) || !near(rows[1].Base, 6.0/9) {
		t.Errorf("packed 64B ratios: vhostd x dpdk %v x split %v, dpdk x split %v", rows[0].VsDPDK, rows[0].Base, rows[1].Base)
	}
	// 1518B mrg=on was not measured split (testResults has mrg=off).
	if !math.IsNaN(rows[2].Base) {
		t.Errorf("1518B x split %v, want n/a", rows[2].Base)
	}
	var buf bytes.Buffer
	WritePackedTable(&buf, rows)
	for _, want := range []string{"x dpdk-io packed", "x own split", "64B mrg=on packed", "1.50x", "1.00x", "n/a"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("packed table lacks %q:\n%s", want, buf.String())
		}
	}
}
