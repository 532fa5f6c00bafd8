package matrix

import (
	"bytes"
	"encoding/csv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/vhost"
)

func names(cs []Combination) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func TestCombinations(t *testing.T) {
	got := names(Combinations([]string{"event_idx", "indirect_desc", "mrg_rxbuf", "version_1"}))
	want := []string{"baseline", "no-event_idx", "no-indirect_desc", "no-mrg_rxbuf", "no-version_1",
		"no-mrg_rxbuf+version_1", "no-event_idx+indirect_desc", // mq x in_order left out: not maskable here
		"mq2", // mq2+no-in_order left out: in_order not maskable here
		"fe-no-mrg_rxbuf", "fe-no-in_order"}
	if !slices.Equal(got, want) {
		t.Errorf("Combinations = %v, want %v", got, want)
	}
	got = names(Combinations([]string{"event_idx", "ring_packed"}))
	want = []string{"baseline", "no-event_idx", "no-ring_packed", "mq2",
		"packed", "packed+no-event_idx", "packed+mq2", "fe-no-mrg_rxbuf", "fe-no-in_order"}
	if !slices.Equal(got, want) {
		t.Errorf("Combinations with ring_packed = %v, want %v", got, want)
	}
}

// TestDefaultCombinations checks the real list: one row per maskable
// feature, every pair, unique names fit for file names, and Reduced drawn
// from it.
func TestDefaultCombinations(t *testing.T) {
	all := DefaultCombinations()
	seen := map[string]bool{}
	for _, c := range all {
		if seen[c.Name] {
			t.Errorf("combination %s twice", c.Name)
		}
		seen[c.Name] = true
		if strings.Trim(c.Name, "abcdefghijklmnopqrstuvwxyz0123456789_+-") != "" {
			t.Errorf("combination name %q has characters unfit for a file name", c.Name)
		}
		if _, err := vhost.ParseFeatureMask(c.Disable); err != nil {
			t.Errorf("combination %s: vhostd would refuse disable=%s: %v", c.Name, c.DisableArg(), err)
		}
	}
	for _, f := range vhost.Maskable() {
		if !seen["no-"+f] {
			t.Errorf("no row for maskable feature %s", f)
		}
	}
	for _, p := range Pairs {
		if !slices.Contains(vhost.Maskable(), p[0]) || !slices.Contains(vhost.Maskable(), p[1]) {
			continue // not offered (yet): no row
		}
		if !seen["no-"+p[0]+"+"+p[1]] {
			t.Errorf("no row for pair %v", p)
		}
	}
	if _, err := Select(all, Reduced); err != nil {
		t.Error(err)
	}
	if _, err := Select(all, []string{"no-such"}); err == nil {
		t.Error("Select of an unknown name: no error")
	}
}

func TestRuns(t *testing.T) {
	fe := Combination{Name: "fe-no-in_order", FrontendOff: []string{"in_order"}}
	if !fe.Runs(Testpmd) || fe.Runs(QEMU) {
		t.Errorf("a frontend-knob row runs with testpmd only")
	}
	if c := (Combination{Name: "no-mq", Disable: []string{"mq"}}); !c.Runs(Testpmd) || !c.Runs(QEMU) {
		t.Errorf("a masked row runs with both frontends")
	}
}

// passing is a row that Judge passes; each case of TestJudge breaks one
// thing in it.
func passing() Row {
	f := []string{"indirect_desc", "version_1"}
	return Row{
		Combination: Combination{Name: "no-mrg_rxbuf", Disable: []string{"mrg_rxbuf"}},
		Frontend:    Testpmd,
		Features:    f, FeaturesB: f,
		ProtocolFeatures: []string{"mq"}, ProtocolFeaturesB: []string{"mq"},
		Sent: 100, Received: 100, VhostRx: 100, VhostTx: 100,
	}
}

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Row)
		why  string // a substring of Why; "" means the row passes
	}{
		{"pass", func(*Row) {}, ""},
		{"run error", func(r *Row) { r.Err = "testpmd: links down" }, "links down"},
		{"no negotiation", func(r *Row) { r.Features, r.FeaturesB, r.Sent = nil, nil, 0 }, "no features acked"},
		{"ports differ", func(r *Row) { r.FeaturesB = []string{"version_1"} }, "different features"},
		{"masked acked", func(r *Row) {
			r.Features = append(r.Features, "mrg_rxbuf")
			r.FeaturesB = r.Features
		}, "masked feature mrg_rxbuf was acked"},
		{"frontend off acked", func(r *Row) { r.Combination.FrontendOff = []string{"version_1"} }, "frontend turned it off"},
		{"nothing sent", func(r *Row) { r.Sent, r.Received = 0, 0 }, "nothing sent"},
		{"lost", func(r *Row) { r.Received = 98 }, "98 of 100 frames"},
		{"drops", func(r *Row) { r.Drops = map[string]uint64{"no_rx_buffer": 2} }, "dropped 2 frames (no_rx_buffer=2)"},
		{"counters", func(r *Row) { r.VhostRx = 101 }, "vhostd counted rx 101"},
		{"bytes", func(r *Row) { r.SentBytes, r.VhostRxBytes = 6000, 6200 }, "vhostd counted rx 6200 tx 0 bytes"},
		{"no SET_FEATURES", func(r *Row) { r.Features, r.FeaturesB = nil, nil }, "never sent SET_FEATURES"},
		{"no SET_FEATURES, header sizes differ", func(r *Row) {
			r.Features, r.FeaturesB, r.SentBytes, r.VhostRxBytes = nil, nil, 6000, 6200
		}, "different virtio-net header sizes"},
		{"SET_FEATURES but nothing acked", func(r *Row) {
			r.Features, r.FeaturesB = nil, nil
			r.Events = []vhost.TraceEvent{{Kind: vhost.TraceRequest, Request: "SET_FEATURES"}}
		}, "no features acked"},
		{"qemu counters not compared", func(r *Row) { r.Frontend, r.VhostRx, r.VhostTx = QEMU, 150, 140 }, ""},
		{"qemu lost", func(r *Row) { r.Frontend, r.Received = QEMU, 17 }, "17 of 100 pings"},
		{"mq", func(r *Row) { mq(r) }, ""},
		{"packed not acked", func(r *Row) { r.Combination.Packed = true }, "ring_packed was not acked"},
		{"packed", func(r *Row) {
			r.Combination.Packed = true
			r.Features = append(r.Features, "ring_packed")
			r.FeaturesB = r.Features
		}, ""},
		{"mq ring not running", func(r *Row) { mq(r); r.RunningRings[1] = 2 }, "port b runs 2 rings, want 4"},
		{"mq queue idle", func(r *Row) { mq(r); delete(r.QueueFrames, "b:tx1") }, "b: queue tx1 carried nothing"},
		{"mq qemu queue idle", func(r *Row) { mq(r); r.Frontend = QEMU; delete(r.QueueFrames, "b:tx1") }, ""},
	} {
		r := passing()
		tc.edit(&r)
		Judge(&r)
		if tc.why == "" {
			if !r.Pass {
				t.Errorf("%s: failed: %s", tc.name, r.Why)
			}
			continue
		}
		if r.Pass || !strings.Contains(r.Why, tc.why) {
			t.Errorf("%s: pass %v why %q, want a failure saying %q", tc.name, r.Pass, r.Why, tc.why)
		}
	}
}

// mq makes r a two-queue-pair row in which every queue carried frames.
func mq(r *Row) {
	r.Combination.QueuePairs = 2
	r.RunningRings = [2]int{4, 4}
	r.QueueFrames = map[string]uint64{}
	for _, k := range []string{"a:rx0", "a:rx1", "a:tx0", "a:tx1", "b:rx0", "b:rx1", "b:tx0", "b:tx1"} {
		r.QueueFrames[k] = 25
	}
}

func TestFormatDrops(t *testing.T) {
	if got := FormatDrops(nil); got != "-" {
		t.Errorf("FormatDrops(nil) = %q", got)
	}
	var d map[string]uint64
	AddDrops(&d, map[string]uint64{"b": 1, "a": 0})
	AddDrops(&d, map[string]uint64{"b": 2, "c": 5})
	if got := FormatDrops(d); got != "b=3 c=5" {
		t.Errorf("FormatDrops = %q", got)
	}
}

func rows() []Row {
	ok := passing()
	Judge(&ok)
	bad := passing()
	bad.Combination = Combination{Name: "fe-no-in_order", FrontendOff: []string{"in_order"}}
	bad.Frontend = Testpmd
	bad.Received = 90
	bad.Drops = map[string]uint64{"no_rx_buffer": 10}
	bad.EarlyDrops = map[string]uint64{"tx_not_ready": 3}
	bad.Events = []vhost.TraceEvent{
		{Time: time.Date(2026, 12, 4, 20, 0, 0, 0, time.UTC), Port: "a", Kind: vhost.TraceRequest, Request: "SET_FEATURES",
			Flags: []string{"NEED_REPLY"}, Fields: vhost.Fields{{Name: "features", Value: "version_1|in_order"}}},
		{Time: time.Date(2026, 12, 4, 20, 0, 0, 1000, time.UTC), Port: "a", Kind: vhost.TraceNack, Request: "SET_VRING_ADDR", Error: "bad | address"},
	}
	Judge(&bad)
	return []Row{ok, bad}
}

func TestWriteMarkdown(t *testing.T) {
	rs := rows()
	rs[1].Trace = "trace-x.txt"
	rs[1].Violations = map[string]uint64{"b:SET_VRING_KICK": 1, "a:avail_flags": 7}
	var b bytes.Buffer
	if err := WriteMarkdown(&b, rs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	want := []string{
		"| combination | frontend | masked | acked features | acked protocol features | sent | received | vhostd drops | driver violations | result | why |",
		"|---|---|---|---|---|---:|---:|---|---|---|---|",
		"| no-mrg_rxbuf | testpmd | mrg_rxbuf | indirect_desc,version_1 | mq | 100 | 100 | - | - | pass | 100/100 frames |",
		"| fe-no-in_order | testpmd | frontend: in_order | indirect_desc,version_1 | mq | 100 | 90 | no_rx_buffer=10 (before: tx_not_ready=3) | a:avail_flags=7 b:SET_VRING_KICK=1 | FAIL | 90 of 100 frames came back (trace: [trace-x.txt](trace-x.txt)) |",
		"",
		"2 rows: 1 pass, 1 fail.",
	}
	if !slices.Equal(lines[:len(want)], want) {
		t.Errorf("markdown:\n%s\nwant:\n%s", b.String(), strings.Join(want, "\n"))
	}
}

func TestWriteCSV(t *testing.T) {
	rs := rows()
	rs[1].Violations = map[string]uint64{"a:kick_while_disabled": 2}
	var b bytes.Buffer
	if err := WriteCSV(&b, rs); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || !slices.Equal(recs[0], CSVHeader) {
		t.Fatalf("csv: %q", recs)
	}
	got := map[string]string{}
	for i, h := range CSVHeader {
		got[h] = recs[2][i]
	}
	for k, v := range map[string]string{"combination": "fe-no-in_order", "frontend": "testpmd", "disable": "",
		"frontend_off": "in_order", "features": "indirect_desc+version_1", "sent": "100", "received": "90",
		"drops": "no_rx_buffer=10", "early_drops": "tx_not_ready=3", "result": "fail", "why": "90 of 100 frames came back",
		"violations": "a:kick_while_disabled=2"} {
		if got[k] != v {
			t.Errorf("csv %s = %q, want %q", k, got[k], v)
		}
	}
	if recs[1][slices.Index(CSVHeader, "drops")] != "" {
		t.Errorf("passing row's drops %q, want empty", recs[1][slices.Index(CSVHeader, "drops")])
	}
}

// TestSave checks the files Save writes: the table, the CSV, a trace for
// the failing row only (named in the table), and no trace left from an
// earlier run.
func TestSave(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "trace-old-qemu.txt")
	os.WriteFile(stale, []byte("x"), 0o644)
	rs := rows()
	if err := Save(dir, rs); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("a trace of an earlier run was left behind")
	}
	if rs[0].Trace != "" || rs[1].Trace != "trace-fe-no-in_order-testpmd.txt" {
		t.Fatalf("trace names %q %q", rs[0].Trace, rs[1].Trace)
	}
	tr, err := os.ReadFile(filepath.Join(dir, rs[1].Trace))
	if err != nil {
		t.Fatal(err)
	}
	want := "20:00:00.000000 a request    SET_FEATURES [NEED_REPLY] features=version_1|in_order\n" +
		"20:00:00.000001 a nack       SET_VRING_ADDR: bad | address\n"
	if string(tr) != want {
		t.Errorf("trace file:\n%s\nwant:\n%s", tr, want)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "matrix.md"))
	if !strings.Contains(string(md), "(trace: [trace-fe-no-in_order-testpmd.txt](trace-fe-no-in_order-testpmd.txt))") {
		t.Errorf("table does not name the trace:\n%s", md)
	}
	if _, err := os.Stat(filepath.Join(dir, "matrix.csv")); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "trace-no-mrg_rxbuf-testpmd.txt")); err == nil {
		t.Error("a passing row got a trace file")
	}
}
