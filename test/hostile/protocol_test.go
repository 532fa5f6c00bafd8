package hostile

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// TestRequestsOnRunningDevice is case 8: requests that pull the ground
// from under running rings. RESET_OWNER on a running device, REM_MEM_REG
// of the region holding the rings, SET_VRING_NUM and SET_VRING_BASE on a
// started ring, each sent with NEED_REPLY. Either choice the spec allows
// passes: vhostd refuses the request (NACK) and the ring keeps working, or
// it accepts it (ACK) and the affected rings are stopped: not "running" in
// `ports`, and a chain posted and kicked afterwards is left alone (over
// removed memory, touching it would be a use-after-unmap). In both, vhostd
// stays up and the connection stays usable.
func TestRequestsOnRunningDevice(t *testing.T) {
	region := vt.Region{GPA: vt.GuestGPA, Size: guestMem, UAddr: vt.GuestUAddr}
	for _, tc := range []struct {
		name    string
		id      string
		req     uint32
		payload []byte
		all     bool // accepted, it stops every ring (else ring 1)
	}{
		{"RESET_OWNER", "8-RESET_OWNER", vt.ResetOwner, nil, true},
		{"REM_MEM_REG of the rings' region", "8-REM_MEM_REG", vt.RemMemReg, vt.MemRegPayload(region), true},
		{"SET_VRING_NUM on a started ring", "8-SET_VRING_NUM", vt.SetVringNum, vt.RingState(1, 128), false},
		{"SET_VRING_BASE on a started ring", "8-SET_VRING_BASE", vt.SetVringBase, vt.RingState(1, 5), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := startVhostd(t, names("a", "b"))
			defer v.finish(t, tc.id, "a", "b")
			a := v.guest(t, "a", guestMem, stdFeatures, stdProtocol|vt.ProtocolConfigMemSlt)
			peer := v.guest(t, "b", guestMem, stdFeatures, stdProtocol)
			peer.PostRX(64, 2048)
			checkPasses(t, v, a, peer, "a", "b", "before "+tc.name)
			if !ringRunning(v.ports(t)["a"], 1) {
				t.Fatalf("ring 1 of a not running before %s: %+v", tc.name, v.ports(t)["a"].Vhost.Rings)
			}

			ack, err := a.F.SendAck(tc.req, tc.payload)
			if err != nil {
				t.Errorf("%s: no REPLY_ACK: %v", tc.name, err)
			}
			if err := v.alive(); err != nil {
				t.Fatalf("after %s: %v", tc.name, err)
			}
			err = a.F.Send(vt.GetFeatures, vt.FlagVersion, nil)
			if err == nil {
				_, err = a.F.AckValue(vt.GetFeatures, 3*time.Second)
			}
			if err != nil {
				t.Errorf("after %s (ack %d): connection no longer usable: %v", tc.name, ack, err)
			}
			ps := v.ports(t)
			switch {
			case ack != 0:
				t.Logf("%s refused (ack %d)", tc.name, ack)
				for _, r := range ps["a"].Vhost.Rings {
					if r.Index == 1 && r.Size != vt.RingSize {
						t.Errorf("%s refused, yet ring 1's size is %d, was %d", tc.name, r.Size, vt.RingSize)
					}
				}
				checkPasses(t, v, a, peer, "a", "b", tc.name+" refused: ring 1")
			default:
				for _, r := range ps["a"].Vhost.Rings {
					if r.Running && (tc.all || r.Index == 1) {
						t.Errorf("%s acked, yet ring %d is still running: %+v", tc.name, r.Index, r)
					}
				}
				// A chain posted and kicked now must be left alone.
				d := a.TX.Driver
				before := d.UsedIdx()
				d.AddChain([]virtqueuetest.Buf{{Data: make([]byte, a.HdrLen)}, {Data: vt.Frame(v.mac("b"), v.mac("a"), 9, 64)}})
				a.TX.KickNow()
				time.Sleep(300 * time.Millisecond)
				if got := d.UsedIdx(); got != before {
					t.Errorf("%s acked, yet vhostd went on using ring 1 (used idx %d -> %d)", tc.name, before, got)
				}
				if got := peer.Received(); len(got) > 0 {
					t.Errorf("%s acked, yet a's frame reached b", tc.name)
				}
			}
		})
	}
}

// ringRunning reports whether `ports` shows ring i of p running.
func ringRunning(p control.PortInfo, i int) bool {
	for _, r := range p.Vhost.Rings {
		if r.Index == i {
			return r.Running
		}
	}
	return false
}

// TestUnsupportedRequests is case 9: a request vhostd does not implement
// (SET_BACKEND_REQ_FD; SET_LOG_BASE was the example until vhostd logged
// dirty pages) and one nobody knows (99), each with NEED_REPLY after
// REPLY_ACK was negotiated. vhostd must answer with a NACK, then close
// the connection, its log naming the request: SET_BACKEND_REQ_FD by name
// (not "request 21"), 99 by number.
func TestUnsupportedRequests(t *testing.T) {
	for _, tc := range []struct {
		name, id string
		req      uint32
		payload  []byte
		memfd    bool
		logHas   *regexp.Regexp
		logNot   string
	}{
		{"SET_BACKEND_REQ_FD", "9-SET_BACKEND_REQ_FD", 21, nil, true, regexp.MustCompile(`SET_BACKEND_REQ_FD`), "request 21"},
		{"request 99", "9-request-99", 99, nil, false, regexp.MustCompile(`\b99\b`), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := startVhostd(t, names("a", "b"))
			defer v.finish(t, tc.id, "a", "b")
			f := v.dial(t, "a")
			if err := f.MapMemory(1<<20, 0, 0x7f0000000000); err != nil {
				t.Fatal(err)
			}
			if _, err := f.Negotiate(stdFeatures, stdProtocol); err != nil {
				t.Fatal(err)
			}
			off := len(v.Log())
			var fds []int
			if tc.memfd {
				fds = append(fds, f.MemFD)
			}
			ack, err := f.SendAck(tc.req, tc.payload, fds...)
			switch {
			case err != nil:
				t.Errorf("%s with NEED_REPLY: no REPLY_ACK, want a NACK: %v", tc.name, err)
			case ack == 0:
				t.Errorf("%s with NEED_REPLY: acked 0 (accepted), want a NACK", tc.name)
			}
			if closed, _ := f.WaitClosed(3 * time.Second); !closed {
				t.Errorf("%s: connection still open 3s after the NACK, want it closed", tc.name)
			}
			log, ok := v.waitLog(off, 2*time.Second, tc.logHas.MatchString)
			if !ok {
				t.Errorf("log does not name %s (want %v):\n%s", tc.name, tc.logHas, tail(log, 2000))
			}
			if tc.logNot != "" && strings.Contains(log, tc.logNot) {
				t.Errorf("log calls %s %q:\n%s", tc.name, tc.logNot, tail(log, 2000))
			}
		})
	}
}
