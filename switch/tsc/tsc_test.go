package tsc_test

import (
	"testing"
	"time"

	"github.com/vhostd/vhostd/switch/tsc"
)

func TestNowAdvances(t *testing.T) {
	a := tsc.Now()
	time.Sleep(2 * time.Millisecond)
	if b := tsc.Now(); b <= a {
		t.Fatalf("counter did not advance over 2ms: %d then %d", a, b)
	}
}

// The rate must agree with the monotonic clock: cycles counted over a
// sleep, converted with Hz, give the sleep's length.
func TestHzMatchesClock(t *testing.T) {
	time.Sleep(20 * time.Millisecond) // Hz needs some history
	hz := tsc.Hz()
	if hz < 1e8 || hz > 1e10 {
		t.Fatalf("Hz = %.0f, not a plausible clock rate", hz)
	}
	c0, t0 := tsc.Now(), time.Now()
	time.Sleep(50 * time.Millisecond)
	c1, t1 := tsc.Now(), time.Now()
	got := tsc.Seconds(c1 - c0)
	want := t1.Sub(t0).Seconds()
	if d := got/want - 1; d > 0.05 || d < -0.05 {
		t.Fatalf("%d cycles at %.0f Hz = %.4fs, clock says %.4fs (off by %.1f%%)", c1-c0, hz, got, want, 100*d)
	}
}

func BenchmarkNow(b *testing.B) {
	var s uint64
	for b.Loop() {
		s += tsc.Now()
	}
	_ = s
}
