package vswitch

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/vhostd/vhostd/vhost"
	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// Packed rings through the switch: the same VMPort, its receive and
// transmit loops generated for *virtqueue.PackedQueue (vmport_packed.go).

// newPackedVMEnd is newVMEnd for a guest whose driver uses packed rings.
func newPackedVMEnd(t testing.TB, s *Switch, name string, base uint64, hdr int, mrg bool) *vmEnd {
	t.Helper()
	ram := make([]byte, 8<<20)
	e := &vmEnd{
		prx: virtqueuetest.NewPackedOn(ram[:4<<20], 256, base),
		ptx: virtqueuetest.NewPackedOn(ram[4<<20:], 256, base+4<<20),
		hdr: hdr,
	}
	mem, err := guestmem.FromBytes([]guestmem.RegionSpec{{GuestPhysAddr: base, Size: 8 << 20, UserAddr: 0x7f0000000000 + base}}, [][]byte{ram})
	if err != nil {
		t.Fatal(err)
	}
	qrx, err := virtqueue.NewPacked(mem, e.prx.Config(), virtqueue.PackedFreshBase)
	if err != nil {
		t.Fatal(err)
	}
	qtx, err := virtqueue.NewPacked(mem, e.ptx.Config(), virtqueue.PackedFreshBase)
	if err != nil {
		t.Fatal(err)
	}
	e.port = NewVMPort(name, 1, quietLog())
	if e.idx, err = s.AddPort(e.port); err != nil {
		t.Fatal(err)
	}
	e.port.Publish(&vhost.Rings{
		Mem:      mem,
		RX:       []*vhost.Ring{{Index: 0, Packed: qrx, Kick: -1, Call: -1}},
		TX:       []*vhost.Ring{{Index: 1, Packed: qtx, Kick: -1, Call: -1}},
		HdrLen:   hdr,
		MrgRxbuf: mrg,
	})
	return e
}

// psend queues frame on a packed guest's transmit ring (see send).
func (e *vmEnd) psend(frame []byte, split int) uint16 {
	h := make([]byte, e.hdr)
	return e.ptx.AddChain([]virtqueuetest.Buf{{Data: append(h, frame[:split]...)}, {Data: frame[split:]}})
}

// ppost makes n receive buffers of size bytes available on a packed
// guest's receive ring.
func (e *vmEnd) ppost(n, size int) {
	for i := 0; i < n; i++ {
		e.prx.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: size}})
	}
}

// preceived is received for a packed guest.
func (e *vmEnd) preceived() [][]byte {
	var out [][]byte
	for _, u := range e.prx.CollectUsed() {
		out = append(out, append([]byte(nil), e.prx.Read(e.prx.BufAddr(u.ID), int(u.Len))...))
	}
	return out
}

// anySend and anyPost work on either layout.
func (e *vmEnd) anySend(frame []byte, split int) {
	if e.ptx != nil {
		e.psend(frame, split)
	} else {
		e.send(frame, split)
	}
}

func (e *vmEnd) anyPost(n, size int) {
	if e.prx != nil {
		e.ppost(n, size)
	} else {
		e.post(n, size)
	}
}

func (e *vmEnd) anyReceived() [][]byte {
	if e.prx != nil {
		return e.preceived()
	}
	return e.received()
}

// TestPackedVMToVM sends frames between guests of every pair of layouts
// (packed to packed, split to packed, packed to split) and header sizes:
// each arrives whole, once, with its header, and the counters agree.
func TestPackedVMToVM(t *testing.T) {
	type mk func(testing.TB, *Switch, string, uint64, int, bool) *vmEnd
	layouts := []struct {
		name string
		a, b mk
	}{
		{"packed-packed", newPackedVMEnd, newPackedVMEnd},
		{"split-packed", newVMEnd, newPackedVMEnd},
		{"packed-split", newPackedVMEnd, newVMEnd},
	}
	for _, l := range layouts {
		for _, hdr := range []int{10, 12} {
			s := newTestSwitch(t)
			a := l.a(t, s, "a", 0, hdr, false)
			b := l.b(t, s, "b", 0x100000000, hdr, false)
			b.anyPost(8, 2048)
			var sent [][]byte
			for i, size := range []int{60, 1514, 600, 64} {
				f := ethFrame(0xb, 0xa, size)
				f[20] = byte(i)
				sent = append(sent, f)
				a.anySend(f, 6) // MACs split across descriptors
			}
			if n := pump(s, a, b); n != len(sent) {
				t.Fatalf("%s hdr %d: forwarded %d frames, want %d", l.name, hdr, n, len(sent))
			}
			got := b.anyReceived()
			if len(got) != len(sent) {
				t.Fatalf("%s hdr %d: guest b got %d buffers, want %d", l.name, hdr, len(got), len(sent))
			}
			for i, g := range got {
				if !bytes.Equal(g[:hdr], make([]byte, hdr)) && !(hdr == 12 && g[10] == 1) {
					t.Fatalf("%s hdr %d: frame %d header %x", l.name, hdr, i, g[:hdr])
				}
				if !bytes.Equal(g[hdr:], sent[i]) {
					t.Fatalf("%s hdr %d: frame %d corrupted", l.name, hdr, i)
				}
			}
			// The sender's transmit chains all came back.
			if a.ptx != nil {
				if used := a.ptx.CollectUsed(); len(used) != len(sent) {
					t.Fatalf("%s: %d transmit chains used, want %d", l.name, len(used), len(sent))
				}
			}
			sa, sb := a.port.Stats(), b.port.Stats()
			if sa.RxPackets != uint64(len(sent)) || sb.TxPackets != uint64(len(sent)) || sumDrops(sa)+sumDrops(sb) != 0 {
				t.Fatalf("%s hdr %d: counters a %+v b %+v", l.name, hdr, sa, sb)
			}
		}
	}
}

func sumDrops(s Snapshot) uint64 {
	var n uint64
	for _, d := range s.Drops {
		n += d
	}
	return n
}

// TestPackedMergeable spreads frames over several small packed receive
// buffers (MRG_RXBUF): num_buffers says how many, the bytes join up, the
// buffers come back in ring order, and what does not fit is counted.
func TestPackedMergeable(t *testing.T) {
	s := newTestSwitch(t)
	a := newPackedVMEnd(t, s, "a", 0, 12, true)
	b := newPackedVMEnd(t, s, "b", 0x100000000, 12, true)
	b.ppost(100, 256) // 12+1400 bytes take 6 buffers: 16 frames fit
	frames := make([][]byte, 20)
	for i := range frames {
		frames[i] = ethFrame(0xb, 0xa, 1400)
		frames[i][20] = byte(i)
		a.psend(frames[i], 14)
	}
	pump(s, a)
	got := b.preceived()
	if len(got) != 16*6 {
		t.Fatalf("guest got %d buffers, want %d", len(got), 16*6)
	}
	for i := 0; i < 16; i++ {
		chunk := got[i*6 : (i+1)*6]
		if n := binary.LittleEndian.Uint16(chunk[0][10:]); n != 6 {
			t.Fatalf("frame %d: num_buffers %d", i, n)
		}
		if all := bytes.Join(chunk, nil); !bytes.Equal(all[12:], frames[i]) {
			t.Fatalf("frame %d corrupted", i)
		}
	}
	st := b.port.Stats()
	if st.TxPackets != 16 || st.Drops["tx_no_buffers"] != 4 {
		t.Fatalf("counters %+v", st)
	}
}

// TestPackedIndirect sends frames in indirect tables through a packed
// transmit ring (VIRTIO_F_RING_INDIRECT_DESC).
func TestPackedIndirect(t *testing.T) {
	s := newTestSwitch(t)
	a := newPackedVMEnd(t, s, "a", 0, 12, false)
	b := newPackedVMEnd(t, s, "b", 0x100000000, 12, false)
	b.ppost(4, 2048)
	f := ethFrame(0xb, 0xa, 300)
	a.ptx.AddIndirect([]virtqueuetest.Buf{{Data: make([]byte, 12)}, {Data: f[:10]}, {Data: f[10:]}})
	if n := pump(s, a); n != 1 {
		t.Fatalf("forwarded %d", n)
	}
	got := b.preceived()
	if len(got) != 1 || !bytes.Equal(got[0][12:], f) {
		t.Fatalf("got %d buffers", len(got))
	}
}

// TestPackedBrokenQueue breaks a packed transmit ring with a buffer id
// beyond the queue: that ring stops and is counted once, the frames before
// it were delivered, and the other guest's port goes on working.
func TestPackedBrokenQueue(t *testing.T) {
	s := newTestSwitch(t)
	a := newPackedVMEnd(t, s, "a", 0, 12, false)
	b := newPackedVMEnd(t, s, "b", 0x100000000, 12, false)
	b.ppost(8, 2048)
	a.ppost(8, 2048)
	a.psend(ethFrame(0xb, 0xa, 60), 14)
	pos, wrap := a.ptx.AvailPos()
	addr := a.ptx.Alloc(80)
	a.ptx.WriteRaw(pos, addr, 80, 999, virtqueuetest.AvailFlags(wrap)) // id 999 >= size 256
	pump(s, a)
	pump(s, a)
	if got := b.preceived(); len(got) != 1 {
		t.Fatalf("b got %d frames before the bad descriptor, want 1", len(got))
	}
	ring := a.port.rings.Load().TX[0]
	if ring.Packed.Broken() == nil {
		t.Fatal("a packed ring with a buffer id beyond its size is not broken")
	}
	if d := a.port.Stats().Drops["rx_queue_broken"]; d != 1 {
		t.Fatalf("rx_queue_broken %d, want 1 (counted once however often polled)", d)
	}
	// b still sends to a.
	b.psend(ethFrame(0xa, 0xb, 60), 14)
	if n := pump(s, b); n != 1 {
		t.Fatalf("b forwarded %d after a broke, want 1", n)
	}
	if got := a.preceived(); len(got) != 1 {
		t.Fatalf("a got %d frames, want 1", len(got))
	}
}

// TestPackedForwardAllocs: a burst through packed rings allocates nothing.
func TestPackedForwardAllocs(t *testing.T) {
	s := newTestSwitch(t)
	a := newPackedVMEnd(t, s, "a", 0, 12, false)
	b := newPackedVMEnd(t, s, "b", 0x100000000, 12, false)
	b.psend(ethFrame(0xa, 0xb, 60), 14)
	a.ppost(1, 2048)
	pump(s, b)
	for i := 0; i < (allocRuns+1)*BurstSize; i++ {
		a.psend(ethFrame(0xb, 0xa, 60), 14)
	}
	b.ppost((allocRuns+1)*BurstSize, 2048)
	allocs := testing.AllocsPerRun(allocRuns, func() {
		if n := pump(s, a); n != BurstSize {
			t.Fatalf("forwarded %d frames, want a full burst", n)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per burst", allocs)
	}
}

// benchForwardPacked is benchForward over packed rings on both guests.
func benchForwardPacked(b *testing.B, size int, mrg bool) {
	s := newTestSwitch(b)
	a := newPackedVMEnd(b, s, "a", 0, 12, mrg)
	c := newPackedVMEnd(b, s, "b", 0x100000000, 12, mrg)
	c.psend(ethFrame(0xa, 0xb, 64), 14) // learn b
	a.ppost(1, 2048)
	pump(s, c)
	for i := 0; i < 128; i++ {
		a.ptx.AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), ethFrame(0xb, 0xa, size)...)}})
		c.ppost(1, 2048)
	}
	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	for n := 0; n < b.N; {
		n += pump(s, a)
		a.ptx.Recycle()
		c.prx.Recycle()
	}
}

func BenchmarkForward64Packed(b *testing.B)      { benchForwardPacked(b, 64, false) }
func BenchmarkForward64PackedMrg(b *testing.B)   { benchForwardPacked(b, 64, true) }
func BenchmarkForward1518Packed(b *testing.B)    { benchForwardPacked(b, 1518, false) }
func BenchmarkForward1518PackedMrg(b *testing.B) { benchForwardPacked(b, 1518, true) }

// TestPackedBuffersUsedInOrder is TestBuffersUsedInOrder over packed
// rings: whatever the frame and buffer sizes, merges and drops, buffers
// come back in the order the driver made them available (IN_ORDER, and
// the order a packed ring's used descriptors must keep anyway).
func TestPackedBuffersUsedInOrder(t *testing.T) {
	for _, mrg := range []bool{false, true} {
		s := newTestSwitch(t)
		a := newPackedVMEnd(t, s, "a", 0, 12, mrg)
		b := newPackedVMEnd(t, s, "b", 0x100000000, 12, mrg)
		var rxIDs, txIDs []uint16
		sizes := []int{2048, 100, 600, 64, 1600, 300, 80, 2048}
		for i := 0; i < 48; i++ {
			rxIDs = append(rxIDs, b.prx.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: sizes[i%len(sizes)]}}))
		}
		frames := []int{60, 1400, 60, 500, 1514, 60, 200}
		for i := 0; i < 40; i++ {
			txIDs = append(txIDs, a.psend(ethFrame(0xb, 0xa, frames[i%len(frames)]), 20))
		}
		for pump(s, a) > 0 {
		}
		check := func(ring string, used []virtqueuetest.PackedUsed, ids []uint16) {
			t.Helper()
			if len(used) == 0 || len(used) > len(ids) {
				t.Fatalf("mrg=%v %s: %d used of %d", mrg, ring, len(used), len(ids))
			}
			for i, u := range used {
				if u.ID != ids[i] {
					t.Fatalf("mrg=%v %s: used[%d] is buffer %d, available order says %d", mrg, ring, i, u.ID, ids[i])
				}
			}
		}
		check("transmit", a.ptx.CollectUsed(), txIDs)
		check("receive", b.prx.CollectUsed(), rxIDs)
		st := b.port.Stats()
		if st.TxPackets == 0 || st.Drops["tx_too_big"]+st.Drops["tx_no_buffers"] == 0 {
			t.Fatalf("mrg=%v: the mix should deliver some frames and drop some: %+v", mrg, st)
		}
	}
}
