package release

import (
	"sync/atomic"
	"testing"
)

func TestStoresAreSeen(t *testing.T) {
	var a uint32
	var b uint64
	Store32(&a, 0xdeadbeef)
	Store64(&b, 1<<40|7)
	if atomic.LoadUint32(&a) != 0xdeadbeef || atomic.LoadUint64(&b) != 1<<40|7 {
		t.Fatalf("got %#x %#x", a, b)
	}
}

// TestPublishesEarlierStores is the producer/consumer pattern the data
// path relies on: data written before a release store of an index is
// seen by a reader that loads the index.
func TestPublishesEarlierStores(t *testing.T) {
	const n = 1 << 16
	var data [256]uint64
	var idx uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := uint64(1); i <= n; i++ {
			data[i%256] = i
			Store64(&idx, i)
			for atomic.LoadUint64(&idx) == i && i != n {
				// Wait for the reader to take it (it zeroes idx).
			}
		}
	}()
	for want := uint64(1); want <= n; want++ {
		var got uint64
		for got = atomic.LoadUint64(&idx); got != want; got = atomic.LoadUint64(&idx) {
		}
		if d := data[want%256]; d != want {
			t.Fatalf("index %d published before its data (saw %d)", want, d)
		}
		atomic.StoreUint64(&idx, 0)
	}
	<-done
}

func TestNoAllocs(t *testing.T) {
	var a uint32
	var b uint64
	if n := testing.AllocsPerRun(100, func() { Store32(&a, 1); Store64(&b, 2) }); n != 0 {
		t.Fatalf("%.1f allocs", n)
	}
}
