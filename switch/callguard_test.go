package vswitch

import (
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhost"
)

// TestFullCallEventfdDoesNotFreezePoller gives a guest's receive ring a
// call eventfd that the frontend made blocking and filled to its limit:
// the poller's write of 1 would block for ever. The watchdog must free the
// poller, report the port, and the poller must go on forwarding.
func TestFullCallEventfdDoesNotFreezePoller(t *testing.T) {
	s := newTestSwitch(t)
	a := newVMEnd(t, s, "a", 0x100000000, 12, false)
	b := newVMEnd(t, s, "b", 0x200000000, 12, false)
	c := newVMEnd(t, s, "c", 0x300000000, 12, false)

	call, err := unix.Eventfd(0, unix.EFD_CLOEXEC) // blocking, as a hostile frontend leaves it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(call) })
	var max [8]byte
	binary.LittleEndian.PutUint64(max[:], 0xfffffffffffffffe)
	if _, err := unix.Write(call, max[:]); err != nil {
		t.Fatal(err)
	}
	r := *b.port.rings.Load()
	rx := *r.RX[0]
	rx.Call = call
	r.RX = []*vhost.Ring{&rx}
	b.port.Publish(&r)

	failed := make(chan error, 4)
	b.port.OnFail(func(err error) { failed <- err })
	stop := make(chan struct{})
	s.wg.Add(1)
	go s.watchdog(stop)
	defer close(stop)

	b.post(4, 2048)
	c.post(4, 2048)
	a.send(ethFrame(0xff, 1, 60), 20) // broadcast: to b (blocks in the call) and c
	done := make(chan int)
	go func() { done <- pump(s, a) }()
	select {
	case err := <-failed:
		if !strings.Contains(err.Error(), "call eventfd") {
			t.Errorf("failure reported as %q, want it to name the call eventfd", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watchdog did not report the port whose call eventfd blocked the poller")
	}
	select {
	case n := <-done:
		if n != 1 {
			t.Errorf("burst forwarded %d frames, want 1", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("poller still blocked in the call write after the watchdog fired")
	}
	if got := len(b.received()); got != 1 {
		t.Errorf("b got %d frames, want 1", got)
	}
	if got := len(c.received()); got != 1 {
		t.Errorf("c got %d frames, want 1", got)
	}
	// The poller goes on: a second frame reaches c.
	a.send(ethFrame(0xff, 1, 60), 20)
	go func() { done <- pump(s, a) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("second burst blocked")
	}
	if got := len(c.received()); got != 1 {
		t.Errorf("c got %d more frames, want 1", got)
	}
}

// TestCallGuardIdle checks the watchdog reports nothing for writers that
// are not in a write, however long they stay out of one.
func TestCallGuardIdle(t *testing.T) {
	var g callGuard
	for i := 0; i < 10; i++ {
		if fd := g.check(); fd >= 0 {
			t.Fatalf("idle guard reported fd %d", fd)
		}
	}
	g.call(-1, 0) // a write that fails at once (EBADF) leaves the guard idle
	for i := 0; i < 10; i++ {
		if fd := g.check(); fd >= 0 {
			t.Fatalf("guard reported fd %d after the write returned", fd)
		}
	}
}

// TestLaneKickFDsNotDrained checks that the poller watches a guest's kick
// eventfd edge-triggered and never reads it (see vmLane.NoDrain): a
// frontend that drained it first, after clearing O_NONBLOCK, would
// otherwise block the poller in read(2).
func TestLaneKickFDsNotDrained(t *testing.T) {
	s := newTestSwitch(t)
	a := newVMEnd(t, s, "a", 0x100000000, 12, false)
	kick, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(kick) })
	r := *a.port.rings.Load()
	tx := *r.TX[0]
	tx.Kick = kick
	r.TX = []*vhost.Ring{&tx}
	a.port.Publish(&r)
	p := s.pollers[0]
	if err := p.rebuild(); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(p.fds, kick) {
		t.Fatalf("kick fd %d not in the poller's wait set %v", kick, p.fds)
	}
	if !slices.Contains(p.noDrain, kick) {
		t.Fatalf("kick fd %d would be read by the poller (no-drain fds %v)", kick, p.noDrain)
	}
	// A kick wakes the sleeping poller, and the count stays for the
	// frontend: nothing read it.
	unix.Write(kick, one[:])
	if !p.sleep() {
		t.Fatal("a kick did not wake the poller")
	}
	var b [8]byte
	if n, err := unix.Read(kick, b[:]); n != 8 || err != nil || binary.LittleEndian.Uint64(b[:]) != 1 {
		t.Fatalf("kick eventfd count after the wake: %x (%d bytes, %v), want 1", b, n, err)
	}
}
