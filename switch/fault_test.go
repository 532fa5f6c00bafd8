package vswitch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/vhost"
	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// Memory layout of a faultEnd's 8 MiB memfd, relative to its base: the
// transmit queue's rings and buffers in the lower half, the receive
// queue's in the upper, so that a test can take away one side only.
const (
	faultMemSize = 8 << 20
	txHalf       = 0       // transmit rings at +0x1000..., buffers from +1 MiB
	rxHalf       = 4 << 20 // receive rings at +4 MiB+0x1000..., buffers from +5 MiB
)

// faultEnd is a fake guest whose memory is a real memfd, mapped by the
// port through guestmem.Map as vhost maps a frontend's memory, so that the
// test can truncate it under the data path.
type faultEnd struct {
	*vmEnd
	memfd  *virtqueuetest.Memfd
	mem    *guestmem.Memory
	rings  *vhost.Rings
	faults chan error
}

func newFaultEnd(t *testing.T, s *Switch, name string, base uint64) *faultEnd {
	t.Helper()
	mf, err := virtqueuetest.NewMemfd(faultMemSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mf.Close)
	mem, err := mf.Map(base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mem.Unmap)
	e := &faultEnd{
		vmEnd: &vmEnd{
			tx:  virtqueuetest.NewOn(mf.Mem[txHalf:rxHalf], 256, base+txHalf),
			rx:  virtqueuetest.NewOn(mf.Mem[rxHalf:], 256, base+rxHalf),
			hdr: 12,
		},
		memfd:  mf,
		mem:    mem,
		faults: make(chan error, 8),
	}
	qrx, err := virtqueue.New(mem, e.rx.Config(), 0)
	if err != nil {
		t.Fatal(err)
	}
	qtx, err := virtqueue.New(mem, e.tx.Config(), 0)
	if err != nil {
		t.Fatal(err)
	}
	e.port = NewVMPort(name, 1, quietLog())
	e.port.OnFault = func(err error) { e.faults <- err }
	if e.idx, err = s.AddPort(e.port); err != nil {
		t.Fatal(err)
	}
	// Polled rings (no kick fd): the pollers never sleep on them, so a
	// truncated ring is touched at once.
	e.rings = &vhost.Rings{
		Mem:    mem,
		RX:     []*vhost.Ring{{Index: 0, Queue: qrx, Kick: -1, Call: -1}},
		TX:     []*vhost.Ring{{Index: 1, Queue: qtx, Kick: -1, Call: -1}},
		HdrLen: 12,
	}
	e.port.Publish(e.rings)
	// Cleanups run last first: the running pollers let go of the rings
	// before the memory is unmapped, as in a device's teardown.
	t.Cleanup(func() { e.port.Publish(nil) })
	return e
}

// sendSplit queues frame with its bytes from split on in a buffer at
// offset far into the transmit queue's memory (which the test may truncate
// away), the virtio-net header and the bytes before split where the
// driver puts them.
func (e *faultEnd) sendSplit(frame []byte, split int, far uint64) {
	d := e.tx
	head := d.AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, e.hdr), frame[:split]...)}, {Data: frame[split:]}})
	second := binary.LittleEndian.Uint16(d.Read(d.GPA+virtqueuetest.DescBase+16*uint64(head)+14, 2))
	copy(d.Read(d.GPA+far, len(frame)-split), frame[split:])
	d.WriteDesc(d.GPA+virtqueuetest.DescBase, second, d.GPA+far, uint32(len(frame)-split), 0, 0)
}

// expectFault waits for the port's OnFault and checks what it says.
func (e *faultEnd) expectFault(t *testing.T) *guestmem.Fault {
	t.Helper()
	select {
	case err := <-e.faults:
		var f *guestmem.Fault
		if !errors.As(err, &f) || f.Mem != e.mem {
			t.Fatalf("OnFault(%v): not a fault of this port's memory", err)
		}
		if !strings.Contains(err.Error(), "guest memory fault at host address 0x") || !e.mem.Contains(f.Addr) {
			t.Fatalf("OnFault(%q): the address %#x is not in the port's memory", err, f.Addr)
		}
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("OnFault not called")
	}
	return nil
}

// noMoreFaults checks that OnFault is not called again.
func (e *faultEnd) noMoreFaults(t *testing.T) {
	t.Helper()
	select {
	case err := <-e.faults:
		t.Fatalf("OnFault called again: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
}

// guardedPump runs one burst of each end through poller 0 under the
// poller's own recover frame, as its loop would run it: it reports whether
// a guest memory fault cut the burst short.
func guardedPump(t *testing.T, s *Switch, ends ...*faultEnd) bool {
	t.Helper()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	p := s.pollers[0]
	return p.guarded(s.log, func(*logrus.Entry) {
		tb := s.table.Load()
		p.t = tb
		for _, e := range ends {
			for _, r := range e.port.Receivers() {
				p.busy = r
				p.forward(tb, e.idx, r, s.now())
				p.busy = nil
			}
		}
		p.calls.flush()
	})
}

// TestSourceFaultMidCopy truncates a guest's memory under a frame the
// switch is copying out of it into a healthy guest: the faulting guest's
// port stops, and the healthy guest's receive ring is left as if the
// frames cut short had never been planned. Its buffers come back used in
// the order it made them available (IN_ORDER), none lost, and it goes on
// receiving. Either the poller that faulted repairs the ring when its loop
// restarts or, with the queue shared between pollers, the next poller to
// transmit into it does, if it comes first.
func TestSourceFaultMidCopy(t *testing.T) {
	for _, pollers := range []int{1, 2} {
		s, err := New(Config{Pollers: pollers}, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		a := newFaultEnd(t, s, "a", 0)
		b := newFaultEnd(t, s, "b", 0x100000000)
		c := newFaultEnd(t, s, "c", 0x200000000)
		var heads []uint16
		for i := 0; i < 8; i++ {
			heads = append(heads, c.rx.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}}))
		}
		// Teach the switch where c is.
		c.send(ethFrame(0xb, 0xc, 60), 14)
		b.post(1, 2048)
		if guardedPump(t, s, c) {
			t.Fatal("fault while learning")
		}
		// Three frames to c in one burst, the second with its tail at 3
		// MiB into a's memory, which is then cut at 2 MiB (a's rings and
		// the other frames lie below).
		f1, f2, f3 := ethFrame(0xc, 0xa, 200), ethFrame(0xc, 0xa, 1400), ethFrame(0xc, 0xa, 300)
		a.send(f1, 14)
		a.sendSplit(f2, 100, 3<<20)
		a.send(f3, 14)
		if err := a.memfd.Truncate(2 << 20); err != nil {
			t.Fatal(err)
		}
		if !guardedPump(t, s, a) {
			t.Fatalf("%d pollers: no fault reported: the copy read a truncated page", pollers)
		}
		a.expectFault(t)
		if a.port.Running() {
			t.Fatal("the faulted port still has rings running")
		}
		// The burst's three frames for c are counted as lost to a's
		// fault: f1, copied before it, is among them (the repair below
		// publishes it), as the count cannot know how far the copy got.
		if n := a.port.Stats().Drops["guest_memory_fault"]; n != 3 {
			t.Fatalf("%d pollers: a's guest_memory_fault = %d, want 3", pollers, n)
		}
		f4, f5 := ethFrame(0xc, 0xb, 100), ethFrame(0xc, 0xb, 100)
		f5[20] = 5
		b.send(f4, 14)
		b.send(f5, 14)
		want := [][]byte{f1, f4, f5}
		if pollers == 1 {
			// The next start of the loop settles c's receive queue: f1
			// is delivered at once.
			if guardedPump(t, s) {
				t.Fatal("fault again after the port was stopped")
			}
			got := c.rx.CollectUsed()
			if len(got) != 1 || got[0].ID != heads[0] || !bytes.Equal(c.rx.Read(c.rx.DescAddr(got[0].ID), 12+200)[12:], f1) {
				t.Fatalf("c received %+v, want f1 alone in its first buffer", got)
			}
			if q := c.rings.RX[0].Queue; q.LastAvail() != q.UsedIdx() {
				t.Fatalf("c's receive queue holds %d chains popped and never used", q.LastAvail()-q.UsedIdx())
			}
			heads, want = heads[1:], want[1:]
			if guardedPump(t, s, b) {
				t.Fatal("fault on healthy guests")
			}
		} else {
			// Poller 1 transmits into c before poller 0 restarts.
			p := s.pollers[1]
			tb := s.table.Load()
			for _, r := range b.port.Receivers() {
				p.forward(tb, b.idx, r, s.now())
			}
			p.calls.flush()
		}
		used := c.rx.CollectUsed()
		if len(used) != len(want) {
			t.Fatalf("%d pollers: c's buffers used as %+v after the fault, want %d", pollers, used, len(want))
		}
		for i, u := range used {
			if u.ID != heads[i] {
				t.Fatalf("%d pollers: c's buffers used as %+v, not in the order %v it made them available", pollers, used, heads[:len(want)])
			}
			if got := c.rx.Read(c.rx.DescAddr(u.ID), int(u.Len)); !bytes.Equal(got[12:], want[i]) {
				t.Fatalf("%d pollers: c's buffer %d holds the wrong frame", pollers, i)
			}
		}
		// Frames for a are dropped, counted, and harm nothing.
		b.send(ethFrame(0xa, 0xb, 60), 14)
		if guardedPump(t, s, b) {
			t.Fatal("fault transmitting towards the stopped port")
		}
		if n := a.port.Stats().Drops["tx_not_ready"]; n != 1 {
			t.Fatalf("a's tx_not_ready = %d, want 1", n)
		}
		a.noMoreFaults(t)
	}
}

// TestDestinationFault truncates a guest's receive buffers while frames
// are being copied into them: that guest's port stops, the source guest's
// transmit chains all come back used (the burst the fault cut short is
// done with), and the source goes on talking to others.
func TestDestinationFault(t *testing.T) {
	s := newTestSwitch(t)
	a := newFaultEnd(t, s, "a", 0)
	b := newFaultEnd(t, s, "b", 0x100000000)
	c := newFaultEnd(t, s, "c", 0x200000000)
	a.post(4, 2048)
	c.post(4, 2048)
	a.send(ethFrame(0xb, 0xa, 60), 14) // learn a
	c.send(ethFrame(0xb, 0xc, 60), 14) // learn c
	if guardedPump(t, s, a, c) {
		t.Fatal("fault while learning")
	}
	a.received()
	c.received()
	for i := 0; i < 3; i++ {
		b.send(ethFrame(0xc, 0xb, 500), 14)
	}
	// c's receive rings stay, its receive buffers (from rxHalf+1 MiB) go.
	if err := c.memfd.Truncate(rxHalf + 1<<20); err != nil {
		t.Fatal(err)
	}
	if !guardedPump(t, s, b) {
		t.Fatal("no fault reported: the copy wrote a truncated page")
	}
	c.expectFault(t)
	if n := c.port.Stats().Drops["guest_memory_fault"]; n != 3 {
		t.Fatalf("c's guest_memory_fault = %d, want the 3 frames of b's burst", n)
	}
	// b, healthy, sent them: its counters have them, though the burst
	// ended in c's fault.
	if st := b.port.Stats(); st.RxPackets != 3 || st.RxBytes != 3*500 {
		t.Fatalf("b's rx %d frames, %d bytes after c's fault, want 3 and 1500", st.RxPackets, st.RxBytes)
	}
	// The loop's restart, before any more of b's bursts, gives b its
	// chains back: b may have nothing more to send until it has them.
	if guardedPump(t, s) {
		t.Fatal("fault again")
	}
	if used := b.tx.CollectUsed(); len(used) != 3 {
		t.Fatalf("b got %d of its 3 transmit chains back", len(used))
	}
	b.send(ethFrame(0xa, 0xb, 70), 14)
	if guardedPump(t, s, b) {
		t.Fatal("fault on healthy guests")
	}
	if got := a.received(); len(got) != 1 || len(got[0]) != 12+70 {
		t.Fatalf("a received %d frames after c faulted", len(got))
	}
	c.noMoreFaults(t)
}

// TestSourceFaultWhileSorting: a frame whose addresses lie in memory
// the source guest has cut away faults while the switch sorts the burst
// by destination, before any frame is handed over: the whole burst is
// lost and counted on the source as guest_memory_fault, none of it as
// received.
func TestSourceFaultWhileSorting(t *testing.T) {
	s := newTestSwitch(t)
	a := newFaultEnd(t, s, "a", 0)
	c := newFaultEnd(t, s, "c", 0x200000000)
	c.post(4, 2048)
	c.send(ethFrame(0xb, 0xc, 60), 14) // learn c
	if guardedPump(t, s, c) {
		t.Fatal("fault while learning")
	}
	a.send(ethFrame(0xc, 0xa, 200), 14)
	a.sendSplit(ethFrame(0xc, 0xa, 300), 0, 3<<20) // the whole frame far away
	a.send(ethFrame(0xc, 0xa, 400), 14)
	if err := a.memfd.Truncate(2 << 20); err != nil {
		t.Fatal(err)
	}
	if !guardedPump(t, s, a) {
		t.Fatal("no fault reported: the switch read a truncated page")
	}
	a.expectFault(t)
	if st := a.port.Stats(); st.Drops["guest_memory_fault"] != 3 || st.RxPackets != 0 {
		t.Fatalf("a: rx %d, guest_memory_fault %d; want 0 and the burst's 3", st.RxPackets, st.Drops["guest_memory_fault"])
	}
	if guardedPump(t, s) {
		t.Fatal("fault again")
	}
	if got := c.received(); len(got) != 0 {
		t.Fatalf("c received %d frames of the burst that faulted", len(got))
	}
	a.noMoreFaults(t)
}

// TestFaultOutsideGuestMemoryPanics checks that a fault the guests did
// not cause is not swallowed: a bug of ours must still crash loudly.
func TestFaultOutsideGuestMemoryPanics(t *testing.T) {
	s := newTestSwitch(t)
	newFaultEnd(t, s, "a", 0)
	stray, err := virtqueuetest.NewMemfd(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer stray.Close()
	if err := stray.Truncate(0); err != nil {
		t.Fatal(err)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	for name, body := range map[string]func(*logrus.Entry){
		"fault in memory of no port": func(*logrus.Entry) { stray.Mem[100]++ },
		"nil dereference":            func(*logrus.Entry) { var p *poller; p.id++ },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Fatalf("%s: recovered and carried on", name)
				}
			}()
			p := s.pollers[0]
			p.t = s.table.Load()
			p.guarded(s.log, body)
		}()
	}
}

// TestTruncatedGuestWhileForwarding runs real pollers (two, polling,
// never sleeping) with three guests talking, and truncates one guest's
// whole memory under them: the daemon survives, the guest's OnFault is
// called once, the other guests keep forwarding, frames towards the dead
// port are counted as drops, and the pollers still acknowledge changes, so
// the port's teardown (Publish(nil)) returns.
func TestTruncatedGuestWhileForwarding(t *testing.T) {
	s, err := New(Config{Pollers: 2}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	a := newFaultEnd(t, s, "a", 0)
	b := newFaultEnd(t, s, "b", 0x100000000)
	c := newFaultEnd(t, s, "c", 0x200000000)
	s.Start()
	c.post(200, 2048)
	waitUsed := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for int(c.rx.UsedIdx()) < want {
			if time.Now().After(deadline) {
				t.Fatalf("c received %d frames, want %d", c.rx.UsedIdx(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for i := 0; i < 5; i++ {
		a.send(ethFrame(0xc, 0xa, 100), 14)
		b.send(ethFrame(0xc, 0xb, 100), 14)
	}
	waitUsed(10)
	if err := a.memfd.Truncate(0); err != nil {
		t.Fatal(err)
	}
	a.expectFault(t)
	for i := 0; i < 20; i++ {
		b.send(ethFrame(0xc, 0xb, 100), 14)
	}
	waitUsed(30)
	for i := 0; i < 5; i++ {
		b.send(ethFrame(0xa, 0xb, 100), 14)
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.port.Stats().Drops["tx_not_ready"] < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("frames to the faulted port not counted: %+v", a.port.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	// The connection's teardown and a frontend re-sending its rings over
	// the faulted memory: neither may hang, the latter is refused.
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.port.Publish(a.rings)
		if a.port.Running() {
			t.Error("rings over faulted memory published")
		}
		a.port.Publish(nil)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Publish hangs: a poller stopped acknowledging changes")
	}
	a.noMoreFaults(t)
	// Once the device has unmapped it, the memory's range is no longer
	// a's: a fault there would be a bug of ours.
	b0, err := a.mem.Slice(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	addr := uintptr(unsafe.Pointer(&b0[0]))
	if v, _ := faultOwner(s.table.Load(), addr); v != a.port {
		t.Fatal("a fault in a's memory, before it is unmapped, is not a's")
	}
	a.mem.Unmap()
	if v, _ := faultOwner(s.table.Load(), addr); v != nil {
		t.Fatalf("a fault in a's unmapped memory is pinned on port %s", v.Name())
	}
	// Still forwarding.
	b.send(ethFrame(0xc, 0xb, 100), 14)
	waitUsed(31)
}

// internalErrorIn runs, under poller 0's recover frame, e's receiver
// taking its burst (its chains popped) and then a runtime error before it
// returns, as a bug of vhostd's met in e's receive path would be; with
// dst, the error comes instead while the burst is transmitted into dst,
// as one in dst's receive rings would. It reports whether the loop
// recovered.
func internalErrorIn(t *testing.T, s *Switch, e, dst *faultEnd) bool {
	t.Helper()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	p := s.pollers[0]
	return p.guarded(s.log, func(*logrus.Entry) {
		p.t = s.table.Load()
		r := e.port.Receivers()[0]
		p.busy = r
		p.receiving = true
		n := r.Receive(&p.burst)
		if dst != nil {
			p.receiving = false
			r.Counters().RxPackets.Add(uint64(n)) // as forward counts before its transmits
			for i := 0; i < n; i++ {
				p.add(dst.idx, &p.burst.Frames[i])
			}
			p.txDst = dst.idx
		}
		var none []int
		_ = none[n+1] // index out of range
	})
}

// TestInternalErrorDropsOnePort: a runtime error while a VM port's burst
// is forwarded (a bug of vhostd's, which that port's frames led to) drops
// that port's connection, counts its burst as internal_error, and leaves
// the daemon and the other ports running. Errors on a third port within
// a minute, or a panic that is not a runtime error, still end the
// process.
func TestInternalErrorDropsOnePort(t *testing.T) {
	s := newTestSwitch(t)
	a := newFaultEnd(t, s, "a", 0)
	b := newFaultEnd(t, s, "b", 0x100000000)
	c := newFaultEnd(t, s, "c", 0x200000000)
	b.post(4, 2048)
	c.post(4, 2048)
	b.send(ethFrame(0xc, 0xb, 60), 14) // learn b
	c.send(ethFrame(0xb, 0xc, 60), 14) // learn c
	if guardedPump(t, s, b, c) {
		t.Fatal("fault while learning")
	}
	b.received()
	c.received()

	a.send(ethFrame(0xc, 0xa, 100), 14)
	a.send(ethFrame(0xc, 0xa, 200), 14)
	if !internalErrorIn(t, s, a, nil) {
		t.Fatal("the loop did not recover the runtime error")
	}
	select {
	case err := <-a.faults:
		var ie *InternalError
		if !errors.As(err, &ie) || ie.Mem != a.mem || !strings.Contains(err.Error(), "index out of range") {
			t.Fatalf("OnFault(%v): want an InternalError about a's memory naming the runtime error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnFault not called: the port's connection is not dropped")
	}
	if a.port.Running() {
		t.Fatal("the port the error was pinned on still has rings running")
	}
	if st := a.port.Stats(); st.Drops["internal_error"] != 2 || st.RxPackets != 0 || st.InternalErrors != 1 {
		t.Fatalf("a: rx %d, internal_error drops %d, internal errors %d; want 0, the burst's 2 and 1", st.RxPackets, st.Drops["internal_error"], st.InternalErrors)
	}
	// The restarted loop settles without touching a's rings again: its
	// chains are never published.
	if guardedPump(t, s) {
		t.Fatal("fault while settling")
	}
	if used := a.tx.CollectUsed(); len(used) != 0 {
		t.Fatalf("a's rings were written after the error: %d chains used", len(used))
	}
	// The others go on.
	b.send(ethFrame(0xc, 0xb, 70), 14)
	c.send(ethFrame(0xb, 0xc, 80), 14)
	if guardedPump(t, s, b, c) {
		t.Fatal("fault on healthy guests")
	}
	if got := c.received(); len(got) != 1 || len(got[0]) != 12+70 {
		t.Fatalf("c received %d frames after a's error", len(got))
	}
	if got := b.received(); len(got) != 1 || len(got[0]) != 12+80 {
		t.Fatalf("b received %d frames after a's error", len(got))
	}
	a.noMoreFaults(t)

	// Not a runtime error: a panic raised on purpose is not recovered.
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("a panic that is not a runtime error was recovered")
			}
		}()
		p := s.pollers[0]
		p.guarded(s.log, func(*logrus.Entry) {
			p.busy = b.port.Receivers()[0]
			panic("invariant broken")
		})
	}()
	s.pollers[0].busy = nil

	// An error while b's burst is transmitted into c, whose own rings
	// the transmit walks, is pinned on c: b, healthy, keeps its
	// connection and gets its chain back.
	b.tx.CollectUsed()
	b.send(ethFrame(0xc, 0xb, 60), 14)
	if !internalErrorIn(t, s, b, c) {
		t.Fatal("the error in the transmit into c was not recovered")
	}
	select {
	case err := <-c.faults:
		var ie *InternalError
		if !errors.As(err, &ie) || ie.Mem != c.mem {
			t.Fatalf("c's OnFault(%v): want an InternalError about c's memory", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the receiver the error came in was not dropped")
	}
	if guardedPump(t, s) {
		t.Fatal("fault while settling")
	}
	if !b.port.Running() || c.port.Running() {
		t.Fatalf("after an error in c's transmit: b running %v, c running %v; want b only", b.port.Running(), c.port.Running())
	}
	if used := b.tx.CollectUsed(); len(used) != 1 {
		t.Fatalf("b got %d of its 1 transmit chain back", len(used))
	}
	if st := c.port.Stats(); st.InternalErrors != 1 || st.Drops["internal_error"] != 1 {
		t.Fatalf("c: internal errors %d, internal_error drops %d; want 1 and 1", st.InternalErrors, st.Drops["internal_error"])
	}
	b.noMoreFaults(t)

	// A third port's error within the minute is taken for a bug every
	// guest meets and ends the process.
	func() {
		defer func() {
			r := recover()
			if _, ok := r.(runtime.Error); !ok {
				t.Fatalf("a third port's error: recovered %v, want the runtime error again", r)
			}
		}()
		b.send(ethFrame(0xc, 0xb, 60), 14)
		internalErrorIn(t, s, b, nil)
	}()
}
