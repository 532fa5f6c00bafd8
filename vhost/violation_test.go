package vhost_test

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

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
