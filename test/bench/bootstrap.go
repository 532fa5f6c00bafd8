package main

import (
	"math"
	"math/rand/v2"
	"sort"
)

// A ratio a reader can trust: the bench reports the ratio of two
// backends' medians (vhostd over a reference, on the same case in the
// same run, their repetitions interleaved) with a percentile bootstrap
// confidence interval, and how many repetitions an interval of +-5% would
// take at the spread seen.

// Bootstrap settings: resamples and the generator's fixed seed (the same
// data give the same interval in every run of the report).
const (
	BootResamples = 10000
	BootSeed      = 17
	// BootLevel is the confidence level of the intervals.
	BootLevel = 0.95
	// TargetHalfWidth is the relative half-width the "reps for +-5%"
	// column aims at.
	TargetHalfWidth = 0.05
)

// CI is an estimate with a confidence interval.
type CI struct {
	// Est is the estimate from the data (not from the resamples); Lo and
	// Hi bound the interval. All NaN when there is too little data.
	Est, Lo, Hi float64
	// N and M are the sample sizes (M: the denominator's, for a ratio).
	N, M int
}

// HalfWidthPct is the interval's half-width relative to the estimate, in
// percent: (Hi-Lo)/2/Est.
func (c CI) HalfWidthPct() float64 {
	if !(c.Est > 0) || math.IsNaN(c.Lo) {
		return nan()
	}
	return 100 * (c.Hi - c.Lo) / 2 / c.Est
}

// RepsFor returns the repetitions per backend that would make the
// interval's relative half-width target (0.05 for +-5%), assuming it
// shrinks as 1/sqrt(n) from its width at the n = min(N, M) repetitions it
// was computed from. 0 when unknown (too few repetitions, or an interval
// of zero width: one value repeated).
func (c CI) RepsFor(target float64) int {
	h := c.HalfWidthPct() / 100
	n := min(c.N, c.M)
	if c.M == 0 {
		n = c.N
	}
	if math.IsNaN(h) || h <= 0 || n < 2 {
		return 0
	}
	// The epsilon keeps float rounding (0.1/0.05 squared is 4.0000001)
	// from adding a repetition.
	return int(math.Ceil(float64(n)*(h/target)*(h/target) - 1e-9))
}

// median of a sorted copy of vs; NaN for none.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return nan()
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// resampleMedian draws len(vs) values of vs with replacement into buf and
// returns their median.
func resampleMedian(r *rand.Rand, vs, buf []float64) float64 {
	for i := range buf {
		buf[i] = vs[r.IntN(len(vs))]
	}
	sort.Float64s(buf)
	n := len(buf)
	if n%2 == 1 {
		return buf[n/2]
	}
	return (buf[n/2-1] + buf[n/2]) / 2
}

// percentiles returns the (1-level)/2 and (1+level)/2 quantiles of the
// sorted values (nearest rank).
func percentiles(sorted []float64, level float64) (lo, hi float64) {
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(sorted)))) - 1
		return sorted[min(max(i, 0), len(sorted)-1)]
	}
	return q((1 - level) / 2), q((1 + level) / 2)
}

// BootstrapMedian is the median of vs with a percentile bootstrap
// interval at level, from resamples resamples of a generator seeded with
// seed. Fewer than two values give NaN bounds.
func BootstrapMedian(vs []float64, level float64, resamples int, seed uint64) CI {
	c := CI{Est: median(vs), Lo: nan(), Hi: nan(), N: len(vs)}
	if len(vs) < 2 || resamples < 1 {
		return c
	}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	buf := make([]float64, len(vs))
	meds := make([]float64, resamples)
	for i := range meds {
		meds[i] = resampleMedian(r, vs, buf)
	}
	sort.Float64s(meds)
	c.Lo, c.Hi = percentiles(meds, level)
	return c
}

// BootstrapRatio is median(a)/median(b) with a percentile bootstrap
// interval: each resample draws a and b with replacement, independently
// (the repetitions of two backends are separate runs, interleaved in
// time but not paired), and takes the ratio of the medians. Fewer than
// two values on either side give NaN bounds.
func BootstrapRatio(a, b []float64, level float64, resamples int, seed uint64) CI {
	c := CI{Est: Ratio(median(a), median(b)), Lo: nan(), Hi: nan(), N: len(a), M: len(b)}
	if len(a) < 2 || len(b) < 2 || resamples < 1 || math.IsNaN(c.Est) {
		return c
	}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	ba, bb := make([]float64, len(a)), make([]float64, len(b))
	rs := make([]float64, 0, resamples)
	for i := 0; i < resamples; i++ {
		ma, mb := resampleMedian(r, a, ba), resampleMedian(r, b, bb)
		if mb > 0 {
			rs = append(rs, ma/mb)
		}
	}
	if len(rs) == 0 {
		return c
	}
	sort.Float64s(rs)
	c.Lo, c.Hi = percentiles(rs, level)
	return c
}
