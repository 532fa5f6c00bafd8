package vswitch

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/vhostd/vhostd/vhost"
)

// checkRARP parses f as an announcement of mac and fails t if it is not a
// valid RARP reverse request (RFC 903) from and for mac.
func checkRARP(t *testing.T, f []byte, mac MAC) {
	t.Helper()
	if len(f) != RARPFrameLen {
		t.Fatalf("RARP of %d bytes, want %d", len(f), RARPFrameLen)
	}
	be := binary.BigEndian
	a := f[14:]
	switch {
	case macOf(f) != 0xffffffffffff:
		t.Fatalf("destination %v, want broadcast", macOf(f))
	case macOf(f[6:]) != mac:
		t.Fatalf("source %v, want %v", macOf(f[6:]), mac)
	case be.Uint16(f[12:]) != EtherTypeRARP:
		t.Fatalf("ethertype %#x", be.Uint16(f[12:]))
	case be.Uint16(a[0:]) != 1 || be.Uint16(a[2:]) != 0x0800 || a[4] != 6 || a[5] != 4:
		t.Fatalf("RARP header %x: want Ethernet/IPv4, lengths 6 and 4", a[:6])
	case be.Uint16(a[6:]) != 3:
		t.Fatalf("opcode %d, want 3 (reverse request)", be.Uint16(a[6:]))
	case macOf(a[8:]) != mac || macOf(a[18:]) != mac:
		t.Fatalf("sender %v target %v, want %v", macOf(a[8:]), macOf(a[18:]), mac)
	case be.Uint32(a[14:]) != 0 || be.Uint32(a[24:]) != 0:
		t.Fatalf("protocol addresses %x", a)
	}
	for _, c := range f[42:] {
		if c != 0 {
			t.Fatalf("padding %x", f[42:])
		}
	}
}

func macBytes(m MAC) (b [6]byte) {
	putMAC(b[:], m)
	return b
}

// TestRARPAnnounce: an announcement enters the switch from the port as if
// its guest had sent it: a valid RARP, flooded to every other port, the
// address learned on the announcing port, counted as received.
func TestRARPAnnounce(t *testing.T) {
	s := newTestSwitch(t)
	a := newVMEnd(t, s, "a", 0, 12, false)
	b := newVMEnd(t, s, "b", 0x100000000, 12, false)
	c := newVMEnd(t, s, "c", 0x200000000, 12, false)
	b.post(4, 2048)
	c.post(4, 2048)
	// The address was elsewhere before (the guest's old place).
	b.send(ethFrame(0xff, 0xa, 60), 14)
	pump(s, b)
	c.received()
	if s.fdb.Lookup(macN(0xa)) != b.idx {
		t.Fatal("address not learned on b first")
	}

	if err := a.port.AnnounceRARP(macBytes(macN(0xa))); err != nil {
		t.Fatal(err)
	}
	if !a.port.lanes[0].Arm() {
		t.Fatal("Arm does not report the queued announcement: the poller could sleep on it")
	}
	if n := pump(s, a); n != 1 {
		t.Fatalf("burst of %d frames, want the announcement", n)
	}
	for _, e := range []*vmEnd{b, c} {
		got := e.received()
		if len(got) != 1 {
			t.Fatalf("%s received %d frames", e.port.Name(), len(got))
		}
		checkRARP(t, got[0][12:], macN(0xa))
	}
	if s.fdb.Lookup(macN(0xa)) != a.idx {
		t.Fatalf("address on port %d after the announcement, want a (%d)", s.fdb.Lookup(macN(0xa)), a.idx)
	}
	if st := a.port.Stats(); st.RxPackets != 1 || st.RxBytes != RARPFrameLen {
		t.Fatalf("a's counters %+v", st)
	}
	// Sent once.
	if n := pump(s, a); n != 0 {
		t.Fatalf("announcement sent again (%d frames)", n)
	}
}

// TestRARPPortSecurity: a FixedMAC port announces only its own address;
// a refusal is counted as rx_spoofed and sends nothing. A learn port
// locks to the announced address.
func TestRARPPortSecurity(t *testing.T) {
	s := newTestSwitch(t)
	a := newSecuredVMEnd(t, s, "a", 0, 12, false, PortSecurity{Mode: FixedMAC, MAC: macN(0xa)})
	l := newSecuredVMEnd(t, s, "l", 0x200000000, 12, false, PortSecurity{Mode: LearnMAC})
	b := newVMEnd(t, s, "b", 0x100000000, 12, false)
	b.post(8, 2048)
	if err := a.port.AnnounceRARP(macBytes(macN(0xb))); !errors.Is(err, vhost.ErrNotPermitted) {
		t.Fatalf("foreign address: %v, want ErrNotPermitted", err)
	}
	if n := pump(s, a); n != 0 || len(b.received()) != 0 {
		t.Fatal("a refused announcement was sent")
	}
	if st := a.port.Stats(); st.Drops["rx_spoofed"] != 1 {
		t.Fatalf("drops %+v", st.Drops)
	}
	if err := a.port.AnnounceRARP(macBytes(macN(0xa))); err != nil {
		t.Fatal(err)
	}
	pump(s, a)
	if got := b.received(); len(got) != 1 {
		t.Fatalf("b received %d frames", len(got))
	}

	// The learn port may not take a's pinned address, but locks to a free one.
	if err := l.port.AnnounceRARP(macBytes(macN(0xa))); !errors.Is(err, vhost.ErrNotPermitted) {
		t.Fatalf("pinned address: %v", err)
	}
	if err := l.port.AnnounceRARP(macBytes(macN(0xc))); err != nil {
		t.Fatal(err)
	}
	pump(s, l)
	if _, locked := s.security(l.idx); locked != macN(0xc) {
		t.Fatalf("learn port locked to %v, want %v", locked, macN(0xc))
	}
	if err := l.port.AnnounceRARP(macBytes(macN(0xd))); !errors.Is(err, vhost.ErrNotPermitted) {
		t.Fatalf("address other than the locked one: %v", err)
	}
}

// withMTU republishes e's rings with an MTU.
func withMTU(e *vmEnd, mtu int) {
	r := *e.port.rings.Load()
	r.MTU = mtu
	e.port.Publish(&r)
}

// TestMTUDrops: frames over MTU+14 (MTU+18 with a VLAN tag) are dropped
// as mtu_exceeded, from the guest and to it; frames within pass.
func TestMTUDrops(t *testing.T) {
	s := newTestSwitch(t)
	a := newVMEnd(t, s, "a", 0, 12, true)
	b := newVMEnd(t, s, "b", 0x100000000, 12, true)
	withMTU(a, 1400)
	b.post(32, 2048)
	tagged := func(size int) []byte {
		f := ethFrame(0xb, 0xa, size)
		binary.BigEndian.PutUint16(f[12:], 0x8100)
		return f
	}
	qinq := tagged(1418)
	binary.BigEndian.PutUint16(qinq[12:], 0x88a8)
	a.send(ethFrame(0xb, 0xa, 1414), 14) // passes
	a.send(ethFrame(0xb, 0xa, 1415), 14) // over
	a.send(tagged(1418), 14)             // passes: tagged
	a.send(qinq, 14)                     // passes: 802.1ad
	a.send(tagged(1419), 14)             // over
	a.send(ethFrame(0xb, 0xa, 1418), 10) // over: untagged, header split
	pump(s, a)
	if got := len(b.received()); got != 3 {
		t.Fatalf("b received %d frames, want 3", got)
	}
	if st := a.port.Stats(); st.Drops["mtu_exceeded"] != 3 || st.RxPackets != 3 {
		t.Fatalf("a: %d received, drops %+v", st.RxPackets, st.Drops)
	}

	// Towards a: frames over a's MTU are dropped on the way in.
	a.post(32, 2048)
	b.send(ethFrame(0xa, 0xb, 1500), 14)
	b.send(ethFrame(0xa, 0xb, 1414), 14)
	pump(s, b)
	if got := a.received(); len(got) != 1 || len(got[0]) != 12+1414 {
		t.Fatalf("a received %d frames", len(got))
	}
	if st := a.port.Stats(); st.Drops["mtu_exceeded"] != 4 || st.Drops["tx_too_big"] != 0 {
		t.Fatalf("a drops %+v", st.Drops)
	}
	// b has no MTU: anything goes.
	b.send(ethFrame(0xa, 0xb, 1800), 14)
	pump(s, b)
	if st := b.port.Stats(); st.Drops["mtu_exceeded"] != 0 || st.RxPackets != 3 {
		t.Fatalf("b: %d received, drops %+v", st.RxPackets, st.Drops)
	}
	// A frame dropped after one that took a buffer: the buffer taken
	// ahead for it goes back to the ring, none stays out.
	b.send(ethFrame(0xa, 0xb, 1414), 14)
	b.send(ethFrame(0xa, 0xb, 1500), 14)
	pump(s, b)
	if got := a.received(); len(got) != 1 {
		t.Fatalf("a received %d frames, want 1", len(got))
	}
	if q := a.port.rings.Load().RX[0].Queue; q.LastAvail() != q.UsedIdx() {
		t.Fatalf("a's receive ring: %d chains taken, %d returned", q.LastAvail(), q.UsedIdx())
	}
}

// TestRARPForgottenAtDisconnect: an announcement the port had no burst to
// send before its frontend went away is not sent for the next one.
func TestRARPForgottenAtDisconnect(t *testing.T) {
	s := newTestSwitch(t)
	l := newSecuredVMEnd(t, s, "l", 0, 12, false, PortSecurity{Mode: LearnMAC})
	if err := l.port.AnnounceRARP(macBytes(macN(0xa))); err != nil {
		t.Fatal(err)
	}
	l.port.Disconnected()
	if n := pump(s, l); n != 0 {
		t.Fatalf("%d frames sent after the disconnect", n)
	}
	if _, locked := s.security(l.idx); locked != 0 {
		t.Fatalf("learn port locked to %v by the old connection's announcement", locked)
	}
}
