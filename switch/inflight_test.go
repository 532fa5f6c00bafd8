package vswitch

import (
	"testing"
	"unsafe"

	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// trackInflight gives e's transmit queue an inflight region, as
// SET_INFLIGHT_FD does, and returns it.
func trackInflight(t testing.TB, e *vmEnd) []byte {
	t.Helper()
	q := e.port.rings.Load().TX[0].Queue
	n := virtqueue.InflightQueueBytes(q.Size())
	words := make([]uint64, n/8)
	region := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n)
	if _, err := q.AttachInflight(region); err != nil {
		t.Fatal(err)
	}
	return region
}

// TestForwardInflightTracked: with inflight tracking on a guest transmit
// ring, a burst through the switch leaves nothing marked inflight (the
// lane returns every chain it takes in the same burst) and the region's
// used_idx follows the used ring, all without allocating.
func TestForwardInflightTracked(t *testing.T) {
	s := newTestSwitch(t)
	a := newVMEnd(t, s, "a", 0, 12, true)
	b := newVMEnd(t, s, "b", 0x100000000, 12, true)
	region := trackInflight(t, a)
	allocs := forwardBurstsAllocs(t, s, a, b)
	if allocs != 0 {
		t.Fatalf("forwarding with inflight tracking allocates %.2f times per burst", allocs)
	}
	for h := 0; h < 256; h++ {
		if region[16+16*h] != 0 {
			t.Fatalf("head %d left inflight after the bursts", h)
		}
	}
	if used := uint16(region[14]) | uint16(region[15])<<8; used != a.tx.UsedIdx() || used != (allocRuns+1)*BurstSize {
		t.Fatalf("region used_idx %d, used ring %d, want %d", used, a.tx.UsedIdx(), (allocRuns+1)*BurstSize)
	}
	if got := len(b.rx.CollectUsed()); got != (allocRuns+1)*BurstSize {
		t.Fatalf("b received %d frames", got)
	}
}

// BenchmarkForward64Inflight is BenchmarkForward64 with the sender's
// transmit ring tracked in an inflight region.
func BenchmarkForward64Inflight(b *testing.B) {
	s := newTestSwitch(b)
	a := newVMEnd(b, s, "a", 0, 12, false)
	c := newVMEnd(b, s, "b", 0x100000000, 12, false)
	trackInflight(b, a)
	c.send(ethFrame(0xa, 0xb, 64), 14)
	a.post(1, 2048)
	pump(s, c)
	for i := 0; i < 128; i++ {
		a.tx.AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), ethFrame(0xb, 0xa, 64)...)}})
		c.post(1, 2048)
	}
	b.ReportAllocs()
	b.SetBytes(64)
	b.ResetTimer()
	for n := 0; n < b.N; {
		n += pump(s, a)
		a.tx.Recycle()
		c.rx.Recycle()
	}
}
