package vswitch

import (
	"fmt"
	"testing"

	"github.com/vhostd/vhostd/virtqueue/guestmem"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// logEnd turns on dirty logging on both of e's rings, with a log covering
// its memory, and returns the log and the guest's memory (8 MiB at base).
// Tests call it between bursts, when no poller runs the rings.
func logEnd(t testing.TB, e *vmEnd, base uint64) ([]byte, []byte) {
	t.Helper()
	bits := make([]byte, (base+8<<20)/guestmem.LogPageSize/8)
	l := guestmem.LogFromBytes(bits)
	r := e.port.rings.Load()
	for _, ring := range r.RX {
		ring.Queue.SetLog(l, e.rx.Config().Used)
	}
	for _, ring := range r.TX {
		ring.Queue.SetLog(l, e.tx.Config().Used)
	}
	return bits, e.rx.Mem[:8<<20]
}

// checkLogged fails if a byte of ram (at guest-physical base) differs from
// before on a page the log does not mark: a write that escaped the log.
func checkLogged(t *testing.T, what string, bits, before, ram []byte, base uint64) {
	t.Helper()
	missed := 0
	for i := range ram {
		if ram[i] == before[i] {
			continue
		}
		p := (base + uint64(i)) / guestmem.LogPageSize
		if bits[p/8]&(1<<(p%8)) == 0 {
			if missed < 5 {
				t.Errorf("%s: byte at %#x changed on page %#x, which the log does not mark", what, base+uint64(i), p)
			}
			missed++
		}
	}
	if missed > 0 {
		t.Fatalf("%s: %d written bytes not logged", what, missed)
	}
}

// TestDirtyLogForwarding forwards frames into a logging guest in every
// receive-buffer shape (one buffer, several segments per chain with the
// header split off, mergeable buffers spanning chains) and checks that every
// byte that changed in the guest's memory, frames, headers and rings alike,
// lies on a page the log marks.
func TestDirtyLogForwarding(t *testing.T) {
	for _, mrg := range []bool{false, true} {
		t.Run(fmt.Sprintf("mrg=%v", mrg), func(t *testing.T) {
			s := newTestSwitch(t)
			const aBase, bBase = 0x100000000, 0
			a := newVMEnd(t, s, "a", aBase, 12, mrg)
			b := newVMEnd(t, s, "b", bBase, 12, mrg)
			b.send(ethFrame(0xa, 0xb, 60), 14) // learn b
			a.post(1, 2048)
			pump(s, b)

			bBits, bRAM := logEnd(t, b, bBase)
			aBits, aRAM := logEnd(t, a, aBase)

			// b's receive buffers: single ones, chains of a 5-byte, a
			// 100-byte and a 4 KiB segment (header split across the first
			// two), and with MRG_RXBUF small buffers a frame spans.
			b.post(4, 2048)
			for i := 0; i < 4; i++ {
				b.rx.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 5}, {Write: true, WriteLen: 100}, {Write: true, WriteLen: 4096}})
			}
			if mrg {
				b.post(64, 256)
			}
			sizes := []int{60, 1514, 60, 1514, 3000, 1000, 200, 1514}
			if mrg {
				sizes = append(sizes, 1514, 4000, 9000)
			}
			for i, n := range sizes {
				f := ethFrame(0xb, 0xa, n)
				for j := 14; j < n; j++ {
					f[j] = byte(j*7 + i + 1)
				}
				a.send(f, 14)
			}
			// What the drivers wrote is theirs; from here on only vhostd
			// writes.
			bBefore := append([]byte(nil), bRAM...)
			aBefore := append([]byte(nil), aRAM...)
			for pump(s, a) > 0 {
			}
			if got := len(b.received()); got < len(sizes) {
				t.Fatalf("guest b received %d buffers, want at least %d", got, len(sizes))
			}
			checkLogged(t, "receiving guest", bBits, bBefore, bRAM, bBase)
			checkLogged(t, "sending guest", aBits, aBefore, aRAM, aBase)
		})
	}
}

// BenchmarkForward64Logging is BenchmarkForward64 with the receiving guest
// logging dirty pages, as during a migration.
func BenchmarkForward64Logging(b *testing.B) {
	s := newTestSwitch(b)
	a := newVMEnd(b, s, "a", 0, 12, false)
	c := newVMEnd(b, s, "b", 0x100000000, 12, false)
	c.send(ethFrame(0xa, 0xb, 64), 14)
	a.post(1, 2048)
	pump(s, c)
	logEnd(b, c, 0x100000000)
	logEnd(b, a, 0)
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
