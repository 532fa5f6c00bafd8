package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The state of the machine under each repetition. In a VM the host decides
// where the generator's and the backend's vCPUs run: on two cores of one
// L3 complex, on two complexes, or on the two threads of one core, and it
// may move them while the bench runs. Every frame of the closed loop
// crosses between the two CPUs several times (rings, buffers), so the
// cost of moving a cache line between them sets the loop's rate as much as
// any backend does. CrossCoreRTT measures that cost before each
// repetition, so that a slow repetition can be told from a slow backend.

// xcoreProbe is how long CrossCoreRTT bounces the line: long enough for
// thousands of round trips, short beside a repetition.
const xcoreProbe = 20 * time.Millisecond

// CrossCoreRTT returns the median round-trip time, in nanoseconds, of a
// cache line bounced between CPUs a and b for about d: a thread pinned to
// each CPU waits for the other's store and answers with its own. Each
// sample times 256 round trips, so the clock read costs little.
func CrossCoreRTT(a, b int, d time.Duration) (float64, error) {
	var line struct {
		_    [64]byte
		word atomic.Uint64
		_    [56]byte
	}
	var stop atomic.Bool
	errc := make(chan error, 1)
	go func() {
		// The thread dies with this goroutine (locked, never
		// unlocked), so its CPU mask goes with it.
		runtime.LockOSThread()
		if err := pinThread(b); err != nil {
			errc <- err
			stop.Store(true)
			line.word.Store(math.MaxUint64)
			return
		}
		errc <- nil
		for want := uint64(1); !stop.Load(); want += 2 {
			for v := line.word.Load(); v != want; v = line.word.Load() {
				if v == math.MaxUint64 || stop.Load() {
					return
				}
			}
			line.word.Store(want + 1)
		}
	}()
	if err := <-errc; err != nil {
		return 0, fmt.Errorf("cross-core probe: %w", err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		stop.Store(true)
		return 0, fmt.Errorf("cross-core probe: %w", err)
	}
	defer unix.SchedSetaffinity(0, &old)
	if err := pinThread(a); err != nil {
		stop.Store(true)
		line.word.Store(math.MaxUint64)
		return 0, fmt.Errorf("cross-core probe: %w", err)
	}
	const batch = 256
	var samples []float64
	next := uint64(1)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		t0 := time.Now()
		for i := 0; i < batch; i++ {
			line.word.Store(next)
			for spins := 1; line.word.Load() != next+1; spins++ {
				// A peer that never answers (its CPU taken) would
				// spin here for ever: give up a second after the
				// deadline.
				if spins&(1<<20-1) == 0 && time.Now().After(deadline.Add(time.Second)) {
					stop.Store(true)
					line.word.Store(math.MaxUint64)
					return 0, fmt.Errorf("cross-core probe: CPU %d did not answer", b)
				}
			}
			next += 2
		}
		samples = append(samples, float64(time.Since(t0).Nanoseconds())/batch)
	}
	stop.Store(true)
	line.word.Store(math.MaxUint64)
	if len(samples) == 0 {
		return 0, fmt.Errorf("cross-core probe: no sample in %v", d)
	}
	sort.Float64s(samples)
	return samples[len(samples)/2], nil
}

func pinThread(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin thread to CPU %d: %w", cpu, err)
	}
	return nil
}

// Spearman returns the rank correlation of xs and ys (pairs at equal
// indexes; ties get their mean rank), or NaN with fewer than 3 pairs or
// when either side has no spread.
func Spearman(xs, ys []float64) float64 {
	if len(xs) != len(ys) || len(xs) < 3 {
		return math.NaN()
	}
	rx, ry := ranks(xs), ranks(ys)
	var mx, my float64
	for i := range rx {
		mx += rx[i]
		my += ry[i]
	}
	mx /= float64(len(rx))
	my /= float64(len(ry))
	var sxy, sxx, syy float64
	for i := range rx {
		dx, dy := rx[i]-mx, ry[i]-my
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	if sxx == 0 || syy == 0 {
		return math.NaN()
	}
	return sxy / math.Sqrt(sxx*syy)
}

// ranks returns the 1-based rank of each of vs, ties sharing their mean.
func ranks(vs []float64) []float64 {
	idx := make([]int, len(vs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return vs[idx[a]] < vs[idx[b]] })
	out := make([]float64, len(vs))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && vs[idx[j+1]] == vs[idx[i]] {
			j++
		}
		r := float64(i+j)/2 + 1
		for k := i; k <= j; k++ {
			out[idx[k]] = r
		}
		i = j + 1
	}
	return out
}

// WriteMachineState writes the cross-core round trips measured before the
// repetitions of cases, and per backend the rank correlation between a
// repetition's rate and that round trip: strongly negative means the
// repetitions differ because the host placed the two vCPUs differently,
// not because of the backend.
func WriteMachineState(w io.Writer, results []RepResult, cases []Case, names []string, gen, backend int) {
	in := map[string]bool{}
	for _, c := range cases {
		in[c.Name()] = true
	}
	var all []float64
	type pairs struct{ rate, rtt []float64 }
	per := map[string]*pairs{}
	for _, r := range results {
		if r.Err != nil || !in[r.Case.Name()] || math.IsNaN(r.XCoreNs) || r.PPS <= 0 {
			continue
		}
		all = append(all, r.XCoreNs)
		// Rates of different cases are not comparable: rank each
		// repetition's rate within its case and backend first.
		p := per[r.Backend+"\x00"+r.Case.Name()]
		if p == nil {
			p = &pairs{}
			per[r.Backend+"\x00"+r.Case.Name()] = p
		}
		p.rate = append(p.rate, r.PPS)
		p.rtt = append(p.rtt, r.XCoreNs)
	}
	if len(all) == 0 {
		fmt.Fprintf(w, "  cross-core round trip (CPU %d <-> CPU %d): not measured\n", gen, backend)
		return
	}
	sort.Float64s(all)
	fmt.Fprintf(w, "  cross-core round trip of a cache line (CPU %d <-> CPU %d), measured before each repetition: median %.0f ns (%.0f..%.0f, %d repetitions)\n",
		gen, backend, all[len(all)/2], all[0], all[len(all)-1], len(all))
	var parts []string
	for _, n := range names {
		var cs []string
		for _, c := range cases {
			if p := per[n+"\x00"+c.Name()]; p != nil {
				if rho := Spearman(p.rate, p.rtt); !math.IsNaN(rho) {
					cs = append(cs, fmt.Sprintf("%s %+.2f", c.Name(), rho))
				}
			}
		}
		if len(cs) > 0 {
			parts = append(parts, n+": "+strings.Join(cs, ", "))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "  rank correlation of the rate with it (-1: slower whenever the line is slower to cross): %s\n", strings.Join(parts, "; "))
	}
}
