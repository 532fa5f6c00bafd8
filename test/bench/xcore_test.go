package main

import (
	"bytes"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestSpearman(t *testing.T) {
	for _, c := range []struct {
		name   string
		xs, ys []float64
		want   float64
	}{
		{"same order", []float64{1, 2, 3, 4}, []float64{10, 20, 30, 400}, 1},
		{"reversed", []float64{1, 2, 3, 4}, []float64{9, 7, 5, 1}, -1},
		{"ties", []float64{1, 1, 2, 3}, []float64{5, 5, 6, 7}, 1},
		{"none", []float64{1, 2, 3, 4, 5}, []float64{3, 1, 5, 2, 4}, 0.3},
	} {
		if got := Spearman(c.xs, c.ys); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	for _, bad := range [][2][]float64{{{1, 2}, {1, 2}}, {{1, 1, 1}, {1, 2, 3}}, {{1, 2, 3}, {1, 2}}} {
		if got := Spearman(bad[0], bad[1]); !math.IsNaN(got) {
			t.Errorf("Spearman(%v, %v) = %v, want NaN", bad[0], bad[1], got)
		}
	}
}

func TestCrossCoreRTT(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Fatalf("the bench needs 2 CPUs, this machine has %d", runtime.NumCPU())
	}
	ns, err := CrossCoreRTT(0, 1, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// Tens to hundreds of ns on idle cores; a busy machine may
	// deschedule the responder, but not for 10 ms at the median.
	if ns <= 0 || ns > 1e7 {
		t.Errorf("round trip %v ns", ns)
	}
	if _, err := CrossCoreRTT(0, 4095, 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "CPU 4095") {
		t.Errorf("a CPU that does not exist: %v", err)
	}
}

func TestWriteMachineState(t *testing.T) {
	c := Case{Frame: 64, MrgRxbuf: true, Topology: VMToVM}
	var rs []RepResult
	for i, v := range []float64{90, 120, 200, 60} {
		rs = append(rs, RepResult{Backend: "vhostd", Case: c, PPS: 1e7 - v*1e4, XCoreNs: v, Rep: i + 1})
	}
	rs = append(rs, RepResult{Backend: "vhostd", Case: c, PPS: 1, XCoreNs: math.NaN()})
	var b bytes.Buffer
	WriteMachineState(&b, rs, []Case{c}, []string{"vhostd", "dpdk-io"}, 0, 1)
	out := b.String()
	for _, want := range []string{"median 120 ns (60..200, 4 repetitions)", "vhostd: " + c.Name() + " -1.00"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "dpdk-io") {
		t.Errorf("a backend without repetitions listed:\n%s", out)
	}
}
