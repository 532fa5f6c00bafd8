package vhost_test

import (
	"bytes"
	"encoding/binary"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

const faultMsg = "guest memory fault at host address 0x"

// waitDropped waits until the server has dropped its frontend and
// returns the reason it recorded.
func waitDropped(t *testing.T, s *vhost.Server) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st := s.Status(); !st.Connected && st.LastError != "" {
			return st.LastError
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection not dropped: %+v", s.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestControlPathFaultDropsConnection truncates a frontend's memory after
// its rings run, then asks the backend to restart a ring, which reads the
// ring's indices on the connection's goroutine: the fault drops that
// connection with a clear error, the backend and its memory are released,
// and a new frontend is served as usual.
func TestControlPathFaultDropsConnection(t *testing.T) {
	rec := &recorder{}
	s, path := serve(t, vhost.Options{}, rec)
	before := openFDs(t)
	g := connectGuest(t, path, fVersion1|fProtocol|fIndirect)
	if rs := rec.rings(); rs == nil || len(rs.TX) != 1 {
		t.Fatal("rings not running before the truncation")
	}
	if err := unix.Ftruncate(g.f.MemFD, 0); err != nil {
		t.Fatal(err)
	}
	// SET_VRING_ENABLE restarts the rings: virtqueue.New reads the used
	// index, now in a truncated page.
	enableRingRefused(t, g)
	if !g.f.Closed() {
		t.Fatal("connection still open after the fault")
	}
	if msg := waitDropped(t, s); !strings.Contains(msg, "SET_VRING_ENABLE: "+faultMsg) || !strings.Contains(msg, "truncated or unmapped its memory") {
		t.Fatalf("dropped with %q", msg)
	}
	if rec.rings() != nil {
		t.Fatal("the backend still has rings after the teardown")
	}
	g.rx.Close()
	g.tx.Close()
	g.f.Close()
	waitFDs(t, before) // the memfd's mapping and the ring fds are released

	servedAgain(t, s, path)
}

// TestDataPathFaultDropsConnection wires a switch port to its server as
// the daemon does (OnFault drops the connection) and truncates guest a's
// memory under the switch: a poller faults on a's transmit ring at the
// next kick, the server drops a's connection with the fault as the reason,
// guest b keeps its connection, and a reconnected a talks to b again.
func TestDataPathFaultDropsConnection(t *testing.T) {
	sw, err := vswitch.New(vswitch.Config{}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Close) // after the servers' cleanups: they run last-in first-out
	pa, pb := vswitch.NewVMPort("a", 0, quiet()), vswitch.NewVMPort("b", 0, quiet())
	sw.AddPort(pa)
	sw.AddPort(pb)
	sa, pathA := serve(t, vhost.Options{}, pa)
	sb, pathB := serve(t, vhost.Options{}, pb)
	pa.OnFault, pb.OnFault = sa.Drop, sb.Drop
	sw.Start()
	feats := uint64(fVersion1 | fProtocol | fIndirect)
	b := connectGuest(t, pathB, feats)
	a := connectGuest(t, pathA, feats)

	// a -> b works.
	exchange := func(a *guest) {
		t.Helper()
		b.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
		frame := ethFrame(0xb, 0xa, 100)
		a.tx.Driver.AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), frame...)}})
		a.tx.KickNow()
		waitEventfd(t, b.rx.Call)
		used := b.rx.Driver.CollectUsed()
		b.rx.Driver.ArmCallback()
		if len(used) != 1 || !bytes.Equal(b.rx.Driver.Read(b.rx.Driver.DescAddr(used[0].ID), int(used[0].Len))[12:], frame) {
			t.Fatalf("b got %+v", used)
		}
	}
	exchange(a)

	if err := unix.Ftruncate(a.f.MemFD, 0); err != nil {
		t.Fatal(err)
	}
	a.tx.KickNow() // the poller wakes and reads a's ring
	if msg := waitDropped(t, sa); !strings.HasPrefix(msg, faultMsg) {
		t.Fatalf("a dropped with %q", msg)
	}
	if !a.f.Closed() {
		t.Fatal("a's connection still open")
	}
	if st := sb.Status(); !st.Connected || !st.Rings[0].Running {
		t.Fatalf("b's connection suffered: %+v", st)
	}
	a.rx.Close()
	a.tx.Close()
	a.f.Close()

	a2 := connectGuest(t, pathA, feats)
	exchange(a2)
}

// buggyBackend is a recorder whose Publish meets a runtime error (an
// index out of range, as a bug would) while trip is set.
type buggyBackend struct {
	recorder
	trip atomic.Bool
}

func (b *buggyBackend) Publish(rs *vhost.Rings) {
	if rs != nil && b.trip.Load() {
		var none []int
		_ = none[len(rs.TX)+1]
	}
	b.recorder.Publish(rs)
}

// TestInternalErrorDropsConnection: a runtime error while a request is
// handled (a bug of vhostd's that this frontend's requests reached, here
// in the backend's Publish) ends that connection with the error as its
// reason, its device is torn down, and the server goes on serving the
// next frontend.
func TestInternalErrorDropsConnection(t *testing.T) {
	b := &buggyBackend{}
	s, path := serve(t, vhost.Options{}, b)
	g := connectGuest(t, path, fVersion1|fProtocol|fIndirect)
	b.trip.Store(true)
	// SET_VRING_ENABLE publishes the rings again.
	enableRingRefused(t, g)
	if msg := waitDropped(t, s); !strings.Contains(msg, "SET_VRING_ENABLE: internal error in vhostd: runtime error: index out of range") {
		t.Fatalf("dropped with %q", msg)
	}
	if st := s.Status(); st.InternalErrors != 1 || st.ViolationsSeen != 0 {
		t.Fatalf("Status: InternalErrors %d, ViolationsSeen %d; want 1, and no violation of the frontend's for a bug of vhostd's", st.InternalErrors, st.ViolationsSeen)
	}
	if b.rings() != nil {
		t.Fatal("the backend still has rings after the teardown")
	}
	g.rx.Close()
	g.tx.Close()
	g.f.Close()
	b.trip.Store(false)
	servedAgain(t, s, path)
}

// enableRingRefused sends SET_VRING_ENABLE (ring 1 on) with a reply asked
// for, which restarts the rings, and checks that it is not acknowledged.
func enableRingRefused(t *testing.T, g *guest) {
	t.Helper()
	p := make([]byte, 8)
	binary.LittleEndian.PutUint32(p, 1)
	binary.LittleEndian.PutUint32(p[4:], 1)
	if err := g.f.Send(vt.SetVringEnable, vt.FlagVersion|vt.FlagNeedReply, p); err != nil {
		t.Fatal(err)
	}
	if err := g.f.Ack(vt.SetVringEnable); err == nil {
		t.Fatal("the backend acknowledged a request it could not carry out")
	}
}

// servedAgain checks that a new frontend on path is served as usual.
func servedAgain(t *testing.T, s *vhost.Server, path string) {
	t.Helper()
	g := connectGuest(t, path, fVersion1|fProtocol|fIndirect)
	if st := s.Status(); !st.Connected || len(st.Rings) != 2 || !st.Rings[1].Running {
		t.Fatalf("a new frontend is not served: %+v", st)
	}
	g.f.Close()
}
