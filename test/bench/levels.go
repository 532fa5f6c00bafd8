package main

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
)

// Rate levels. On some hosts a backend's rate does not spread around one
// value: it flips, inside a window and for seconds at a time, between two
// levels about twice apart, for every backend alike (seen when the host
// moves a vCPU between cores that share an L3 and cores that do not:
// docs/bench.md, "A fifth machine"). A median over repetitions then
// depends on how much of each backend's time the host spent in the slow
// level, which is chance; the ratio of two backends inside one level does
// not. The section finds the levels in the 250 ms samples of the windows.

// Thresholds for calling a set of samples two levels rather than one wide
// spread: the level medians at least MinLevelRatio apart, the levels
// separated by at least MinLevelSeparation pooled standard deviations (of
// the logarithms: Ashman's D), and each level at least MinLevelShare of
// the samples and MinLevelSamples of them. A uniform spread from 7 to 17
// Mpps gives D of about 3.4; the two-level runs seen here gave 4.5 to 6.3.
const (
	MinLevelRatio      = 1.5
	MinLevelSeparation = 4.0
	MinLevelShare      = 0.1
	MinLevelSamples    = 8
)

// Levels is what RateLevels found in one backend's samples of one case.
type Levels struct {
	// N is the number of samples.
	N int
	// Two is true when the samples form two levels; Slow and Fast are
	// then their medians and SlowShare the slow level's share of the
	// samples. Otherwise Fast is the median of all and Slow NaN.
	Two        bool
	Slow, Fast float64
	SlowShare  float64
	// D is the separation of the best two-way split, in pooled standard
	// deviations of the logarithms (NaN for fewer than two samples).
	D float64
}

// RateLevels splits rates (positive values; others are ignored) into the
// two groups that minimise the spread of their logarithms around each
// group's mean, and says whether they are two levels (see the Min*
// constants) or one.
func RateLevels(rates []float64) Levels {
	var ls []float64
	for _, r := range rates {
		if r > 0 && !math.IsInf(r, 0) {
			ls = append(ls, math.Log(r))
		}
	}
	sort.Float64s(ls)
	n := len(ls)
	lv := Levels{N: n, Slow: nan(), Fast: nan(), SlowShare: nan(), D: nan()}
	if n == 0 {
		return lv
	}
	lv.Fast = math.Exp(median(ls))
	if n < 2 {
		return lv
	}
	// Best split of the sorted values: k values below, n-k above.
	pre, pre2 := make([]float64, n+1), make([]float64, n+1)
	for i, x := range ls {
		pre[i+1], pre2[i+1] = pre[i]+x, pre2[i]+x*x
	}
	sse := func(a, b int) float64 { // of ls[a:b] around its mean
		s, q, m := pre[b]-pre[a], pre2[b]-pre2[a], float64(b-a)
		return math.Max(0, q-s*s/m)
	}
	best, k := math.Inf(1), 0
	for i := 1; i < n; i++ {
		if w := sse(0, i) + sse(i, n); w < best {
			best, k = w, i
		}
	}
	lo, hi := ls[:k], ls[k:]
	mlo, mhi := pre[k]/float64(k), (pre[n]-pre[k])/float64(n-k)
	pooled := math.Sqrt((sse(0, k)/float64(k) + sse(k, n)/float64(n-k)) / 2)
	switch {
	case pooled > 0:
		lv.D = (mhi - mlo) / pooled
	case mhi > mlo:
		lv.D = math.Inf(1)
	default:
		lv.D = 0
	}
	slow, fast := math.Exp(median(lo)), math.Exp(median(hi))
	share := float64(k) / float64(n)
	if fast/slow >= MinLevelRatio && lv.D >= MinLevelSeparation &&
		share >= MinLevelShare && 1-share >= MinLevelShare && k >= MinLevelSamples && n-k >= MinLevelSamples {
		lv.Two, lv.Slow, lv.Fast, lv.SlowShare = true, slow, fast, share
	}
	return lv
}

// windowRates returns a repetition's rates over its measured window (the
// last Span seconds of its samples; the warm-up before is left out).
func windowRates(r RepResult) []float64 {
	ps := Rates(r.Samples)
	if len(ps) == 0 || r.Span <= 0 {
		return nil
	}
	from := ps[len(ps)-1].T - r.Span
	var out []float64
	for _, p := range ps {
		if p.T > from+1e-6 {
			out = append(out, p.V)
		}
	}
	return out
}

// CaseLevels returns, per backend of names, the levels of its window
// samples pooled over the repetitions of case c (failed and pooled
// repetitions, which have no samples, are left out).
func CaseLevels(results []RepResult, c Case, names []string) map[string]Levels {
	rates := map[string][]float64{}
	for _, r := range results {
		if r.Err != nil || r.Pooled || r.Case.Name() != c.Name() {
			continue
		}
		rates[r.Backend] = append(rates[r.Backend], windowRates(r)...)
	}
	out := map[string]Levels{}
	for _, n := range names {
		if len(rates[n]) > 0 {
			out[n] = RateLevels(rates[n])
		}
	}
	return out
}

// Cycles per frame by level. A backend's cost counters are read at the
// start and the end of each window, not per sample, so a level's cycles
// per frame come from the repetitions that stayed in it: those with at
// least LevelRepShare of their window's samples on its side of the
// boundary between the two levels (their geometric mean). A level's
// figure is the median over at least MinLevelReps such repetitions.
const (
	LevelRepShare = 0.9
	MinLevelReps  = 3
)

// LevelCost is one backend's cycles per frame in each level of a case:
// Fast and Slow are medians over NFast and NSlow repetitions (NaN when
// fewer than MinLevelReps). For a backend with one level, Fast is the
// median over all its repetitions with a cost.
type LevelCost struct {
	Fast, Slow   float64
	NFast, NSlow int
}

// CaseLevelCosts returns, per backend with levels in lv, its cycles per
// frame by level in case c.
func CaseLevelCosts(results []RepResult, c Case, lv map[string]Levels) map[string]LevelCost {
	fast, slow := map[string][]float64{}, map[string][]float64{}
	for _, r := range results {
		l, ok := lv[r.Backend]
		if !ok || r.Err != nil || r.Pooled || r.Cost == nil || r.Cost.Frames == 0 || r.Case.Name() != c.Name() {
			continue
		}
		cpf := float64(r.Cost.Cycles) / float64(r.Cost.Frames)
		if !l.Two {
			fast[r.Backend] = append(fast[r.Backend], cpf)
			continue
		}
		rates := windowRates(r)
		if len(rates) == 0 {
			continue
		}
		edge, below := math.Sqrt(l.Slow*l.Fast), 0
		for _, x := range rates {
			if x < edge {
				below++
			}
		}
		switch share := float64(below) / float64(len(rates)); {
		case share <= 1-LevelRepShare:
			fast[r.Backend] = append(fast[r.Backend], cpf)
		case share >= LevelRepShare:
			slow[r.Backend] = append(slow[r.Backend], cpf)
		}
	}
	out := map[string]LevelCost{}
	for n := range lv {
		lc := LevelCost{Fast: nan(), Slow: nan(), NFast: len(fast[n]), NSlow: len(slow[n])}
		if lc.NFast >= MinLevelReps {
			lc.Fast = median(fast[n])
		}
		if lc.NSlow >= MinLevelReps {
			lc.Slow = median(slow[n])
		}
		out[n] = lc
	}
	return out
}

// WriteLevels writes, per case, each backend's rate levels, and vhostd's
// ratio to every other backend inside each level when both show two; and
// under it, when a backend shows two levels, the cycles per frame by
// level (CaseLevelCosts) with vhostd's ratios inside each level.
func WriteLevels(w io.Writer, results []RepResult, cases []Case, names []string) {
	first := true
	for _, c := range cases {
		lv := CaseLevels(results, c, names)
		if len(lv) == 0 {
			continue
		}
		if first {
			fmt.Fprintf(w, "  rate levels (the windows' 250 ms samples, pooled over repetitions; two levels when the host changed pace during the runs: fast / slow median Mpps, share of samples in the slow one; ratios of vhostd to each backend inside a level, which the host's share of slow time does not move):\n")
			first = false
		}
		var parts []string
		for _, n := range names {
			l, ok := lv[n]
			if !ok {
				continue
			}
			if l.Two {
				parts = append(parts, fmt.Sprintf("%s %.2f / %.2f (%.0f%% slow)", n, l.Fast/1e6, l.Slow/1e6, 100*l.SlowShare))
			} else {
				parts = append(parts, fmt.Sprintf("%s one level, %.2f", n, l.Fast/1e6))
			}
		}
		line := fmt.Sprintf("    %s: %s", c.Name(), strings.Join(parts, "; "))
		if v, ok := lv["vhostd"]; ok && v.Two {
			var rs []string
			for _, n := range names {
				if o, ok := lv[n]; ok && n != "vhostd" && o.Two {
					rs = append(rs, fmt.Sprintf("x %s %.2fx fast, %.2fx slow", n, v.Fast/o.Fast, v.Slow/o.Slow))
				}
			}
			if len(rs) > 0 {
				line += "; vhostd " + strings.Join(rs, ", ")
			}
		}
		fmt.Fprintln(w, line)
		if cl := levelCostLine(results, c, names, lv); cl != "" {
			fmt.Fprintln(w, cl)
		}
	}
}

// levelCostLine is WriteLevels' cycles-per-frame line for case c, or ""
// when no backend shows two levels or none has costs.
func levelCostLine(results []RepResult, c Case, names []string, lv map[string]Levels) string {
	two := false
	for _, l := range lv {
		two = two || l.Two
	}
	if !two {
		return ""
	}
	lc := CaseLevelCosts(results, c, lv)
	fig := func(x float64, n int) string {
		if math.IsNaN(x) {
			return fmt.Sprintf("- (%d reps)", n)
		}
		return fmt.Sprintf("%.0f (%d)", x, n)
	}
	var parts []string
	for _, n := range names {
		l, ok := lc[n]
		if !ok || l.NFast+l.NSlow == 0 {
			continue
		}
		if lv[n].Two {
			parts = append(parts, fmt.Sprintf("%s %s / %s", n, fig(l.Fast, l.NFast), fig(l.Slow, l.NSlow)))
		} else {
			parts = append(parts, fmt.Sprintf("%s one level, %s", n, fig(l.Fast, l.NFast)))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	line := fmt.Sprintf("      cycles/frame by level (median over the repetitions with >= %.0f%% of their samples in the level, and how many; fast / slow): %s",
		100*LevelRepShare, strings.Join(parts, "; "))
	if v, ok := lc["vhostd"]; ok && lv["vhostd"].Two {
		var rs []string
		for _, n := range names {
			o, ok := lc[n]
			if !ok || n == "vhostd" || !lv[n].Two {
				continue
			}
			var side []string
			if r := v.Fast / o.Fast; !math.IsNaN(r) {
				side = append(side, fmt.Sprintf("%.2fx fast", r))
			}
			if r := v.Slow / o.Slow; !math.IsNaN(r) {
				side = append(side, fmt.Sprintf("%.2fx slow", r))
			}
			if len(side) > 0 {
				rs = append(rs, fmt.Sprintf("x %s %s", n, strings.Join(side, ", ")))
			}
		}
		if len(rs) > 0 {
			line += "; vhostd " + strings.Join(rs, ", ")
		}
	}
	return line
}
