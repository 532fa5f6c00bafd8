package vhost_test

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

// TestUnimplementedNamedAndNacked: a request vhostd does not implement is
// named in the error, NACKed when the frontend asked for a reply (with or
// without REPLY_ACK negotiated), its fds closed, and the connection
// dropped.
func TestUnimplementedNamedAndNacked(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	cases := []struct {
		name     string
		req      uint32
		payload  []byte
		withFD   bool
		replyAck bool
		want     string
	}{
		{"POSTCOPY_ADVISE acked", 28, nil, false, true, "POSTCOPY_ADVISE (28): not implemented"},
		{"SET_BACKEND_REQ_FD with fd", 21, nil, true, true, "SET_BACKEND_REQ_FD (21): not implemented"},
		{"IOTLB_MSG without REPLY_ACK", 22, make([]byte, 8), false, false, "IOTLB_MSG (22): not implemented"},
		{"CHECK_DEVICE_STATE", 43, nil, false, true, "CHECK_DEVICE_STATE (43): not implemented"},
		{"unknown code", 999, nil, false, true, "request 999 (999): not implemented"},
	}
	before := openFDs(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := dial(t, path)
			var pf uint64
			if c.replyAck {
				pf = pReplyAck
			}
			if _, err := f.Negotiate(fVersion1|fProtocol, pf); err != nil {
				t.Fatal(err)
			}
			var fds []int
			if c.withFD {
				efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
				if err != nil {
					t.Fatal(err)
				}
				defer unix.Close(efd)
				fds = append(fds, efd)
			}
			if err := f.Send(c.req, vt.FlagVersion|vt.FlagNeedReply, c.payload, fds...); err != nil {
				t.Fatal(err)
			}
			if err := f.Ack(c.req); err == nil || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("ack: %v; want a NACK", err)
			}
			if !f.Closed() {
				t.Fatal("connection kept")
			}
			waitDisconnected(t, s)
			if got := s.Status().LastError; !strings.Contains(got, c.want) {
				t.Fatalf("last error %q, want %q", got, c.want)
			}
		})
	}
	waitFDs(t, before)
}

// twoServers is twoPorts with port a's server, whose status tests read.
func twoServers(t *testing.T) (sa *vhost.Server, pathA, pathB string) {
	sw, err := vswitch.New(vswitch.Config{}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Close)
	pa := vswitch.NewVMPort("a", 0, quiet())
	pb := vswitch.NewVMPort("b", 0, quiet())
	sw.AddPort(pa)
	sw.AddPort(pb)
	sw.Start()
	sa, pathA = serve(t, vhost.Options{}, pa)
	_, pathB = serve(t, vhost.Options{}, pb)
	return sa, pathA, pathB
}

func vstate(index, num uint32) []byte {
	return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, index), num)
}

func ringStatus(t *testing.T, s *vhost.Server, index int) vhost.RingStatus {
	t.Helper()
	for _, r := range s.Status().Rings {
		if r.Index == index {
			return r
		}
	}
	t.Fatalf("ring %d not in status %+v", index, s.Status().Rings)
	return vhost.RingStatus{}
}

// TestResetOwnerDisablesRings: RESET_OWNER (deprecated) disables every
// ring but keeps the connection's memory, features and fds, so that
// re-enabling the rings resumes traffic.
func TestResetOwnerDisablesRings(t *testing.T) {
	sa, pathA, pathB := twoServers(t)
	feats := uint64(fVersion1 | fProtocol)
	b := connectGuest(t, pathB, feats)
	a := connectGuest(t, pathA, feats)
	exchange(t, a, b, 64)

	if err := a.f.Send(vt.ResetOwner, vt.FlagVersion|vt.FlagNeedReply, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.f.Ack(vt.ResetOwner); err != nil {
		t.Fatalf("RESET_OWNER: %v", err)
	}
	st := sa.Status()
	if !st.Connected || !st.Negotiated || st.MemRegions != 1 {
		t.Fatalf("RESET_OWNER dropped connection state: %+v", st)
	}
	for _, i := range []int{0, 1} {
		if r := ringStatus(t, sa, i); r.Enabled || r.Running {
			t.Fatalf("ring %d still enabled or running after RESET_OWNER: %+v", i, r)
		}
	}
	for _, i := range []uint32{0, 1} {
		if err := a.f.Send(vt.SetVringEnable, vt.FlagVersion|vt.FlagNeedReply, vstate(i, 1)); err != nil {
			t.Fatal(err)
		}
		if err := a.f.Ack(vt.SetVringEnable); err != nil {
			t.Fatal(err)
		}
	}
	exchange(t, a, b, 100)
}

// TestRemoveRegionHoldingRing: REM_MEM_REG of the region the rings live
// in is carried out (the spec says the back-end must unmap it): the rings
// stop and show as broken, the mapping is gone, the connection stays, and
// once the memory is back and the rings re-addressed, traffic resumes.
func TestRemoveRegionHoldingRing(t *testing.T) {
	sa, pathA, pathB := twoServers(t)
	feats := uint64(fVersion1 | fProtocol)
	b := connectGuest(t, pathB, feats)

	f := dial(t, pathA)
	if err := f.MapMemory(64<<20, 0x40000000, 0x7f1200000000); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Negotiate(feats, pReplyAck|pMemSlots); err != nil {
		t.Fatal(err)
	}
	region := vt.Region{GPA: f.GPA, Size: uint64(len(f.Memory)), UAddr: f.UAddr}
	addRegion := func() {
		t.Helper()
		if err := f.Send(vt.AddMemReg, vt.FlagVersion|vt.FlagNeedReply, vt.MemRegPayload(region), f.MemFD); err != nil {
			t.Fatal(err)
		}
		if err := f.Ack(vt.AddMemReg); err != nil {
			t.Fatal(err)
		}
	}
	addRegion()
	a := setupRings(t, f)
	exchange(t, a, b, 64)

	maps := guestMappings(t)
	if err := f.Send(vt.RemMemReg, vt.FlagVersion|vt.FlagNeedReply, vt.MemRegPayload(region)); err != nil {
		t.Fatal(err)
	}
	if err := f.Ack(vt.RemMemReg); err != nil {
		t.Fatalf("REM_MEM_REG of the rings' region refused: %v", err)
	}
	if got := guestMappings(t); got != maps-1 {
		t.Fatalf("%d guest memory mappings after REM_MEM_REG, want %d: the backend did not unmap", got, maps-1)
	}
	for _, i := range []int{0, 1} {
		r := ringStatus(t, sa, i)
		if r.Running || r.Broken == "" {
			t.Fatalf("ring %d after its memory was removed: %+v; want stopped and broken", i, r)
		}
	}
	if _, err := f.GetU64(vt.GetFeatures); err != nil || !sa.Status().Connected {
		t.Fatalf("connection lost: %v", err)
	}

	addRegion()
	for _, r := range []*vt.Ring{a.rx, a.tx} {
		if err := f.Send(vt.SetVringAddr, vt.FlagVersion|vt.FlagNeedReply, f.AddrPayload(r)); err != nil {
			t.Fatal(err)
		}
		if err := f.Ack(vt.SetVringAddr); err != nil {
			t.Fatal(err)
		}
	}
	exchange(t, a, b, 100)
}

// guestMappings counts the mappings of vhosttest guest memfds in this
// process (frontends' and backends' alike).
func guestMappings(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "memfd:vhosttest-guest")
}

// TestRunningRingSizeAndBaseRefused: SET_VRING_NUM and SET_VRING_BASE on a
// started ring are refused with a NACK and change nothing: the ring keeps
// running at its size and the connection stays. After GET_VRING_BASE has
// stopped the ring they are accepted.
func TestRunningRingSizeAndBaseRefused(t *testing.T) {
	for _, req := range []uint32{vt.SetVringNum, vt.SetVringBase} {
		s, path := serve(t, vhost.Options{}, &recorder{})
		g := connectGuest(t, path, fVersion1|fProtocol)
		// Accepted on the stopped ring 3.
		if err := g.f.Send(req, vt.FlagVersion|vt.FlagNeedReply, vstate(3, 128)); err != nil {
			t.Fatal(err)
		}
		if err := g.f.Ack(req); err != nil {
			t.Fatalf("request %d on a stopped ring: %v", req, err)
		}
		// Accepted on ring 0 once GET_VRING_BASE stopped it.
		if _, err := g.f.GetVringBase(0); err != nil {
			t.Fatal(err)
		}
		if err := g.f.Send(req, vt.FlagVersion|vt.FlagNeedReply, vstate(0, 128)); err != nil {
			t.Fatal(err)
		}
		if err := g.f.Ack(req); err != nil {
			t.Fatalf("request %d after GET_VRING_BASE: %v", req, err)
		}
		// Refused on the running ring 1, which runs on unchanged.
		if err := g.f.Send(req, vt.FlagVersion|vt.FlagNeedReply, vstate(1, 128)); err != nil {
			t.Fatal(err)
		}
		if err := g.f.Ack(req); err == nil {
			t.Fatalf("request %d on a running ring acknowledged", req)
		}
		if _, err := g.f.GetU64(vt.GetFeatures); err != nil {
			t.Fatalf("connection unusable after the refusal: %v", err)
		}
		var ring1 *vhost.RingStatus
		st := s.Status()
		for i := range st.Rings {
			if st.Rings[i].Index == 1 {
				ring1 = &st.Rings[i]
			}
		}
		if ring1 == nil || !ring1.Running || ring1.Size != 256 {
			t.Fatalf("ring 1 after a refused request %d: %+v, want running at size 256", req, ring1)
		}
		if !st.Connected {
			t.Fatal("connection dropped")
		}
	}
}
