package vswitch

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// writerPort is a port that runs fn on each frame it is given: flooded
// frames reach it before the ports added after it, so fn runs between
// forward's checks and the copies into those ports.
type writerPort struct {
	fn func(f *Frame)
}

func (w *writerPort) Name() string          { return "writer" }
func (w *writerPort) Attach(Control)        {}
func (w *writerPort) Stats() Snapshot       { return Snapshot{} }
func (w *writerPort) Receive(*Burst) int    { return 0 }
func (w *writerPort) Done(*Burst)           {}
func (w *writerPort) WaitFDs(d []int) []int { return d }
func (w *writerPort) Arm() bool             { return false }
func (w *writerPort) Counters() *Counters   { return &Counters{} }
func (w *writerPort) Transmit(_ int, fs []*Frame) {
	for _, f := range fs {
		w.fn(f)
	}
}

// TestPortSecurityHoldsAfterCheck: a guest whose port is pinned to its MAC
// rewrites the source address in its transmit buffer after the switch
// checked it and before the copies to the receivers (another vCPU can, at
// any time). The receivers still get the frame from the pinned address:
// the switch passes on the addresses it checked, not what the buffer
// holds by the time it is copied. With the header and the addresses in
// one descriptor and the addresses split over two.
func TestPortSecurityHoldsAfterCheck(t *testing.T) {
	for _, split := range []int{14, 9} {
		s := newTestSwitch(t)
		a := newSecuredVMEnd(t, s, "a", 0, 12, false, PortSecurity{Mode: FixedMAC, MAC: macN(0xa)})
		var head uint16
		rewrite := func(*Frame) {
			// The source address's last byte, frame byte 11, in the
			// guest's buffers: the first holds the header and the
			// frame's first split bytes, the second the rest.
			if split > 11 {
				a.tx.Read(a.tx.DescAddr(head), 12+split)[12+11] = 0xe
				return
			}
			next := binary.LittleEndian.Uint16(a.tx.Read(a.tx.GPA+virtqueuetest.DescBase+16*uint64(head)+14, 2))
			a.tx.Read(a.tx.DescAddr(next), 60-split)[11-split] = 0xe
		}
		if _, err := s.AddPort(&writerPort{fn: rewrite}); err != nil {
			t.Fatal(err)
		}
		b := newVMEnd(t, s, "b", 0x100000000, 12, false)
		b.post(4, 2048)
		f := ethFrame(0xff, 0xa, 60)
		copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		head = a.tx.AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), f[:split]...)}, {Data: f[split:]}})
		pump(s, a)
		got := b.received()
		if len(got) != 1 {
			t.Fatalf("split %d: b got %d frames", split, len(got))
		}
		if !bytes.Equal(got[0][12:], f) {
			t.Fatalf("split %d: b got %x, want %x (source ..%02x)", split, got[0][12:], f, got[0][12+11])
		}
	}
}

// TestPortSecurityHoldsAfterCheckInRun: the same for a run of frames to
// one known address, which the switch passes on without checking each
// frame's addresses again (they compare equal to the first's): every
// frame of the run reaches its receiver from the pinned address.
func TestPortSecurityHoldsAfterCheckInRun(t *testing.T) {
	s := newTestSwitch(t)
	a := newSecuredVMEnd(t, s, "a", 0, 12, false, PortSecurity{Mode: FixedMAC, MAC: macN(0xa)})
	var heads []uint16
	var got [][]byte
	w := &writerPort{fn: func(f *Frame) {
		// The guest rewrites the frame's source after the check, then
		// the receiver copies it.
		a.tx.Read(a.tx.DescAddr(heads[len(got)]), 12+60)[12+11] = 0xe
		b := make([]byte, f.Len)
		Gather(b, f.Segs)
		got = append(got, b)
	}}
	idx, err := s.AddPort(w)
	if err != nil {
		t.Fatal(err)
	}
	s.fdb.Learn(macN(0xee), idx, s.now())
	var want [][]byte
	for i := 0; i < 4; i++ {
		f := ethFrame(0xee, 0xa, 60)
		f[20] = byte(i)
		want = append(want, f)
		heads = append(heads, a.tx.AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), f...)}}))
	}
	pump(s, a)
	if len(got) != len(want) {
		t.Fatalf("the receiver got %d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("frame %d reached the receiver as %x, want %x", i, got[i], want[i])
		}
	}
}
