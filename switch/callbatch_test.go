package vswitch

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhost"
)

// withCalls gives e's rings call eventfds (non-blocking) and returns them:
// the receive ring's, then the transmit ring's.
func withCalls(t *testing.T, e *vmEnd) (rxCall, txCall int) {
	t.Helper()
	fds := [2]int{}
	for i := range fds {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		fds[i] = fd
	}
	r := *e.port.rings.Load()
	rx, tx := *r.RX[0], *r.TX[0]
	rx.Call, tx.Call = fds[0], fds[1]
	r.RX, r.TX = []*vhost.Ring{&rx}, []*vhost.Ring{&tx}
	e.port.Publish(&r)
	return fds[0], fds[1]
}

// calls reads and resets an eventfd's counter: the calls since the last read.
func calls(t *testing.T, fd int) uint64 {
	t.Helper()
	var b [8]byte
	if _, err := unix.Read(fd, b[:]); err == unix.EAGAIN {
		return 0
	} else if err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(b[:])
}

// TestCallsDecidedAtEndOfPass checks that a poller publishes used indexes
// as it goes but asks the drivers whether they want a call once, at the
// end of its pass, for every ring it published: the destination's receive
// ring and the source's transmit ring are each called exactly once per
// pass, none before the pass ends, and a pass that published nothing
// calls nobody.
func TestCallsDecidedAtEndOfPass(t *testing.T) {
	s := newTestSwitch(t)
	a := newVMEnd(t, s, "a", 0x100000000, 12, false)
	b := newVMEnd(t, s, "b", 0x200000000, 12, false)
	_, aTX := withCalls(t, a)
	bRX, _ := withCalls(t, b)
	// Learn both addresses (the first frame floods).
	b.send(ethFrame(1, 2, 60), 20)
	pump(s, b)
	calls(t, aTX)
	calls(t, bRX)

	p := s.pollers[0]
	b.post(8, 2048)
	for i := 0; i < 4; i++ {
		a.send(ethFrame(2, 1, 60), 20)
	}
	tb := s.table.Load()
	for _, r := range a.port.Receivers() {
		if n := p.forward(tb, a.idx, r, s.now()); n != 4 {
			t.Fatalf("forwarded %d frames, want 4", n)
		}
	}
	if got := len(b.received()); got != 4 {
		t.Fatalf("b's used ring shows %d frames before the end of the pass, want 4 (published at once)", got)
	}
	if n := calls(t, bRX); n != 0 {
		t.Fatalf("b's receive ring called %d times before the end of the pass, want 0", n)
	}
	if p.calls.n != 2 {
		t.Fatalf("%d call decisions deferred, want 2 (b's receive ring, a's transmit ring)", p.calls.n)
	}
	p.calls.flush()
	if n := calls(t, bRX); n != 1 {
		t.Errorf("b's receive ring called %d times at the end of the pass, want 1", n)
	}
	if n := calls(t, aTX); n != 1 {
		t.Errorf("a's transmit ring called %d times at the end of the pass, want 1", n)
	}
	// Nothing new: no call.
	pump(s, a, b)
	if n := calls(t, bRX) + calls(t, aTX); n != 0 {
		t.Errorf("%d calls after a pass that published nothing, want 0", n)
	}
}

// TestCallBatchOverflow checks that a batch that fills up decides what it
// holds early instead of losing a call.
func TestCallBatchOverflow(t *testing.T) {
	s := newTestSwitch(t)
	a := newVMEnd(t, s, "a", 0x100000000, 12, false)
	_, aTX := withCalls(t, a)
	ring := a.port.rings.Load().TX[0]
	var c callBatch
	for i := 0; i < maxDeferredCalls; i++ {
		c.add(ring, &a.port.lanes[0].calls, a.port, a.port.rings.Load())
	}
	if n := calls(t, aTX); n != 0 {
		t.Fatalf("%d calls before the batch was full, want 0", n)
	}
	// Something new to call for, then one more entry than fits.
	a.send(ethFrame(2, 1, 60), 20)
	var bu Burst
	l := a.port.lanes[0]
	if l.Receive(&bu) != 1 {
		t.Fatal("no frame received")
	}
	l.cur.TX[0].Publish()
	c.add(ring, &l.calls, a.port, a.port.rings.Load())
	if c.n != 1 {
		t.Fatalf("batch holds %d after overflowing, want 1", c.n)
	}
	if n := calls(t, aTX); n != 1 {
		t.Fatalf("%d calls when the full batch was decided, want 1", n)
	}
	c.flush()
	if n := calls(t, aTX); n != 0 {
		t.Errorf("%d calls for a ring with nothing new, want 0", n)
	}
}
