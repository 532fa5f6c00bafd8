package vswitch

import (
	"bytes"
	"encoding/binary"
	"runtime/debug"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhost"
	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// vmEnd is a fake guest on a VMPort: a driver for its receive queue and one
// for its transmit queue.
type vmEnd struct {
	rx, tx   *virtqueuetest.Driver
	prx, ptx *virtqueuetest.PackedDriver // instead of rx, tx for a guest on packed rings
	port     *VMPort
	idx      int
	hdr      int
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l)
}

func newVMEnd(t testing.TB, s *Switch, name string, base uint64, hdr int, mrg bool) *vmEnd {
	t.Helper()
	return newSecuredVMEnd(t, s, name, base, hdr, mrg, PortSecurity{})
}

// newSecuredVMEnd is newVMEnd for a port with an address policy.
func newSecuredVMEnd(t testing.TB, s *Switch, name string, base uint64, hdr int, mrg bool, sec PortSecurity) *vmEnd {
	t.Helper()
	// One region holds both queues, as in a real guest.
	ram := make([]byte, 8<<20)
	e := &vmEnd{
		rx:  virtqueuetest.NewOn(ram[:4<<20], 256, base),
		tx:  virtqueuetest.NewOn(ram[4<<20:], 256, base+4<<20),
		hdr: hdr,
	}
	mem, err := guestmem.FromBytes([]guestmem.RegionSpec{{GuestPhysAddr: base, Size: 8 << 20, UserAddr: 0x7f0000000000 + base}}, [][]byte{ram})
	if err != nil {
		t.Fatal(err)
	}
	// Directions as vhost's device sets them: the walker checks each
	// descriptor's WRITE flag against them (counted, never refused).
	rxCfg, txCfg := e.rx.Config(), e.tx.Config()
	rxCfg.Dir, txCfg.Dir = virtqueue.DeviceWrites, virtqueue.DeviceReads
	qrx, err := virtqueue.New(mem, rxCfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	qtx, err := virtqueue.New(mem, txCfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	e.port = NewVMPort(name, 1, quietLog())
	if e.idx, err = s.AddSecuredPort(e.port, sec); err != nil {
		t.Fatal(err)
	}
	e.port.Publish(&vhost.Rings{
		Mem:      mem,
		RX:       []*vhost.Ring{{Index: 0, Queue: qrx, Kick: -1, Call: -1}},
		TX:       []*vhost.Ring{{Index: 1, Queue: qtx, Kick: -1, Call: -1}},
		HdrLen:   hdr,
		MrgRxbuf: mrg,
	})
	return e
}

// send queues frame on the guest's transmit ring, header and frame in
// separate descriptors split at split bytes into the frame.
func (e *vmEnd) send(frame []byte, split int) {
	h := make([]byte, e.hdr)
	e.tx.AddChain([]virtqueuetest.Buf{{Data: append(h, frame[:split]...)}, {Data: frame[split:]}})
}

func (e *vmEnd) post(n, size int) {
	for i := 0; i < n; i++ {
		e.rx.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: size}})
	}
}

// pump runs one burst from each end through the switch, as a poller would.
func pump(s *Switch, ends ...*vmEnd) int {
	p := s.pollers[0]
	t := s.table.Load()
	n := 0
	for _, e := range ends {
		for _, r := range e.port.Receivers() {
			n += p.forward(t, e.idx, r, s.now())
		}
	}
	p.calls.flush() // the end of the loop's pass
	return n
}

func ethFrame(dst, src byte, size int) []byte {
	f := make([]byte, size)
	copy(f, []byte{0x52, 0x54, 0, 0, 0, dst, 0x52, 0x54, 0, 0, 0, src, 0x08, 0x00})
	for i := 14; i < size; i++ {
		f[i] = byte(i)
	}
	return f
}

func newTestSwitch(t testing.TB) *Switch {
	s, err := New(Config{}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// received returns what the guest got in its receive ring: per used
// element, the bytes written.
func (e *vmEnd) received() [][]byte {
	var out [][]byte
	for _, u := range e.rx.CollectUsed() {
		out = append(out, append([]byte(nil), e.rx.Read(e.rx.DescAddr(u.ID), int(u.Len))...))
	}
	return out
}

func TestVMToVM(t *testing.T) {
	for _, hdr := range []int{10, 12} {
		s := newTestSwitch(t)
		a := newVMEnd(t, s, "a", 0, hdr, false)
		b := newVMEnd(t, s, "b", 0x100000000, hdr, false)
		b.post(4, 2048)
		f := ethFrame(0xb, 0xa, 60)
		a.send(f, 6) // MACs split across descriptors
		if n := pump(s, a, b); n != 1 {
			t.Fatalf("hdr %d: forwarded %d frames", hdr, n)
		}
		got := b.received()
		if len(got) != 1 || len(got[0]) != hdr+60 {
			t.Fatalf("hdr %d: received %d buffers %v", hdr, len(got), got)
		}
		wantHdr := make([]byte, hdr)
		if hdr == 12 {
			wantHdr[10] = 1 // num_buffers
		}
		if !bytes.Equal(got[0][:hdr], wantHdr) || !bytes.Equal(got[0][hdr:], f) {
			t.Fatalf("hdr %d: guest got %x", hdr, got[0])
		}
		if used := a.tx.CollectUsed(); len(used) != 1 || used[0].Len != 0 {
			t.Fatalf("hdr %d: transmit chain not returned: %+v", hdr, used)
		}
		sa, sb := a.port.Stats(), b.port.Stats()
		if sa.RxPackets != 1 || sa.RxBytes != 60 || sb.TxPackets != 1 || sb.TxBytes != 60 {
			t.Fatalf("hdr %d: counters a=%+v b=%+v", hdr, sa, sb)
		}
	}
}

func TestMergeableRx(t *testing.T) {
	s := newTestSwitch(t)
	a := newVMEnd(t, s, "a", 0, 12, true)
	b := newVMEnd(t, s, "b", 0x100000000, 12, true)
	b.post(8, 512)
	f := ethFrame(0xb, 0xa, 1400)
	a.send(f, 100)
	pump(s, a)
	got := b.received()
	if len(got) != 3 || len(got[0]) != 512 || len(got[1]) != 512 || len(got[2]) != 12+1400-1024 {
		t.Fatalf("mergeable frame spread as %d buffers", len(got))
	}
	if n := binary.LittleEndian.Uint16(got[0][10:]); n != 3 {
		t.Fatalf("num_buffers %d, want 3", n)
	}
	if all := bytes.Join(got, nil); !bytes.Equal(all[12:], f) {
		t.Fatal("frame bytes differ after merge")
	}
}

func TestRxDropsCounted(t *testing.T) {
	s := newTestSwitch(t)
	a := newVMEnd(t, s, "a", 0, 12, false)
	b := newVMEnd(t, s, "b", 0x100000000, 12, false)
	a.send(ethFrame(0xb, 0xa, 60), 20) // b has no buffers
	pump(s, a)
	b.post(1, 100)
	a.send(ethFrame(0xb, 0xa, 200), 20) // b's buffer too small
	pump(s, a)
	st := b.port.Stats()
	if st.Drops["tx_no_buffers"] != 1 || st.Drops["tx_too_big"] != 1 || st.TxPackets != 0 {
		t.Fatalf("drops %+v", st)
	}
	// The small buffer was not consumed: a small frame still fits.
	a.send(ethFrame(0xb, 0xa, 60), 20)
	pump(s, a)
	if got := b.received(); len(got) != 1 {
		t.Fatalf("small frame not delivered into the unused buffer: %d", len(got))
	}
}

func TestBrokenGuestQueueIsolated(t *testing.T) {
	s := newTestSwitch(t)
	a := newVMEnd(t, s, "a", 0, 12, false)
	b := newVMEnd(t, s, "b", 0x100000000, 12, false)
	c := newVMEnd(t, s, "c", 0x200000000, 12, false)
	c.post(4, 2048)
	// a's driver publishes an out-of-range head: a's transmit queue breaks.
	a.tx.Publish(999)
	pump(s, a)
	if st := a.port.Stats(); st.Drops["rx_queue_broken"] != 1 {
		t.Fatalf("break not counted: %+v", st)
	}
	pump(s, a) // logged and counted once only
	if st := a.port.Stats(); st.Drops["rx_queue_broken"] != 1 {
		t.Fatalf("break counted twice: %+v", st)
	}
	// b and c still talk.
	b.send(ethFrame(0xc, 0xb, 60), 14)
	pump(s, b)
	if got := c.received(); len(got) != 1 {
		t.Fatal("healthy guests stopped talking after another guest broke its queue")
	}
}

func TestForwardAllocatesNothing(t *testing.T) {
	s := newTestSwitch(t)
	a := newVMEnd(t, s, "a", 0, 12, true)
	b := newVMEnd(t, s, "b", 0x100000000, 12, true)
	if allocs := forwardBurstsAllocs(t, s, a, b); allocs != 0 {
		t.Fatalf("forwarding allocates %.2f times per burst", allocs)
	}
}

// allocRuns is how many bursts forwardBurstsAllocs measures;
// AllocsPerRun makes one extra run, so (allocRuns+1)*BurstSize frames go
// from a to b in all.
const allocRuns = 1

// forwardBurstsAllocs has the switch learn a and b, then forwards full
// bursts from a to b and returns the allocations per burst. The frames
// and buffers are prepared first, so the mock driver (which allocates)
// stays out of the measurement.
func forwardBurstsAllocs(t *testing.T, s *Switch, a, b *vmEnd) float64 {
	t.Helper()
	b.send(ethFrame(0xa, 0xb, 60), 14)
	a.post(1, 2048)
	pump(s, b)
	for i := 0; i < (allocRuns+1)*BurstSize; i++ {
		a.send(ethFrame(0xb, 0xa, 60), 14)
	}
	b.post((allocRuns+1)*BurstSize, 2048)
	return testing.AllocsPerRun(allocRuns, func() {
		if n := pump(s, a); n != BurstSize {
			t.Fatalf("forwarded %d frames, want a full burst", n)
		}
	})
}

// benchForward measures steady-state VM-to-VM forwarding of size-byte
// frames: both guests' drivers recycle their buffers as fast as vhostd uses
// them, so each op is one frame through the learning switch.
func benchForward(b *testing.B, size int, mrg bool) {
	benchForwardSecured(b, size, mrg, PortSecurity{})
}

// benchForwardSecured is benchForward with sender a under policy sec.
func benchForwardSecured(b *testing.B, size int, mrg bool, sec PortSecurity) {
	s := newTestSwitch(b)
	a := newSecuredVMEnd(b, s, "a", 0, 12, mrg, sec)
	c := newVMEnd(b, s, "b", 0x100000000, 12, mrg)
	c.send(ethFrame(0xa, 0xb, 64), 14) // learn b
	a.post(1, 2048)
	pump(s, c)
	for i := 0; i < 128; i++ {
		a.tx.AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), ethFrame(0xb, 0xa, size)...)}})
		c.post(1, 2048)
	}
	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	for n := 0; n < b.N; {
		n += pump(s, a)
		a.tx.Recycle()
		c.rx.Recycle()
	}
	b.StopTimer()
	// The drivers behave: the walker checked every descriptor's
	// direction and counted nothing.
	for _, e := range []*vmEnd{a, c} {
		r := e.port.rings.Load()
		for _, ring := range append(append([]*vhost.Ring(nil), r.RX...), r.TX...) {
			if v := ring.Queue.Violations(); v != ([virtqueue.NumViolations]virtqueue.ViolationRecord{}) {
				b.Fatalf("violations counted for a well-behaved driver: %+v", v)
			}
		}
	}
}

func BenchmarkForward64(b *testing.B)      { benchForward(b, 64, false) }
func BenchmarkForward64Mrg(b *testing.B)   { benchForward(b, 64, true) }
func BenchmarkForward1518(b *testing.B)    { benchForward(b, 1518, false) }
func BenchmarkForward1518Mrg(b *testing.B) { benchForward(b, 1518, true) }

// BenchmarkForward64Pinned: the sender is pinned to its address, so every
// frame's source is checked.
func BenchmarkForward64Pinned(b *testing.B) {
	benchForwardSecured(b, 64, false, PortSecurity{Mode: FixedMAC, MAC: 0x52540000000a, MaxMACs: 16})
}

// TestMergeableManyChains sends frames that each need 23 small receive
// buffers, so one burst needs more chains than Transmit reserves in one
// pass and more than the guest has: what fits arrives intact, the rest is
// counted.
func TestMergeableManyChains(t *testing.T) {
	s := newTestSwitch(t)
	a := newVMEnd(t, s, "a", 0, 12, true)
	b := newVMEnd(t, s, "b", 0x100000000, 12, true)
	b.post(256, 64)
	frames := make([][]byte, 16)
	for i := range frames {
		frames[i] = ethFrame(0xb, 0xa, 1400)
		frames[i][20] = byte(i)
		a.send(frames[i], 14)
	}
	pump(s, a)
	got := b.received()
	// 12+1400 bytes in 64-byte buffers: 23 buffers a frame; 256/23 = 11.
	if len(got) != 11*23 {
		t.Fatalf("guest got %d buffers, want %d", len(got), 11*23)
	}
	for i := 0; i < 11; i++ {
		chunk := got[i*23 : (i+1)*23]
		if n := binary.LittleEndian.Uint16(chunk[0][10:]); n != 23 {
			t.Fatalf("frame %d: num_buffers %d", i, n)
		}
		if all := bytes.Join(chunk, nil); !bytes.Equal(all[12:], frames[i]) {
			t.Fatalf("frame %d corrupted", i)
		}
	}
	st := b.port.Stats()
	if st.TxPackets != 11 || st.Drops["tx_no_buffers"] != 5 {
		t.Fatalf("counters %+v", st)
	}
}

// TestReceiveRingsAskNoKicks checks that the guest is told not to kick its
// receive rings, which the switch never waits on: each kick would cost the
// driver a syscall or a VM exit per refill for nothing.
func TestReceiveRingsAskNoKicks(t *testing.T) {
	s := newTestSwitch(t)
	a := newVMEnd(t, s, "a", 0, 12, false)
	if f := a.rx.UsedFlags(); f&virtqueue.UsedFNoNotify == 0 {
		t.Fatalf("receive ring used flags %#x: NO_NOTIFY not set", f)
	}
	if f := a.tx.UsedFlags(); f&virtqueue.UsedFNoNotify != 0 {
		t.Fatalf("transmit ring used flags %#x: NO_NOTIFY set before the switch polls it", f)
	}
}

// TestNetHeaderStoresOnlyWhatDiffers checks that a header that is right
// already is not written at all (so its cache line stays shared with the
// driver), by handing putNetHeader a read-only page, and that a wrong one
// is rewritten whole.
func TestNetHeaderStoresOnlyWhatDiffers(t *testing.T) {
	page, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(page)
	page[10] = 3 // num_buffers = 3, all else zero
	if err := unix.Mprotect(page, unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("a header that was right already was written: %v", r)
			}
		}()
		putNetHeader(page, 12, 3)
		putNetHeader(page[100:], 10, 1)
	}()

	for _, hdr := range []int{10, 12} {
		d := bytes.Repeat([]byte{0xff}, 16)
		putNetHeader(d, hdr, 2)
		want := make([]byte, hdr)
		if hdr == 12 {
			want[10] = 2
		}
		if !bytes.Equal(d[:hdr], want) || d[hdr] != 0xff {
			t.Fatalf("hdr %d over 0xff: got %x", hdr, d)
		}
	}
}

// TestBuffersUsedInOrder checks the promise of VIRTIO_F_IN_ORDER on both
// rings: whatever the frame sizes, buffer sizes, merges and drops, chains
// come back on the used ring in the order the driver made them available.
func TestBuffersUsedInOrder(t *testing.T) {
	for _, mrg := range []bool{false, true} {
		s := newTestSwitch(t)
		a := newVMEnd(t, s, "a", 0, 12, mrg)
		b := newVMEnd(t, s, "b", 0x100000000, 12, mrg)
		var rxHeads, txHeads []uint16
		sizes := []int{2048, 100, 600, 64, 1600, 300, 80, 2048}
		for i := 0; i < 48; i++ {
			rxHeads = append(rxHeads, b.rx.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: sizes[i%len(sizes)]}}))
		}
		frames := []int{60, 1400, 60, 500, 1514, 60, 200}
		for i := 0; i < 40; i++ {
			f := ethFrame(0xb, 0xa, frames[i%len(frames)])
			h := make([]byte, 12)
			txHeads = append(txHeads, a.tx.AddChain([]virtqueuetest.Buf{{Data: append(h, f[:20]...)}, {Data: f[20:]}}))
		}
		for pump(s, a) > 0 {
		}
		check := func(ring string, used []virtqueuetest.Used, heads []uint16) {
			t.Helper()
			if len(used) == 0 || len(used) > len(heads) {
				t.Fatalf("mrg=%v %s: %d used of %d", mrg, ring, len(used), len(heads))
			}
			for i, u := range used {
				if u.ID != heads[i] {
					t.Fatalf("mrg=%v %s: used[%d] is chain %d, available order says %d", mrg, ring, i, u.ID, heads[i])
				}
			}
		}
		check("transmit", a.tx.CollectUsed(), txHeads)
		check("receive", b.rx.CollectUsed(), rxHeads)
		st := b.port.Stats()
		if st.TxPackets == 0 || st.Drops["tx_too_big"]+st.Drops["tx_no_buffers"] == 0 {
			t.Fatalf("mrg=%v: the mix should deliver some frames and drop some: %+v", mrg, st)
		}
	}
}

// sendOne queues frame on the guest's transmit ring behind a zero header,
// all in one descriptor, on either layout.
func (e *vmEnd) sendOne(frame []byte) {
	b := []virtqueuetest.Buf{{Data: append(make([]byte, e.hdr), frame...)}}
	if e.ptx != nil {
		e.ptx.AddChain(b)
	} else {
		e.tx.AddChain(b)
	}
}

// postChain makes one receive chain of bufs available, on either layout.
func (e *vmEnd) postChain(bufs ...virtqueuetest.Buf) {
	if e.prx != nil {
		e.prx.AddChain(bufs)
	} else {
		e.rx.AddChain(bufs)
	}
}

// joinMerged joins the buffers of mergeable frames by their num_buffers
// and returns the frames without their 12-byte headers.
func joinMerged(t *testing.T, bufs [][]byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(bufs) > 0 {
		n := int(binary.LittleEndian.Uint16(bufs[0][10:12]))
		if n < 1 || n > len(bufs) {
			t.Fatalf("num_buffers %d with %d buffers left", n, len(bufs))
		}
		f := append([]byte(nil), bufs[0][12:]...)
		for _, b := range bufs[1:n] {
			f = append(f, b...)
		}
		out, bufs = append(out, f), bufs[n:]
	}
	return out
}

// TestTransmitRunFallsBack: one-segment frames into buffers of every
// shape. Transmit's run of frames that each fit one buffer stops at the
// first that does not (merged over buffers, a buffer of two descriptors,
// over the receiver's MTU), and the general path goes on from there:
// every frame arrives whole, in order, in the buffers it should, and no
// receive chain is lost.
func TestTransmitRunFallsBack(t *testing.T) {
	const over = 1415 // over b's MTU: dropped
	orders := [][]int{
		{64, over, 64, 1400, 64, 100, 64}, // the run ends at the frame over the MTU
		{64, 64, 1400, 64, 100, over, 64}, // at a frame that takes three 512-byte buffers
	}
	for _, packed := range []bool{false, true} {
		for _, sizes := range orders {
			s := newTestSwitch(t)
			mk := newVMEnd
			if packed {
				mk = newPackedVMEnd
			}
			a, b := mk(t, s, "a", 0, 12, true), mk(t, s, "b", 0x100000000, 12, true)
			withMTU(b, 1400)
			w := func(n int) virtqueuetest.Buf { return virtqueuetest.Buf{Write: true, WriteLen: n} }
			for _, size := range []int{2048, 2048, 512, 512, 512, 2048} {
				b.postChain(w(size))
			}
			b.postChain(w(16), w(2032)) // the 100-byte frame's
			b.postChain(w(2048))
			b.postChain(w(2048))
			var want [][]byte
			for i, size := range sizes {
				f := ethFrame(0xb, 0xa, size)
				f[20] = byte(i) // tell them apart
				a.sendOne(f)
				if size != over {
					want = append(want, f)
				}
			}
			pump(s, a)
			bufs := b.anyReceived()
			if len(bufs) != 8 {
				t.Fatalf("packed=%v %v: b got %d buffers, want 8", packed, sizes, len(bufs))
			}
			// The last chain left is the one the next frame takes.
			last := ethFrame(0xb, 0xa, 64)
			last[20] = 0xff
			a.sendOne(last)
			pump(s, a)
			more := b.anyReceived()
			if len(more) != 1 {
				t.Fatalf("packed=%v %v: the frame after: %d buffers, want 1", packed, sizes, len(more))
			}
			got := joinMerged(t, append(bufs, more...))
			want = append(want, last)
			if len(got) != len(want) {
				t.Fatalf("packed=%v %v: b got %d frames, want %d", packed, sizes, len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("packed=%v %v: frame %d differs: %d bytes, want %d", packed, sizes, i, len(got[i]), len(want[i]))
				}
			}
			if st := b.port.Stats(); st.TxPackets != 7 || st.Drops["mtu_exceeded"] != 1 {
				t.Fatalf("packed=%v %v: b sent %d, drops %v", packed, sizes, st.TxPackets, st.Drops)
			}
		}
	}
}

// TestTransmitEmptyReceiveBuffer: a receive chain of one zero-length
// buffer (a guest may post anything) is no place for a frame, and no
// reason to fail: the frame is sent or counted as dropped.
func TestTransmitEmptyReceiveBuffer(t *testing.T) {
	for _, mrg := range []bool{false, true} {
		s := newTestSwitch(t)
		a, b := newVMEnd(t, s, "a", 0, 12, mrg), newVMEnd(t, s, "b", 0x100000000, 12, mrg)
		b.postChain(virtqueuetest.Buf{Write: true, WriteLen: 0})
		b.postChain(virtqueuetest.Buf{Write: true, WriteLen: 2048})
		a.sendOne(ethFrame(0xb, 0xa, 64))
		pump(s, a)
		st := b.port.Stats()
		dropped := uint64(0)
		for _, n := range st.Drops {
			dropped += n
		}
		if st.TxPackets+dropped != 1 {
			t.Fatalf("mrg=%v: %d sent, drops %v", mrg, st.TxPackets, st.Drops)
		}
	}
}

// TestForwardSameRunEnds: a burst mostly of one flow, broken by frames
// the run of same-address frames must leave to forward's loop: another
// destination, a runt with the same addresses, addresses split across
// segments, a broadcast. Each frame goes where its addresses say, in
// order, and the runt is counted, not sent.
func TestForwardSameRunEnds(t *testing.T) {
	s := newTestSwitch(t)
	a := newVMEnd(t, s, "a", 0, 12, false)
	b := newVMEnd(t, s, "b", 0x100000000, 12, false)
	c := newVMEnd(t, s, "c", 0x200000000, 12, false)
	for _, e := range []*vmEnd{a, b, c} {
		e.post(64, 2048)
	}
	// b and c make themselves known (flooded to the others).
	b.send(ethFrame(0xa, 0xb, 60), 60)
	c.send(ethFrame(0xa, 0xc, 60), 60)
	pump(s, b, c)
	a.received()
	b.received()
	c.received()

	type frame struct {
		dst   byte
		size  int
		split int // bytes of the frame in the header's descriptor
	}
	burst := []frame{
		{0xb, 60, 60}, {0xb, 60, 60}, {0xb, 60, 60},
		{0xc, 60, 60}, // another destination
		{0xb, 60, 60},
		{0xb, 13, 13}, // a runt with the same addresses
		{0xb, 60, 60},
		{0xb, 60, 6}, // addresses split across descriptors
		{0xb, 60, 60},
		{0xff, 60, 60}, // broadcast
		{0xb, 60, 60}, {0xb, 60, 60},
	}
	var toB, toC [][]byte
	for i, fr := range burst {
		f := ethFrame(fr.dst, 0xa, fr.size)
		if fr.dst == 0xff {
			copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		}
		if fr.size > 14 {
			f[14] = byte(i) // tell them apart
		}
		a.send(f, fr.split)
		switch {
		case fr.size < 14:
		case fr.dst == 0xb:
			toB = append(toB, f)
		case fr.dst == 0xc:
			toC = append(toC, f)
		default:
			toB, toC = append(toB, f), append(toC, f)
		}
	}
	pump(s, a)
	for _, e := range []struct {
		name string
		end  *vmEnd
		want [][]byte
	}{{"b", b, toB}, {"c", c, toC}} {
		got := e.end.received()
		if len(got) != len(e.want) {
			t.Fatalf("%s got %d frames, want %d", e.name, len(got), len(e.want))
		}
		for i := range got {
			if !bytes.Equal(got[i][12:], e.want[i]) {
				t.Fatalf("%s: frame %d is %x, want %x", e.name, i, got[i][12:], e.want[i])
			}
		}
	}
	if st := a.port.Stats(); st.Drops["rx_runt"] != 1 || st.RxPackets != uint64(len(burst)-1) {
		t.Fatalf("a: %d received, drops %v", st.RxPackets, st.Drops)
	}
}

// TestForwardHeaderOnlyChain: a chain that holds only its virtio-net
// header (no frame bytes, not even an empty descriptor after it), sent
// right after a frame to a known address, is a runt like any other: the
// loop that takes a run of frames to one destination must not look for
// the next frame's addresses before its length. It used to index the
// frame's empty segment list and panic, which ended the daemon.
func TestForwardHeaderOnlyChain(t *testing.T) {
	for _, packed := range []bool{false, true} {
		t.Run(map[bool]string{false: "split", true: "packed"}[packed], func(t *testing.T) {
			s := newTestSwitch(t)
			end := newVMEnd
			if packed {
				end = newPackedVMEnd
			}
			a := end(t, s, "a", 0, 12, false)
			b := end(t, s, "b", 0x100000000, 12, false)
			a.anyPost(64, 2048)
			b.anyPost(64, 2048)
			b.anySend(ethFrame(0xa, 0xb, 60), 60)
			pump(s, b)
			a.anyReceived()
			hdrOnly := []virtqueuetest.Buf{{Data: make([]byte, a.hdr)}}
			for i := 0; i < 3; i++ {
				a.anySend(ethFrame(0xb, 0xa, 60), 60)
				if packed {
					a.ptx.AddChain(hdrOnly)
				} else {
					a.tx.AddChain(hdrOnly)
				}
			}
			pump(s, a)
			if got := b.anyReceived(); len(got) != 3 {
				t.Fatalf("b got %d frames, want 3", len(got))
			}
			if st := a.port.Stats(); st.Drops["rx_runt"] != 3 || st.RxPackets != 3 {
				t.Fatalf("a: %d received, drops %v; want 3 and 3 rx_runt", st.RxPackets, st.Drops)
			}
		})
	}
}
