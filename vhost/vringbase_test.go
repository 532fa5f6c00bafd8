package vhost_test

import (
	"encoding/binary"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhost"
	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// TestVringBaseResumesExactly stops two guests' rings in the middle of
// traffic through the real switch a hundred times (GET_VRING_BASE) and
// resumes them at the base vhostd reported (SET_VRING_BASE), as a frontend
// does around a migration or a backend handover. Each time, the base must
// equal the used index the driver sees on both rings (every chain taken
// from A's transmit ring was returned, every chain taken from B's receive
// ring was filled or given back), and across all the cycles every frame A
// sent reaches B exactly once.
func TestVringBaseResumesExactly(t *testing.T) { vringBaseCycles(t, false) }

// TestVringBaseResumesExactlyInflight is the same with A's transmit ring
// tracked in an inflight region, through the real switch: afterwards
// nothing is left marked inflight and the region's used_idx follows the
// used ring.
func TestVringBaseResumesExactlyInflight(t *testing.T) { vringBaseCycles(t, true) }

func vringBaseCycles(t *testing.T, inflight bool) {
	sa, pathA, pathB := twoServers(t)
	feats := uint64(fVersion1 | fProtocol | fEventIdx)
	var a *guest
	var region []byte
	if inflight {
		f := inflightGuest(t, pathA)
		in, fd, err := f.GetInflightFD(2, 256)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := f.SetInflightFD(in, fd, true); err != nil {
			t.Fatal(err)
		}
		if region, err = unix.Mmap(fd, 0, int(in.MmapSize), unix.PROT_READ, unix.MAP_SHARED); err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(region)
		a = setupRings(t, f)
	} else {
		a = connectGuest(t, pathA, feats)
	}
	b := connectGuest(t, pathB, feats)
	const rxBufs = 200
	for i := 0; i < rxBufs; i++ {
		b.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 256}})
	}
	got := map[uint32]int{}
	received := 0
	collect := func() {
		used := b.rx.Driver.CollectUsed()
		for _, u := range used {
			p := b.rx.Driver.Read(b.rx.Driver.DescAddr(u.ID), int(u.Len))
			if len(p) < 12+18 {
				t.Fatalf("B got a %d-byte buffer", len(p))
			}
			got[binary.LittleEndian.Uint32(p[12+14:])]++
			received++
		}
		for range used {
			b.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 256}})
		}
	}
	sent := uint32(0)
	for cycle := 0; cycle < 100; cycle++ {
		n := 1 + cycle%24
		u0 := a.tx.Driver.UsedIdx()
		if o := a.tx.Driver.Outstanding(); o > 100 {
			t.Fatalf("cycle %d: A's transmit ring holds %d chains the backend has not taken (used %d); A: %+v", cycle, o, a.tx.Driver.UsedIdx(), sa.Status())
		}
		for i := 0; i < n; i++ {
			f := ethFrame(0xb, 0xa, 64)
			binary.LittleEndian.PutUint32(f[14:], sent)
			sent++
			a.tx.Driver.AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), f...)}})
			if i == n/2 {
				a.tx.KickNow() // the pollers start while more arrive
			}
		}
		a.tx.KickNow()
		switch cycle % 3 {
		case 0:
			// Stop as soon as the backend has taken something, so the
			// ring never fills up with chains it had no time to take.
			for end := time.Now().Add(time.Second); a.tx.Driver.UsedIdx() == u0 && time.Now().Before(end); {
				runtime.Gosched()
			}
		case 1:
			time.Sleep(time.Duration(cycle%7) * 20 * time.Microsecond)
		}
		// Stop A's transmit ring first: once its GET_VRING_BASE is
		// answered no frame of A is on its way to B, so B's receive
		// ring can be stopped without one being turned away.
		baseA, err := a.f.GetVringBase(1)
		if err != nil {
			t.Fatal(err)
		}
		baseB, err := b.f.GetVringBase(0)
		if err != nil {
			t.Fatal(err)
		}
		if u := a.tx.Driver.UsedIdx(); uint16(baseA) != u {
			t.Fatalf("cycle %d: A's transmit ring stopped at base %d, used index %d", cycle, baseA, u)
		}
		if u := b.rx.Driver.UsedIdx(); uint16(baseB) != u {
			t.Fatalf("cycle %d: B's receive ring stopped at base %d, used index %d", cycle, baseB, u)
		}
		a.tx.Driver.CollectUsed()
		collect()
		if o := b.rx.Driver.Outstanding(); o != rxBufs {
			t.Fatalf("cycle %d: B has %d receive buffers outstanding after collecting, want %d (used %d)", cycle, o, rxBufs, b.rx.Driver.UsedIdx())
		}

		if err := b.f.ResumeRing(b.rx, uint16(baseB)); err != nil {
			t.Fatal(err)
		}
		// A reply is a barrier: B's receive ring runs again before A
		// sends (a frame for a stopped ring is dropped, tx_not_ready).
		if _, err := b.f.GetU64(1); err != nil {
			t.Fatal(err)
		}
		if err := a.f.ResumeRing(a.tx, uint16(baseA)); err != nil {
			t.Fatal(err)
		}
		if _, err := a.f.GetU64(1); err != nil {
			t.Fatal(err)
		}
	}
	a.tx.KickNow()
	deadline := time.Now().Add(5 * time.Second)
	for received < int(sent) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		collect()
	}
	for i := uint32(0); i < sent; i++ {
		if got[i] != 1 {
			t.Fatalf("frame %d of %d received %d times (%d received in all)", i, sent, got[i], received)
		}
	}
	if received != int(sent) {
		t.Fatalf("received %d frames, sent %d", received, sent)
	}
	if inflight {
		q1 := region[virtqueue.InflightQueueBytes(256):]
		for h := 0; h < 256; h++ {
			if q1[16+16*h] != 0 {
				t.Fatalf("head %d of the transmit ring left inflight", h)
			}
		}
		if v, used := binary.LittleEndian.Uint16(q1[8:]), binary.LittleEndian.Uint16(q1[14:]); v != 1 || used != a.tx.Driver.UsedIdx() {
			t.Fatalf("inflight region version %d used_idx %d, used ring %d", v, used, a.tx.Driver.UsedIdx())
		}
	}
	t.Logf("%d frames across 100 stop/resume cycles, each received once", sent)
}

// stops counts Stopped calls.
type stops struct {
	recorder
	n atomic.Int32
}

func (s *stops) Stopped() { s.n.Add(1) }

// TestStoppedAfterLastRing: the backend hears that the frontend stopped
// the device once GET_VRING_BASE has stopped the last started ring (as
// QEMU does when the VM stops: the end of a migration keeps the source's
// connection), not at the first, and not again for a ring not running.
func TestStoppedAfterLastRing(t *testing.T) {
	b := &stops{}
	_, path := serve(t, vhost.Options{}, b)
	g := connectGuest(t, path, fVersion1|fProtocol|fEventIdx)
	if _, err := g.f.GetVringBase(0); err != nil {
		t.Fatal(err)
	}
	if n := b.n.Load(); n != 0 {
		t.Fatalf("Stopped called %d times with ring 1 still running", n)
	}
	if _, err := g.f.GetVringBase(1); err != nil {
		t.Fatal(err)
	}
	if n := b.n.Load(); n != 1 {
		t.Fatalf("Stopped called %d times after the last ring stopped, want 1", n)
	}
	if _, err := g.f.GetVringBase(1); err != nil {
		t.Fatal(err)
	}
	if n := b.n.Load(); n != 1 {
		t.Fatalf("Stopped called %d times after stopping a stopped ring, want 1", n)
	}
}
