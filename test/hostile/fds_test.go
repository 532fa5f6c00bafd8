package hostile

import (
	"encoding/binary"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

// TestWrongFDKind is case 1a: a pipe where an eventfd belongs. vhostd
// must refuse SET_VRING_CALL (and SET_VRING_KICK) with a pipe end, NACK it
// when REPLY_ACK was negotiated, close the connection, and log the request
// by name with the reason "not an eventfd".
func TestWrongFDKind(t *testing.T) {
	for _, tc := range []struct {
		name    string
		req     uint32
		reqName string
		end     int // which end of the pipe: 0 read, 1 write
	}{
		{"call", vt.SetVringCall, "SET_VRING_CALL", 1},
		{"kick", vt.SetVringKick, "SET_VRING_KICK", 0},
	} {
		t.Run("pipe as "+tc.name, func(t *testing.T) {
			v := startVhostd(t, names("a", "b"))
			defer v.finish(t, "1a-"+tc.name, "a", "b")
			f := v.dial(t, "a")
			if err := f.MapMemory(guestMem, vt.GuestGPA, vt.GuestUAddr); err != nil {
				t.Fatal(err)
			}
			if _, err := f.Negotiate(stdFeatures, stdProtocol); err != nil {
				t.Fatal(err)
			}
			if err := f.SetMemTable(true); err != nil {
				t.Fatal(err)
			}
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
				t.Fatal(err)
			}
			v.track(func() { unix.Close(p[0]); unix.Close(p[1]) })
			off := len(v.Log())
			ack, err := f.SendAck(tc.req, vt.U64(0), p[tc.end])
			switch {
			case err != nil:
				t.Errorf("%s with a pipe fd: no REPLY_ACK (want a NACK): %v", tc.reqName, err)
			case ack == 0:
				t.Errorf("%s with a pipe fd: acked with 0 (accepted), want a NACK", tc.reqName)
			}
			if closed, _ := f.WaitClosed(3 * time.Second); !closed {
				t.Errorf("%s with a pipe fd: connection still open after 3s, want it closed", tc.reqName)
			}
			if log, ok := v.waitLog(off, 2*time.Second, func(s string) bool {
				return strings.Contains(s, tc.reqName) && strings.Contains(s, "not an eventfd")
			}); !ok {
				t.Errorf("log does not name %s and say \"not an eventfd\":\n%s", tc.reqName, tail(log, 2000))
			}
		})
	}
}

// TestFullCallEventfd is case 1b: a frontend whose call eventfd is full
// (counter 0xfffffffffffffffe) and blocking, so one more write would
// block. vhostd delivers frames to that port (receive buffers posted, no
// EVENT_IDX, no NO_INTERRUPT: every delivery wants a call); its pollers
// must not block: a third pair of ports keeps passing traffic and the
// control socket answers `ports` within 2 s.
//
// "blocking eventfd" hands vhostd an eventfd created without
// EFD_NONBLOCK; "O_NONBLOCK cleared after handover" hands it a
// non-blocking one and clears O_NONBLOCK on the frontend's copy (the same
// open file description) once vhostd holds it, so setting O_NONBLOCK on
// receipt is not enough.
func TestFullCallEventfd(t *testing.T) {
	for _, tc := range []struct {
		name      string
		replaceFD bool
	}{
		{"blocking eventfd", true},
		{"O_NONBLOCK cleared after handover", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := startVhostd(t, names("a", "b", "c", "d"))
			defer v.finish(t, "1b-"+strings.Fields(tc.name)[0], "a", "b")
			victim := v.guest(t, "a", guestMem, stdFeatures, stdProtocol)
			flooder := v.guest(t, "b", guestMem, stdFeatures, stdProtocol)
			var full [8]byte
			binary.LittleEndian.PutUint64(full[:], 0xfffffffffffffffe)
			call := victim.RX.Call
			if tc.replaceFD {
				fd, err := vt.Eventfd(false)
				if err != nil {
					t.Fatal(err)
				}
				v.track(func() { unix.Close(fd) })
				if _, err := unix.Write(fd, full[:]); err != nil {
					t.Fatalf("fill the call eventfd: %v", err)
				}
				if ack, err := victim.F.SendAck(vt.SetVringCall, vt.U64(0), fd); err != nil || ack != 0 {
					t.Fatalf("SET_VRING_CALL with a blocking eventfd: ack %d, %v; a real eventfd must be accepted", ack, err)
				}
				call = fd
			} else {
				var b [8]byte
				unix.Read(call, b[:]) // non-blocking still: empty it
				if _, err := unix.Write(call, full[:]); err != nil {
					t.Fatalf("fill the call eventfd: %v", err)
				}
				fl, err := unix.FcntlInt(uintptr(call), unix.F_GETFL, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := unix.FcntlInt(uintptr(call), unix.F_SETFL, fl&^unix.O_NONBLOCK); err != nil {
					t.Fatal(err)
				}
			}
			// Whatever happens, empty the eventfd before finish so that a
			// blocked vhostd can go on and the shared checks say what
			// they can.
			var drain sync.Once
			drainCall := func() {
				drain.Do(func() {
					var b [8]byte
					unix.Read(call, b[:]) // counter > 0: does not block
				})
			}
			defer drainCall()

			victim.PostRX(vt.RingSize, 2048)
			for burst := 0; burst < 3; burst++ {
				var frames [][]byte
				for i := 0; i < 32; i++ {
					frames = append(frames, vt.Frame(broadcast, v.mac("b"), burst*32+i, 64))
				}
				flooder.Send(frames...)
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("victim's receive ring: used idx %d after the flood", victim.RX.Driver.UsedIdx())

			start := time.Now()
			if _, err := v.portsErr(2 * time.Second); err != nil {
				t.Errorf("control socket does not answer ports within 2s while a call eventfd is full: %v (after %v)", err, time.Since(start).Round(time.Millisecond))
			}
			if d, err := freshTraffic(t, v, "c", "d"); err != nil {
				t.Errorf("third pair of ports while a call eventfd is full: %v", err)
			} else {
				t.Logf("third pair passed traffic in %v while a's call eventfd was full", d.Round(time.Millisecond))
			}
			start = time.Now()
			if _, err := v.portsErr(2 * time.Second); err != nil {
				t.Errorf("control socket does not answer ports within 2s while a call eventfd is full: %v (after %v)", err, time.Since(start).Round(time.Millisecond))
			}
		})
	}
}
