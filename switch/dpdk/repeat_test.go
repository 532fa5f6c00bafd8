//go:build cgo

package dpdk

import (
	"bytes"
	"runtime"
	"testing"
)

// TestRepeaterSendsByReference sends prebuilt chained frames round robin
// through a net_ring loopback: every frame comes back whole, in order,
// with its offload metadata, and once the repeater is closed and the
// frames received are released every mbuf is back in the pool (the
// references balance).
func TestRepeaterSendsByReference(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	RegisterThread()
	p, pool := newVdev(t, "net_ring", "", 2048+Headroom)
	rx := p.NewRxQueue()
	defer rx.Close()
	before := pool.Available()
	frames := [][]byte{frameOf(5000, 1), frameOf(60, 2), frameOf(4096, 3)}
	meta := TxMeta{Flags: MbufTxTCPSeg | MbufTxTCPCksum | MbufTxIPv4, L2: 14, L3: 20, L4: 20, SegSize: 1448}
	rep, err := p.NewRepeater(pool, frames, meta)
	if err != nil {
		t.Fatal(err)
	}
	// 3 + 1 + 2 mbufs of 2048 bytes.
	if used := before - pool.Available(); used != 6 {
		t.Errorf("repeater holds %d mbufs, want 6", used)
	}
	segs := make([][]byte, 0, MaxSegs)
	k := 0
	for round := 0; round < 5; round++ {
		if n := rep.Send(7); n != 7 {
			t.Fatalf("round %d: sent %d of 7", round, n)
		}
		got := rx.Receive(MaxBurst)
		if got != 7 {
			t.Fatalf("round %d: received %d of 7", round, got)
		}
		for i := 0; i < got; i++ {
			var n int
			var ok bool
			segs, n, ok = rx.Frame(i, segs[:0])
			want := frames[k%len(frames)]
			if !ok || n != len(want) || !bytes.Equal(bytes.Join(segs, nil), want) {
				t.Fatalf("frame %d: %d bytes (ok %v), want frame %d of %d bytes", k, n, ok, k%len(frames), len(want))
			}
			flags, segsz := rx.Offload(i)
			if flags&meta.Flags != meta.Flags || segsz != meta.SegSize {
				t.Fatalf("frame %d: ol_flags %#x tso_segsz %d, want %#x and %d", k, flags, segsz, meta.Flags, meta.SegSize)
			}
			k++
		}
		rx.Release()
	}
	rep.Close()
	if after := pool.Available(); after != before {
		t.Errorf("pool has %d mbufs free after close, %d before", after, before)
	}
	if _, err := p.NewRepeater(pool, nil, meta); err == nil {
		t.Error("a repeater without frames was made")
	}
	if _, err := p.NewRepeater(pool, [][]byte{{}}, meta); err == nil {
		t.Error("a repeater of an empty frame was made")
	}
}
