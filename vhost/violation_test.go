package vhost_test

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

// hasViolation reports whether st lists a violation of request whose
// text and spec section contain what and spec.
func hasViolation(st vhost.Status, request, what, spec string) bool {
	for _, v := range st.Violations {
		if v.Request == request && strings.Contains(v.What, what) && strings.Contains(v.Spec, spec) {
			return true
		}
	}
	return false
}

// Each violation a driver can make on the control path appears in the
// port's status, with the section it breaks; tolerated ones leave the
// connection up, the others are kept after it is gone.
func TestViolationsReported(t *testing.T) {
	t.Run("tolerated", func(t *testing.T) {
		s, path := serve(t, vhost.Options{}, &recorder{})
		f := dial(t, path)
		// Rings before any SET_FEATURES (DPDK 22.11 virtio_user without
		// VERSION_1 does this).
		if err := f.MapMemory(32<<20, 0x100000, 0x7f0000000000); err != nil {
			t.Fatal(err)
		}
		if err := f.SetMemTable(false); err != nil {
			t.Fatal(err)
		}
		r, err := f.SetupRing(0, 256, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		// Undefined flags in SET_VRING_ADDR.
		addr := f.AddrPayload(r)
		binary.LittleEndian.PutUint32(addr[4:], 0x6)
		if err := f.Send(vt.SetVringAddr, vt.FlagVersion, addr); err != nil {
			t.Fatal(err)
		}
		if _, err := f.GetU64(vt.GetFeatures); err != nil { // a barrier
			t.Fatal(err)
		}
		st := s.Status()
		if !st.Connected {
			t.Fatal("connection dropped for a tolerated violation")
		}
		for _, c := range []struct{ req, what, spec string }{
			{"SET_VRING_KICK", "ring 0 started before any SET_FEATURES", "Ring states"},
			{"SET_VRING_ADDR", "ring 0: undefined flags 0x6", "Vring address description"},
		} {
			if !hasViolation(st, c.req, c.what, c.spec) {
				t.Errorf("no %s violation %q (%s) in %+v", c.req, c.what, c.spec, st.Violations)
			}
		}
	})
	for _, c := range []struct {
		name, req, what, spec string
		send                  func(f *vt.Frontend) error
	}{
		{"feature not offered", "SET_FEATURES", "acked [bit60], which were not offered", "virtio 1.2, 2.2.1",
			func(f *vt.Frontend) error { return f.SetU64(vt.SetFeatures, 1<<32|1<<60, false) }},
		{"protocol feature not offered", "SET_PROTOCOL_FEATURES", "acked protocol features [bit40]", "Protocol features",
			func(f *vt.Frontend) error { return f.SetU64(vt.SetProtocolFeatures, 1<<40, false) }},
		{"reserved bits in SET_VRING_CALL", "SET_VRING_CALL", "reserved bits set in 0x10100", "VHOST_USER_SET_VRING_KICK",
			func(f *vt.Frontend) error { return f.Send(vt.SetVringCall, vt.FlagVersion, vt.U64(0x10100)) }},
		{"malformed", "SET_VRING_NUM", "malformed", "Message specification",
			func(f *vt.Frontend) error { return f.Send(vt.SetVringNum, vt.FlagVersion, []byte{1, 2, 3}) }},
		{"bad ring size", "SET_VRING_NUM", "", "VHOST_USER_SET_VRING_NUM",
			func(f *vt.Frontend) error { return f.Send(vt.SetVringNum, vt.FlagVersion, vt.RingState(0, 3)) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, path := serve(t, vhost.Options{}, &recorder{})
			f := dial(t, path)
			if c.req != "SET_FEATURES" {
				if _, err := f.Negotiate(fVersion1|fProtocol, 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.send(f); err != nil {
				t.Fatal(err)
			}
			f.WaitClosed(5 * time.Second)
			waitDisconnected(t, s)
			// Kept after the connection is gone, for the report.
			if st := s.Status(); !hasViolation(st, c.req, c.what, c.spec) {
				t.Errorf("no %s violation %q (%s) in %+v", c.req, c.what, c.spec, st.Violations)
			}
		})
	}
}

// kickViolation returns the kick-while-disabled violation of ring in st,
// if any.
func kickViolation(st vhost.Status, ring int) *vhost.Violation {
	for i, v := range st.Violations {
		if v.Kind == "kick_while_disabled" && v.Ring != nil && *v.Ring == ring {
			return &st.Violations[i]
		}
	}
	return nil
}

// Kicks on a started ring that is not enabled are counted, live (Status
// sees them before the frontend sends anything else) and kept once the
// ring is enabled; kicks while enabled are not.
func TestKickWhileDisabled(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	f := dial(t, path)
	f.NoEnable = true
	if _, err := f.Negotiate(fVersion1|fProtocol, pReplyAck); err != nil {
		t.Fatal(err)
	}
	if err := f.MapMemory(64<<20, 0x100000, 0x7f0000000000); err != nil {
		t.Fatal(err)
	}
	if err := f.SetMemTable(false); err != nil {
		t.Fatal(err)
	}
	rx, err := f.SetupRing(0, 256, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	tx, err := f.SetupRing(1, 256, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if _, err := f.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	for i := 0; i < 3; i++ {
		tx.KickNow()
	}
	st := s.Status()
	v := kickViolation(st, 1)
	if v == nil || v.Count != 3 || v.Request != "" || !strings.Contains(v.Spec, "5.1.6.5.6.1") || !strings.Contains(v.Spec, "3.1.1") {
		t.Fatalf("live: kick violation %+v in %+v, want 3 kicks on ring 1 citing 3.1.1 and 5.1.6.5.6.1", v, st.Violations)
	}
	if !strings.Contains(v.What, "ring 1 (transmit): kicked") || v.Time.Before(before.Add(-time.Second)) {
		t.Errorf("live: %+v", v)
	}
	first, n := v.Time, v.Count
	if kickViolation(st, 0) != nil {
		t.Errorf("ring 0 was not kicked: %+v", st.Violations)
	}
	if st.ViolationsSeen < int(n) {
		t.Errorf("violations seen %d, fewer than the %d kicks", st.ViolationsSeen, n)
	}
	// Taken into account at the next request, the ring still disabled.
	if _, err := f.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	// Enabled: counted so far kept, new kicks not counted, not even
	// those sent right after SET_VRING_ENABLE, before vhostd may have
	// read it (DPDK's virtio_user enables a queue pair and kicks at once).
	if err := f.EnableRing(1, true); err != nil {
		t.Fatal(err)
	}
	tx.KickNow()
	if _, err := f.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	tx.KickNow()
	tx.KickNow()
	if _, err := f.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	if v := kickViolation(s.Status(), 1); v == nil || v.Count != n || !v.Time.Equal(first) {
		t.Errorf("after enable: %+v, want %d kicks first seen at %v", v, n, first)
	}
	// Disabled again (SET_VRING_ENABLE 0): counted again.
	if err := f.EnableRing(1, false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	tx.KickNow()
	if _, err := f.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	if v := kickViolation(s.Status(), 1); v == nil || v.Count != n+1 {
		t.Errorf("after disable and a kick: %+v, want %d", v, n+1)
	}
	// Kept after the connection is gone.
	f.Close()
	waitDisconnected(t, s)
	if v := kickViolation(s.Status(), 1); v == nil || v.Count != n+1 {
		t.Errorf("after disconnect: %+v, want %d", v, n+1)
	}
}

// A kick fd handed over already signalled (QEMU creates its host notifiers
// signalled once, so that no kick is lost) is no violation, nor is a kick
// fd replaced on a disabled ring; kicks on the new one are.
func TestKickCountAtHandoverNotCounted(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	f := dial(t, path)
	f.NoEnable = true
	if _, err := f.Negotiate(fVersion1|fProtocol, pReplyAck); err != nil {
		t.Fatal(err)
	}
	if err := f.MapMemory(64<<20, 0x100000, 0x7f0000000000); err != nil {
		t.Fatal(err)
	}
	if err := f.SetMemTable(false); err != nil {
		t.Fatal(err)
	}
	tx, err := f.SetupRing(1, 256, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	kick, err := vt.Eventfd(true)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(kick)
	unix.Write(kick, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	if err := f.Send(vt.SetVringKick, vt.FlagVersion, vt.U64(1), kick); err != nil {
		t.Fatal(err)
	}
	if _, err := f.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	tx.KickNow() // the old fd: vhostd no longer holds it
	if v := kickViolation(s.Status(), 1); v != nil {
		t.Fatalf("counted %+v for a kick fd signalled before it was handed over, or for the replaced one", v)
	}
	unix.Write(kick, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	if v := kickViolation(s.Status(), 1); v == nil || v.Count != 1 {
		t.Fatalf("kick on the new fd: %+v, want 1", v)
	}
}
