package main

import (
	"bytes"
	"errors"
	"math"
	"math/rand"
	"strings"
	"testing"
)

// jitter returns n values around v, each within ±spread of it.
func jitter(r *rand.Rand, n int, v, spread float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = v * (1 + spread*(2*r.Float64()-1))
	}
	return out
}

func TestRateLevels(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	two := append(jitter(r, 300, 17e6, 0.1), jitter(r, 100, 7.4e6, 0.1)...)
	l := RateLevels(two)
	if !l.Two || math.Abs(l.Fast/17e6-1) > 0.03 || math.Abs(l.Slow/7.4e6-1) > 0.03 || math.Abs(l.SlowShare-0.25) > 1e-9 || l.N != 400 {
		t.Errorf("two levels (17 and 7.4 Mpps, 25%% slow): %+v", l)
	}
	// One wide spread is not two levels, nor is a narrow one.
	uni := make([]float64, 400)
	for i := range uni {
		uni[i] = 7e6 + 10e6*r.Float64()
	}
	for name, vs := range map[string][]float64{
		"uniform 7..17":   uni,
		"one level ±10%":  jitter(r, 400, 15e6, 0.1),
		"levels too near": append(jitter(r, 200, 15e6, 0.02), jitter(r, 200, 11e6, 0.02)...),
		"slow too rare":   append(jitter(r, 395, 17e6, 0.1), jitter(r, 5, 7e6, 0.1)...),
	} {
		if l := RateLevels(vs); l.Two || math.IsNaN(l.Fast) {
			t.Errorf("%s: called two levels, or no median: %+v", name, l)
		}
	}
	if l := RateLevels(append(jitter(r, 200, 15e6, 0.02), jitter(r, 200, 11e6, 0.02)...)); l.D < MinLevelSeparation {
		t.Errorf("well separated levels (1.36x apart) gave D %.2f: the ratio, not D, should be what refuses them", l.D)
	}
	if l := RateLevels(nil); l.N != 0 || !math.IsNaN(l.Fast) || l.Two {
		t.Errorf("no samples: %+v", l)
	}
	if l := RateLevels([]float64{5e6, 0, -1, math.Inf(1)}); l.N != 1 || math.Abs(l.Fast/5e6-1) > 1e-12 || l.Two {
		t.Errorf("one usable sample: %+v", l)
	}
}

// samplesAt builds a counter whose 250 ms rates are rates, after a
// warm-up of 2 s at 1 Mpps.
func samplesAt(rates []float64) []Sample {
	ss := []Sample{{0, 0}}
	var n float64
	for t := 0.25; t <= 2.0; t += 0.25 {
		n += 1e6 * 0.25
		ss = append(ss, Sample{t, uint64(n)})
	}
	for i, r := range rates {
		n += r * 0.25
		ss = append(ss, Sample{2 + 0.25*float64(i+1), uint64(n)})
	}
	return ss
}

func TestWriteLevels(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	c := Case{Frame: 64, MrgRxbuf: true, Topology: VMToVM}
	var rs []RepResult
	add := func(backend string, rates []float64) {
		rs = append(rs, RepResult{Backend: backend, Case: c, Rep: len(rs) + 1, Span: 0.25 * float64(len(rates)), Samples: samplesAt(rates)})
	}
	// vhostd: 16 fast, 8 slow; dpdk-io 10 fast, 5 slow (the host's two
	// paces), OVS one level; a failed repetition counts for nothing.
	add("vhostd", append(jitter(r, 20, 16e6, 0), jitter(r, 10, 8e6, 0)...))
	add(RefDPDK, append(jitter(r, 20, 10e6, 0), jitter(r, 10, 5e6, 0)...))
	add(RefOVS, jitter(r, 30, 6e6, 0))
	rs = append(rs, RepResult{Backend: RefDPDK, Case: c, Err: errors.New("failed"), Span: 1, Samples: samplesAt(jitter(r, 4, 1e3, 0))})
	lv := CaseLevels(rs, c, []string{"vhostd", RefDPDK, RefOVS})
	if v := lv["vhostd"]; !v.Two || v.N != 30 {
		t.Fatalf("vhostd: %+v (the warm-up's samples must not count)", v)
	}
	var b bytes.Buffer
	WriteLevels(&b, rs, []Case{c}, []string{"vhostd", RefDPDK, RefOVS})
	out := b.String()
	for _, want := range []string{"vhostd 16.00 / 8.00 (33% slow)", RefDPDK + " 10.00 / 5.00 (33% slow)", RefOVS + " one level, 6.00", "vhostd x " + RefDPDK + " 1.60x fast, 1.60x slow"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "x "+RefOVS) {
		t.Errorf("a ratio to a backend with one level:\n%s", out)
	}
}

// TestLevelCosts: cycles per frame by level come from the repetitions
// that stayed in one level; a repetition that flipped between them counts
// for neither, a level with too few repetitions gets no figure, and a
// case where every backend has one level gets no line.
func TestLevelCosts(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	c := Case{Frame: 64, MrgRxbuf: true, Topology: VMToVM}
	var rs []RepResult
	add := func(backend string, rates []float64, cpf uint64) {
		rs = append(rs, RepResult{Backend: backend, Case: c, Rep: len(rs) + 1, Span: 0.25 * float64(len(rates)), Samples: samplesAt(rates),
			Cost: &Cost{Cycles: cpf * 1000, Frames: 1000, TSCHz: 2.6e9}})
	}
	for i := uint64(0); i < 4; i++ {
		add("vhostd", jitter(r, 20, 16e6, 0.05), 118+i) // fast: 118..121
		add(RefDPDK, jitter(r, 20, 10e6, 0.05), 158+i)  // 158..161
		add(RefOVS, jitter(r, 20, 6e6, 0.05), 310)
	}
	for i := uint64(0); i < 3; i++ {
		add("vhostd", jitter(r, 20, 8e6, 0.05), 240+i) // slow: median 241
		add(RefDPDK, jitter(r, 20, 5e6, 0.05), 300+i)  // 301
	}
	// Half fast, half slow: in neither level, however costly.
	add("vhostd", append(jitter(r, 10, 16e6, 0.05), jitter(r, 10, 8e6, 0.05)...), 999)
	lv := CaseLevels(rs, c, []string{"vhostd", RefDPDK, RefOVS})
	lc := CaseLevelCosts(rs, c, lv)
	if v := lc["vhostd"]; v.NFast != 4 || v.NSlow != 3 || v.Fast != 119.5 || v.Slow != 241 {
		t.Errorf("vhostd: %+v", v)
	}
	if o := lc[RefOVS]; o.NFast != 4 || o.Fast != 310 || !math.IsNaN(o.Slow) {
		t.Errorf("ovs (one level): %+v", o)
	}
	var b bytes.Buffer
	WriteLevels(&b, rs, []Case{c}, []string{"vhostd", RefDPDK, RefOVS})
	out := b.String()
	for _, want := range []string{"vhostd 120 (4) / 241 (3)", RefDPDK + " 160 (4) / 301 (3)", RefOVS + " one level, 310 (4)",
		"vhostd x " + RefDPDK + " 0.75x fast, 0.80x slow"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	// One slow repetition is too few for a median: no slow figure, no
	// slow ratio.
	var few []RepResult
	for _, x := range rs {
		if !(x.Backend == RefDPDK && x.Cost.Cycles/x.Cost.Frames >= 300 && x.Cost.Cycles/x.Cost.Frames < 302) {
			few = append(few, x)
		}
	}
	b.Reset()
	WriteLevels(&b, few, []Case{c}, []string{"vhostd", RefDPDK, RefOVS})
	if out := b.String(); !strings.Contains(out, RefDPDK+" 160 (4) / - (1 reps)") || !strings.HasSuffix(strings.TrimSpace(out), "vhostd x "+RefDPDK+" 0.75x fast") {
		t.Errorf("too few slow repetitions:\n%s", out)
	}
	// Every backend one level: no cycles line.
	var one []RepResult
	for _, x := range rs {
		if x.Backend == RefOVS {
			one = append(one, x)
		}
	}
	b.Reset()
	WriteLevels(&b, one, []Case{c}, []string{RefOVS})
	if strings.Contains(b.String(), "cycles/frame by level") {
		t.Errorf("a cycles line without two levels:\n%s", b.String())
	}
}
