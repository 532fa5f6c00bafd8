package vhost_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// TestRingResumesAtUsedIndex: a frontend that sets a ring up again with
// base 0 while the driver has moved on (DPDK's virtio_user in server mode
// does so for a restarted backend) gets the ring resumed at its used
// index: the next chain is read from where the driver put it, not the
// ring broken nor stale heads read.
func TestRingResumesAtUsedIndex(t *testing.T) {
	sw, err := vswitch.New(vswitch.Config{}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Close)
	pa, pb := vswitch.NewVMPort("a", 0, quiet()), vswitch.NewVMPort("b", 0, quiet())
	sw.AddPort(pa)
	sw.AddPort(pb)
	sw.Start()
	sa, pathA := serve(t, vhost.Options{}, pa)
	_, pathB := serve(t, vhost.Options{}, pb)
	feats := uint64(fVersion1 | fProtocol | fMrgRxbuf | fIndirect)
	b := connectGuest(t, pathB, feats)
	b.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
	a := connectGuest(t, pathA, feats)

	// Stop a's transmit ring, and move its indices as 300 chains sent
	// and returned under the backend before would have.
	if _, err := a.f.GetVringBase(1); err != nil {
		t.Fatal(err)
	}
	d := a.tx.Driver
	d.SetAvailIdx(300)
	binary.LittleEndian.PutUint16(d.Mem[virtqueuetest.UsedBase+2:], 300)
	frame := ethFrame(0xb, 0xa, 200)
	d.AddIndirect([]virtqueuetest.Buf{{Data: make([]byte, 12)}, {Data: frame}})

	// Set up again from base 0, as virtio_user does.
	if err := a.f.Send(vt.SetVringBase, vt.FlagVersion, vt.RingState(1, 0)); err != nil {
		t.Fatal(err)
	}
	if err := a.f.Send(vt.SetVringKick, vt.FlagVersion, vt.U64(1), a.tx.Kick); err != nil {
		t.Fatal(err)
	}
	if _, err := a.f.GetU64(vt.GetFeatures); err != nil { // barrier
		t.Fatal(err)
	}
	a.tx.KickNow()
	waitEventfd(t, b.rx.Call)
	used := b.rx.Driver.CollectUsed()
	if len(used) != 1 {
		t.Fatalf("b got %d buffers", len(used))
	}
	if got := b.rx.Driver.Read(b.rx.Driver.DescAddr(used[0].ID), int(used[0].Len)); !bytes.Equal(got[12:], frame) {
		t.Fatalf("b got %x, want the chain at avail index 300", got)
	}
	waitEventfd(t, a.tx.Call)
	if u := d.UsedIdx(); u != 301 {
		t.Errorf("a's transmit used index %d, want 301", u)
	}
	if base, err := a.f.GetVringBase(1); err != nil || base != 301 {
		t.Errorf("GET_VRING_BASE = %d, %v; want 301", base, err)
	}
	for _, r := range sa.Status().Rings {
		if r.Broken != "" {
			t.Errorf("ring %d broken: %s", r.Index, r.Broken)
		}
	}
}
