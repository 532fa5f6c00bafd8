package vswitch

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/vhostd/vhostd/switch/offload"
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

// TestGSORequestHoldsAfterCheck: a TSO super-frame validated as TCP/IPv4
// and passed whole to a receiver that takes TSO; the sender rewrites its
// IP protocol, IP length and TCP data offset after the check, before the
// copy. The receiver's copy no longer matches what was validated, so it
// gets the frame without the GSO request (counted as gso_changed), never
// a GSO header over headers that Validate refuses.
func TestGSORequestHoldsAfterCheck(t *testing.T) {
	s := newTestSwitch(t)
	a := newOffloadEnd(t, s, "a", 0, hostOffloads)
	rewrite := true
	if _, err := s.AddPort(&writerPort{fn: func(f *Frame) {
		if s0 := f.Segs[0]; rewrite && len(s0) > 54 { // the sender's buffer
			s0[14+9] = 17
			binary.BigEndian.PutUint16(s0[14+2:], 0xffff)
			s0[34+12] = 0xf0
		}
	}}); err != nil {
		t.Fatal(err)
	}
	c := newOffloadEnd(t, s, "c", 0x100000000, guestOffloads)
	c.post(8, 64<<10)
	for _, changed := range []bool{false, true} {
		rewrite = changed
		super := tcp4Frame(0xff, 0xa, 10*mss, 1)
		copy(super, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		a.sendHdr(tsoHeader(super), super, 200)
		pump(s, a)
		hs, fs := c.frames(t)
		if len(fs) != 1 {
			t.Fatalf("changed %v: c got %d frames", changed, len(fs))
		}
		st := c.port.Stats()
		if !changed {
			if hs[0] != tsoHeader(super) || st.GSOPassed != 1 || st.GSOChanged != 0 {
				t.Fatalf("unchanged: header %+v, gso_passed %d, gso_changed %d", hs[0], st.GSOPassed, st.GSOChanged)
			}
			continue
		}
		if hs[0] != (offload.Header{}) || st.GSOChanged != 1 || st.GSOPassed != 1 {
			t.Fatalf("changed: header %+v, gso_passed %d, gso_changed %d; want a plain header and 1, 1", hs[0], st.GSOPassed, st.GSOChanged)
		}
		if fs[0][14+9] != 17 {
			t.Fatalf("the test's rewrite did not reach the copy: IP protocol %d", fs[0][14+9])
		}
		c.post(1, 64<<10)
	}
}
