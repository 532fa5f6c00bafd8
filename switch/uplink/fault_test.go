//go:build cgo

package uplink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/switch/switchtest"
	"github.com/vhostd/vhostd/vhost"
	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// TestGuestFaultCopyingToUplink has a guest hand the switch a frame whose
// tail lies in memory the guest then truncates: the uplink's transmit
// faults while copying it into an mbuf, with the transmit lock held. The
// poller recovers, the guest's port is the one stopped, and the uplink
// still works: a frame from another port goes out and comes back
// (net_ring loops), which it could not if the lock had stayed held.
func TestGuestFaultCopyingToUplink(t *testing.T) {
	s, err := vswitch.New(vswitch.Config{}, testLog)
	if err != nil {
		t.Fatal(err)
	}
	// Stopping the switch waits for its poller: not if it is stuck, so
	// that the test fails rather than hangs.
	stuck := false
	defer func() {
		if !stuck {
			s.Close()
		}
	}()
	up := openRing(t, Config{})
	vm := switchtest.NewChanPort("vm", 8)
	defer vm.Close()
	for _, p := range []vswitch.Port{up, vm} { // the uplink first: it is flooded first
		if _, err := s.AddPort(p); err != nil {
			t.Fatal(err)
		}
	}

	// Guest a: its transmit ring and buffers in the first 4 MiB of a memfd.
	mf, err := virtqueuetest.NewMemfd(4 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	mem, err := mf.Map(0)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Unmap()
	tx := virtqueuetest.NewOn(mf.Mem, 256, 0)
	q, err := virtqueue.New(mem, tx.Config(), 0)
	if err != nil {
		t.Fatal(err)
	}
	faults := make(chan error, 4)
	a := vswitch.NewVMPort("a", 1, testLog)
	a.OnFault = func(err error) { faults <- err }
	if _, err := s.AddPort(a); err != nil {
		t.Fatal(err)
	}
	a.Publish(&vhost.Rings{Mem: mem, TX: []*vhost.Ring{{Index: 1, Queue: q, Kick: -1, Call: -1}}, HdrLen: 12})
	defer func() {
		if !stuck {
			a.Publish(nil) // before the memory is unmapped
		}
	}()

	// A broadcast frame, its tail moved to 3 MiB, then the memfd cut at
	// 2 MiB (the ring and the frame's head lie below).
	f := ethFrame(1000, 3)
	head := tx.AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), f[:100]...)}, {Data: f[100:]}})
	second := binary.LittleEndian.Uint16(tx.Read(virtqueuetest.DescBase+16*uint64(head)+14, 2))
	copy(tx.Read(3<<20, 900), f[100:])
	tx.WriteDesc(virtqueuetest.DescBase, second, 3<<20, 900, 0, 0)
	if err := mf.Truncate(2 << 20); err != nil {
		t.Fatal(err)
	}
	s.Start()

	select {
	case err := <-faults:
		var gf *guestmem.Fault
		if !errors.As(err, &gf) || gf.Mem != mem {
			t.Fatalf("OnFault(%v): not a fault of a's memory", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the guest's fault was not reported")
	}
	g := ethFrame(200, 9)
	vm.Inject(g)
	select {
	case got := <-vm.Out:
		if !bytes.Equal(got, g) {
			t.Fatalf("got %x", got)
		}
	case <-time.After(5 * time.Second):
		stuck = true
		t.Fatal("no frame through the uplink after the fault: its transmit lock is stuck")
	}
	if st := up.Stats(); st.TxPackets != 1 {
		t.Fatalf("uplink sent %d frames, want 1 (the guest's was cut short)", st.TxPackets)
	}
}
