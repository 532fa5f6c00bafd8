package main

import (
	"math"
	"sort"
)

// Summary describes a set of repeated measurements of one quantity.
type Summary struct {
	// N is the number of values.
	N int
	// Median, Min, Max and Mean are in the unit of the values.
	Median, Min, Max, Mean float64
	// Stdev is the sample standard deviation (n-1); 0 for fewer than two
	// values.
	Stdev float64
}

// Summarize computes the Summary of vs. An empty vs gives the zero Summary.
func Summarize(vs []float64) Summary {
	if len(vs) == 0 {
		return Summary{}
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	sum := 0.0
	for _, v := range s {
		sum += v
	}
	r := Summary{N: len(s), Min: s[0], Max: s[len(s)-1], Mean: sum / float64(len(s))}
	if len(s)%2 == 1 {
		r.Median = s[len(s)/2]
	} else {
		r.Median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	if len(s) > 1 {
		ss := 0.0
		for _, v := range s {
			ss += (v - r.Mean) * (v - r.Mean)
		}
		r.Stdev = math.Sqrt(ss / float64(len(s)-1))
	}
	return r
}

// SpreadPct is (Max-Min)/Median in percent: how far apart the best and the
// worst repetition are. 0 when the median is 0.
func (s Summary) SpreadPct() float64 {
	if s.Median == 0 {
		return 0
	}
	return 100 * (s.Max - s.Min) / s.Median
}

// StdevPct is the standard deviation relative to the mean, in percent.
func (s Summary) StdevPct() float64 {
	if s.Mean == 0 {
		return 0
	}
	return 100 * s.Stdev / s.Mean
}

// Ratio returns a/b, or NaN when b is not a positive number (no reference
// measured): the report prints NaN as "n/a".
func Ratio(a, b float64) float64 {
	if !(b > 0) {
		return math.NaN()
	}
	return a / b
}

// Sample is one point of a rate-over-time series.
type Sample struct {
	// T is the time since the closed loop was seeded.
	T float64 // seconds
	// RxPackets is the generator's total RX counter (all ports) at T.
	RxPackets uint64
}

// Rates turns cumulative counter samples into rates: one point per
// interval, at the interval's end time, in frames per second. Intervals
// with no elapsed time are skipped; a counter that went backwards (a
// restart) yields no point for that interval.
func Rates(ss []Sample) []Point {
	var out []Point
	for i := 1; i < len(ss); i++ {
		dt := ss[i].T - ss[i-1].T
		if dt <= 0 || ss[i].RxPackets < ss[i-1].RxPackets {
			continue
		}
		out = append(out, Point{T: ss[i].T, V: float64(ss[i].RxPackets-ss[i-1].RxPackets) / dt})
	}
	return out
}

// Point is one (time, value) pair of a plotted series.
type Point struct {
	T, V float64
}

// WindowRate returns the average rate between the first sample at or after
// from and the first sample at least length later (times in seconds since
// the seed), and the exact span it covers. ok is false when the samples do
// not cover such a window or the counter went backwards.
func WindowRate(ss []Sample, from, length float64) (pps, span float64, ok bool) {
	i := sort.Search(len(ss), func(i int) bool { return ss[i].T >= from })
	if i == len(ss) {
		return 0, 0, false
	}
	j := sort.Search(len(ss), func(j int) bool { return ss[j].T >= ss[i].T+length })
	if j == len(ss) {
		return 0, 0, false
	}
	span = ss[j].T - ss[i].T
	if span <= 0 || ss[j].RxPackets < ss[i].RxPackets {
		return 0, 0, false
	}
	return float64(ss[j].RxPackets-ss[i].RxPackets) / span, span, true
}

// MaxGap is the longest time between two consecutive samples: much more
// than the sampling interval means the generator's CLI stalled (other load
// on its CPU).
func MaxGap(ss []Sample) float64 {
	g := 0.0
	for i := 1; i < len(ss); i++ {
		g = math.Max(g, ss[i].T-ss[i-1].T)
	}
	return g
}

// Collapsed tells whether a closed loop lost its frames: the rate over the
// last second of samples is below a tenth of the highest rate seen. The
// closed loop has no source of new frames, so every frame dropped (a
// generator transmit ring full while the backend is starved of CPU, a
// backend out of receive buffers) is gone for good; when drops outrun the
// loop, the rate falls towards zero and stays there.
func Collapsed(ss []Sample) bool {
	rs := Rates(ss)
	if len(rs) < 2 {
		return false
	}
	peak := 0.0
	for _, p := range rs {
		peak = math.Max(peak, p.V)
	}
	end := rs[len(rs)-1].T
	sum, n := 0.0, 0
	for _, p := range rs {
		if p.T >= end-1 {
			sum += p.V
			n++
		}
	}
	return peak > 0 && sum/float64(n) < peak/10
}

func nan() float64 { return math.NaN() }
