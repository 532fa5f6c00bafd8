//go:build cgo

package dpdk

import (
	"runtime"
	"testing"
)

// burstRoundTrip sends a burst of n frames of f through a loopback port
// and takes it back, as the uplink's Transmit and Receive+Done do.
func burstRoundTrip(tb testing.TB, rx *RxQueue, tx *TxQueue, f [][]byte, size, n int, segs [][]byte) {
	for i := 0; i < n; i++ {
		if !tx.Add(f, size) {
			tb.Fatal("Add failed")
		}
	}
	if s, _ := tx.Flush(); s != n {
		tb.Fatalf("sent %d of %d", s, n)
	}
	got := rx.Receive(MaxBurst)
	for i := 0; i < got; i++ {
		segs, _, _ = rx.Frame(i, segs[:0])
	}
	rx.Release()
	if got != n {
		tb.Fatalf("received %d of %d", got, n)
	}
}

// TestBurstAllocatesNothing checks that the data path allocates no Go
// memory per burst or per frame.
func TestBurstAllocatesNothing(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	RegisterThread()
	p, pool := newVdev(t, "net_ring", "", 2048+Headroom)
	rx, tx := p.NewRxQueue(), p.NewTxQueue(pool)
	defer rx.Close()
	defer tx.Close()
	f := [][]byte{frameOf(14, 0), frameOf(1000, 1)}
	segs := make([][]byte, 0, MaxSegs)
	if a := testing.AllocsPerRun(200, func() { burstRoundTrip(t, rx, tx, f, 1014, 32, segs) }); a != 0 {
		t.Fatalf("%v allocations per burst of 32", a)
	}
}

// BenchmarkCgoCall is the cost of one trivial cgo call, the unit the
// burst helpers amortise.
func BenchmarkCgoCall(b *testing.B) {
	for i := 0; i < b.N; i++ {
		LcoreID()
	}
}

func benchRing(b *testing.B, size, burst int) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	RegisterThread()
	p, pool := newVdev(b, "net_ring", "", 2048+Headroom)
	rx, tx := p.NewRxQueue(), p.NewTxQueue(pool)
	defer rx.Close()
	defer tx.Close()
	f := [][]byte{frameOf(size, 0)}
	segs := make([][]byte, 0, MaxSegs)
	b.SetBytes(int64(size * burst))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		burstRoundTrip(b, rx, tx, f, size, burst, segs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*burst), "ns/frame")
}

// BenchmarkRingRoundTrip64 is one burst of 32 64-byte frames copied into
// mbufs, sent into net_ring, received back and freed: two cgo calls for
// the burst plus one for the free.
func BenchmarkRingRoundTrip64(b *testing.B)   { benchRing(b, 64, 32) }
func BenchmarkRingRoundTrip1514(b *testing.B) { benchRing(b, 1514, 32) }

// BenchmarkRingRoundTrip64Single is the same with bursts of one frame: the
// per-call cost shows.
func BenchmarkRingRoundTrip64Single(b *testing.B) { benchRing(b, 64, 1) }

// BenchmarkNullRx receives bursts of 32 frames from net_null (which hands
// out mbufs without touching them) and frees them.
func BenchmarkNullRx(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	RegisterThread()
	p, _ := newVdev(b, "net_null", "size=64", 2048+Headroom)
	rx := p.NewRxQueue()
	defer rx.Close()
	segs := make([][]byte, 0, MaxSegs)
	b.ReportAllocs()
	b.ResetTimer()
	frames := 0
	for i := 0; i < b.N; i++ {
		n := rx.Receive(32)
		for j := 0; j < n; j++ {
			segs, _, _ = rx.Frame(j, segs[:0])
		}
		rx.Release()
		frames += n
	}
	if frames > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(frames), "ns/frame")
	}
}

// BenchmarkNullTx copies bursts of 32 64-byte frames into mbufs and sends
// them to net_null (which frees them).
func BenchmarkNullTx(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	RegisterThread()
	p, pool := newVdev(b, "net_null", "", 2048+Headroom)
	tx := p.NewTxQueue(pool)
	defer tx.Close()
	f := [][]byte{frameOf(64, 0)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := 0; j < 32; j++ {
			tx.Add(f, 64)
		}
		tx.Flush()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*32), "ns/frame")
}
