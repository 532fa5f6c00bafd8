package vhost_test

import (
	"bytes"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// twoPorts runs a switch with ports a and b served on sockets.
func twoPorts(t *testing.T) (pathA, pathB string, pb *vswitch.VMPort) {
	sw, err := vswitch.New(vswitch.Config{}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Close)
	pa := vswitch.NewVMPort("a", 0, quiet())
	pb = vswitch.NewVMPort("b", 0, quiet())
	sw.AddPort(pa)
	sw.AddPort(pb)
	sw.Start()
	_, pathA = serve(t, vhost.Options{}, pa)
	_, pathB = serve(t, vhost.Options{}, pb)
	return pathA, pathB, pb
}

// exchange sends one frame from a to b and checks it arrives intact.
func exchange(t *testing.T, a, b *guest, size int) {
	t.Helper()
	b.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
	frame := ethFrame(0xb, 0xa, size)
	a.tx.Driver.AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), frame...)}})
	a.tx.KickNow()
	waitEventfd(t, b.rx.Call)
	used := b.rx.Driver.CollectUsed()
	b.rx.Driver.ArmCallback()
	if len(used) != 1 {
		t.Fatalf("b got %d buffers", len(used))
	}
	if got := b.rx.Driver.Read(b.rx.Driver.DescAddr(used[0].ID), int(used[0].Len)); !bytes.Equal(got[12:], frame) {
		t.Fatalf("b got %x", got)
	}
}

func TestMemSlots(t *testing.T) {
	pathA, pathB, _ := twoPorts(t)
	feats := uint64(fVersion1 | fProtocol | fEventIdx)
	b := connectGuest(t, pathB, feats)

	f := dial(t, pathA)
	if err := f.MapMemory(64<<20, 0x40000000, 0x7f1200000000); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Negotiate(feats, pReplyAck|pMemSlots); err != nil {
		t.Fatal(err)
	}
	if n, err := f.GetU64(vt.GetMaxMemSlots); err != nil || n < 8 {
		t.Fatalf("GET_MAX_MEM_SLOTS %d, %v", n, err)
	}
	region := vt.Region{GPA: f.GPA, Size: uint64(len(f.Memory)), UAddr: f.UAddr}
	if err := f.Send(vt.AddMemReg, vt.FlagVersion|vt.FlagNeedReply, vt.MemRegPayload(region), f.MemFD); err != nil {
		t.Fatal(err)
	}
	if err := f.Ack(vt.AddMemReg); err != nil {
		t.Fatal(err)
	}
	a := setupRings(t, f)
	exchange(t, a, b, 64)

	// Hot-add a second region while the rings run, then remove it again.
	extra, _ := unix.MemfdCreate("extra", unix.MFD_CLOEXEC)
	defer unix.Close(extra)
	unix.Ftruncate(extra, 1<<20)
	r2 := vt.Region{GPA: 0x100000000, Size: 1 << 20, UAddr: 0x7f5500000000}
	if err := f.Send(vt.AddMemReg, vt.FlagVersion|vt.FlagNeedReply, vt.MemRegPayload(r2), extra); err != nil {
		t.Fatal(err)
	}
	if err := f.Ack(vt.AddMemReg); err != nil {
		t.Fatal(err)
	}
	exchange(t, a, b, 100)
	if err := f.Send(vt.RemMemReg, vt.FlagVersion|vt.FlagNeedReply, vt.MemRegPayload(r2)); err != nil {
		t.Fatal(err)
	}
	if err := f.Ack(vt.RemMemReg); err != nil {
		t.Fatal(err)
	}
	exchange(t, a, b, 200)

	// QEMU before 8.1 with several queue pairs sends each ADD_MEM_REG
	// and REM_MEM_REG once per pair: the same region added twice is
	// mapped once and goes at the second removal.
	for i := range 2 {
		if err := f.Send(vt.AddMemReg, vt.FlagVersion|vt.FlagNeedReply, vt.MemRegPayload(r2), extra); err != nil {
			t.Fatal(err)
		}
		if err := f.Ack(vt.AddMemReg); err != nil {
			t.Fatalf("ADD_MEM_REG %d of the same region: %v", i+1, err)
		}
	}
	exchange(t, a, b, 300)
	for i := range 2 {
		if err := f.Send(vt.RemMemReg, vt.FlagVersion|vt.FlagNeedReply, vt.MemRegPayload(r2)); err != nil {
			t.Fatal(err)
		}
		if err := f.Ack(vt.RemMemReg); err != nil {
			t.Fatalf("REM_MEM_REG %d of a region added twice: %v", i+1, err)
		}
		exchange(t, a, b, 400)
	}

	// Removing a region that is not there (any more) is refused.
	f.Send(vt.RemMemReg, vt.FlagVersion|vt.FlagNeedReply, vt.MemRegPayload(r2))
	if err := f.Ack(vt.RemMemReg); err == nil {
		t.Fatal("a third REM_MEM_REG of a region added twice was acknowledged")
	}
}

// TestPollingKick sets up the transmit ring without a kick fd (the no-fd
// flag): vhostd must poll it, so a frame sent without any kick arrives.
func TestPollingKick(t *testing.T) {
	pathA, pathB, _ := twoPorts(t)
	feats := uint64(fVersion1 | fProtocol)
	b := connectGuest(t, pathB, feats)
	f := dial(t, pathA)
	f.PollingKick = true
	if err := f.MapMemory(64<<20, 0x40000000, 0x7f1200000000); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Negotiate(feats, pReplyAck); err != nil {
		t.Fatal(err)
	}
	if err := f.SetMemTable(true); err != nil {
		t.Fatal(err)
	}
	a := setupRings(t, f)
	time.Sleep(50 * time.Millisecond) // let the poller go idle first
	exchange(t, a, b, 64)
}

// TestUnusedRingSizeZero: a frontend announces a queue it does not use
// with SET_VRING_NUM 0 (DPDK's virtio PMD does so for unused queue pairs).
// That is valid; the ring just never runs, and the others work.
func TestUnusedRingSizeZero(t *testing.T) {
	pathA, pathB, _ := twoPorts(t)
	feats := uint64(fVersion1 | fProtocol)
	b := connectGuest(t, pathB, feats)
	a := connectGuest(t, pathA, feats)
	zero := make([]byte, 8)
	zero[0] = 3 // ring 3, size 0
	if err := a.f.Send(vt.SetVringNum, vt.FlagVersion|vt.FlagNeedReply, zero); err != nil {
		t.Fatal(err)
	}
	if err := a.f.Ack(vt.SetVringNum); err != nil {
		t.Fatalf("size 0 refused: %v", err)
	}
	exchange(t, a, b, 64)
}
