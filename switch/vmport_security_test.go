package vswitch

import (
	"testing"
)

// macN is the test address 52:54:00:00:00:n (see ethFrame).
func macN(n byte) MAC { return MAC(0x525400000000 | uint64(n)) }

// TestLearnPortLocksPerConnection: a mac=learn port locks to the first
// unicast source address its guest sends, drops frames from any other,
// and forgets the lock when its frontend disconnects.
func TestLearnPortLocksPerConnection(t *testing.T) {
	s := newTestSwitch(t)
	a := newSecuredVMEnd(t, s, "a", 0, 12, false, PortSecurity{Mode: LearnMAC})
	b := newVMEnd(t, s, "b", 0x100000000, 12, false)
	b.post(16, 2048)
	if _, locked := s.security(a.idx); locked != 0 {
		t.Fatalf("locked to %v before any frame", locked)
	}
	bc := ethFrame(0xff, 0xa, 60)
	copy(bc, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	mc := ethFrame(0xb, 0xa, 60)
	mc[6] |= 1 // a multicast source never locks the port
	a.send(mc, 14)
	a.send(bc, 14)                     // locks to ...0a
	a.send(ethFrame(0xb, 0xc, 60), 14) // spoofed
	a.send(ethFrame(0xb, 0xa, 60), 14)
	pump(s, a)
	if _, locked := s.security(a.idx); locked != macN(0xa) {
		t.Fatalf("locked to %v, want %v", locked, macN(0xa))
	}
	if got := len(b.received()); got != 2 {
		t.Fatalf("b received %d frames, want 2", got)
	}
	if st := a.port.Stats(); st.Drops["rx_spoofed"] != 2 {
		t.Fatalf("drops %+v", st.Drops)
	}
	if s.fdb.Lookup(macN(0xc)) != -1 || s.fdb.Lookup(macN(0xa)) != a.idx {
		t.Fatal("FDB learned a spoofed address or lost the locked one")
	}
	// The locked address is pinned: b cannot take it.
	b.send(ethFrame(0xff, 0xa, 60), 14)
	pump(s, b)
	if s.fdb.Lookup(macN(0xa)) != a.idx || b.port.Stats().FDBMovesRefused != 1 {
		t.Fatalf("locked address moved to %d", s.fdb.Lookup(macN(0xa)))
	}

	// A new frontend may use another address.
	a.port.Disconnected()
	if _, locked := s.security(a.idx); locked != 0 || s.fdb.Lookup(macN(0xa)) != -1 {
		t.Fatalf("still locked to %v after the frontend left", locked)
	}
	a.send(ethFrame(0xb, 0xc, 60), 14)
	a.send(ethFrame(0xb, 0xa, 60), 14) // now the spoofed one
	pump(s, a)
	if _, locked := s.security(a.idx); locked != macN(0xc) {
		t.Fatalf("relocked to %v, want %v", locked, macN(0xc))
	}
	if st := a.port.Stats(); st.Drops["rx_spoofed"] != 3 {
		t.Fatalf("drops %+v", st.Drops)
	}
}

// TestLearnPortWontTakePinnedAddress: a learn port's first frame from
// another port's pinned address does not lock it.
func TestLearnPortWontTakePinnedAddress(t *testing.T) {
	s := newTestSwitch(t)
	newSecuredVMEnd(t, s, "p", 0x200000000, 12, false, PortSecurity{Mode: FixedMAC, MAC: macN(0xa)})
	a := newSecuredVMEnd(t, s, "a", 0, 12, false, PortSecurity{Mode: LearnMAC})
	a.send(ethFrame(0xb, 0xa, 60), 14)
	a.send(ethFrame(0xb, 0xd, 60), 14)
	pump(s, a)
	if _, locked := s.security(a.idx); locked != macN(0xd) {
		t.Fatalf("locked to %v, want %v", locked, macN(0xd))
	}
	if st := a.port.Stats(); st.Drops["rx_spoofed"] != 1 {
		t.Fatalf("drops %+v", st.Drops)
	}
}

// TestSecuredForwardAllocatesNothing is TestForwardAllocatesNothing with
// a pinned sender whose bursts mix its own frames with spoofed ones, and a
// learning limit that refuses addresses: the checks allocate nothing.
func TestSecuredForwardAllocatesNothing(t *testing.T) {
	s := newTestSwitch(t)
	a := newSecuredVMEnd(t, s, "a", 0, 12, true, PortSecurity{Mode: FixedMAC, MAC: macN(0xa)})
	b := newSecuredVMEnd(t, s, "b", 0x100000000, 12, true, PortSecurity{MaxMACs: 1})
	b.send(ethFrame(0xa, 0xb, 60), 14)
	a.post(1, 2048)
	pump(s, b)
	b.tx.CollectUsed() // its descriptors free again
	a.received()
	const runs = 1 // the mock's rings hold 128 two-descriptor chains
	for i := 0; i < (runs+1)*BurstSize; i++ {
		src := byte(0xa)
		if i%4 == 3 {
			src = 0xe // spoofed
		}
		a.send(ethFrame(0xb, src, 60), 14)
		b.send(ethFrame(0xa, byte(0x20+i%8), 60), 14) // over b's limit
	}
	b.post((runs+1)*BurstSize, 2048)
	a.post((runs+1)*BurstSize, 2048)
	allocs := testing.AllocsPerRun(runs, func() {
		if n := pump(s, a, b); n != 2*BurstSize {
			t.Fatalf("received %d frames, want two full bursts", n)
		}
	})
	if allocs != 0 {
		t.Fatalf("secured forwarding allocates %.2f times per burst", allocs)
	}
	sa, sb := a.port.Stats(), b.port.Stats()
	if sa.Drops["rx_spoofed"] != uint64(runs+1)*BurstSize/4 || sb.FDBLearnLimited == 0 {
		t.Fatalf("a %+v; b %+v", sa, sb)
	}
}

// TestLearnPortFreedWhenStopped: the source port of a migration, a
// mac=learn port, is stopped by its frontend (which stays connected until
// it quits): it forgets its lock at once, so that the destination port,
// mac=learn too, locks to the guest's address on the guest's first frame
// there (its announcement), and the FDB has the address on the
// destination. While the source still held it, the destination's frames
// from it were refused as spoofed.
func TestLearnPortFreedWhenStopped(t *testing.T) {
	s := newTestSwitch(t)
	src := newSecuredVMEnd(t, s, "src", 0, 12, false, PortSecurity{Mode: LearnMAC})
	dst := newSecuredVMEnd(t, s, "dst", 0x100000000, 12, false, PortSecurity{Mode: LearnMAC})
	src.send(ethFrame(0xff, 0xa, 60), 14)
	pump(s, src)
	if _, locked := s.security(src.idx); locked != macN(0xa) {
		t.Fatalf("src locked to %v, want %v", locked, macN(0xa))
	}
	dst.send(ethFrame(0xff, 0xa, 60), 14)
	pump(s, dst)
	if st := dst.port.Stats(); st.Drops["rx_spoofed"] != 1 || s.fdb.Lookup(macN(0xa)) != src.idx {
		t.Fatalf("dst's frame from src's locked address: drops %+v, FDB port %d", st.Drops, s.fdb.Lookup(macN(0xa)))
	}

	src.port.Stopped()
	if _, locked := s.security(src.idx); locked != 0 {
		t.Fatalf("src still locked to %v once stopped", locked)
	}
	dst.send(ethFrame(0xff, 0xa, 60), 14)
	pump(s, dst)
	if _, locked := s.security(dst.idx); locked != macN(0xa) {
		t.Fatalf("dst locked to %v, want %v", locked, macN(0xa))
	}
	if p := s.fdb.Lookup(macN(0xa)); p != dst.idx {
		t.Fatalf("FDB has %v on port %d, want dst (%d)", macN(0xa), p, dst.idx)
	}
	if st := dst.port.Stats(); st.Drops["rx_spoofed"] != 1 {
		t.Fatalf("dst drops %+v", st.Drops)
	}
	// The source cannot take it back while the destination holds it.
	src.send(ethFrame(0xff, 0xa, 60), 14)
	pump(s, src)
	if p := s.fdb.Lookup(macN(0xa)); p != dst.idx {
		t.Fatalf("the stopped source took %v back: FDB port %d", macN(0xa), p)
	}
}
