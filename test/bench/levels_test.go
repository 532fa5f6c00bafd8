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
