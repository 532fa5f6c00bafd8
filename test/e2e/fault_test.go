package e2e

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	vt "github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// fakeGuest is a frontend speaking vhost-user from this process
// (vhosttest), with a receive and a transmit ring in a memfd it can
// truncate behind vhostd's back, as no well-behaved QEMU would.
type fakeGuest struct {
	f      *vt.Frontend
	rx, tx *vt.Ring
}

func connectFake(t *testing.T, sock string) *fakeGuest {
	t.Helper()
	f, err := vt.Dial(sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	g := &fakeGuest{f: f}
	steps := []func() error{
		func() error { return f.MapMemory(64<<20, 0x40000000, 0x7f1200000000) },
		func() (err error) { _, err = f.Negotiate(1<<32|1<<30, 1<<3); return err },
		func() error { return f.SetMemTable(true) },
		func() (err error) { g.rx, err = f.SetupRing(0, 256, 0); return err },
		func() (err error) { g.tx, err = f.SetupRing(1, 256, 16<<20); return err },
		func() (err error) { _, err = f.GetU64(vt.GetFeatures); return err }, // a barrier
	}
	for _, s := range steps {
		if err := s(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { g.rx.Close(); g.tx.Close() })
	return g
}

// send has from transmit a frame to to and checks that it arrives.
func sendFake(t *testing.T, from, to *fakeGuest, seq byte) {
	t.Helper()
	to.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
	frame := make([]byte, 100)
	copy(frame, []byte{2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa, 0x88, 0xb5, seq})
	from.tx.Driver.AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), frame...)}})
	from.tx.KickNow()
	if err := vt.WaitReadable(to.rx.Call, 5*time.Second); err != nil {
		t.Fatalf("frame %d not delivered: %v", seq, err)
	}
	var b [8]byte
	unix.Read(to.rx.Call, b[:])
	used := to.rx.Driver.CollectUsed()
	to.rx.Driver.ArmCallback()
	if len(used) != 1 || !bytes.Equal(to.rx.Driver.Read(to.rx.Driver.DescAddr(used[0].ID), int(used[0].Len))[12:], frame) {
		t.Fatalf("frame %d arrived as %+v", seq, used)
	}
}

// TestGuestTruncatesMemory has a frontend shrink its memfd to nothing
// while vhostd forwards its traffic: vhostd survives (with the race
// detector on), drops that connection with the fault as its last error,
// the other guest keeps its connection, and the frontend, reconnected,
// talks again.
func TestGuestTruncatesMemory(t *testing.T) {
	dir := sockDir(t)
	v := startVhostd(t, dir, "--socket", "a="+filepath.Join(dir, "a.sock"), "--socket", "b="+filepath.Join(dir, "b.sock"))
	b := connectFake(t, filepath.Join(dir, "b.sock"))
	a := connectFake(t, filepath.Join(dir, "a.sock"))
	sendFake(t, a, b, 1)

	if err := unix.Ftruncate(a.f.MemFD, 0); err != nil {
		t.Fatal(err)
	}
	a.tx.KickNow() // a poller wakes and reads a's ring
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := v.ports(t)["a"]
		if !p.Vhost.Connected && strings.Contains(p.Vhost.LastError, "guest memory fault at host address 0x") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a not dropped for its fault: %+v\n%s", p.Vhost, tail(v.Log(), 3000))
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-v.done:
		t.Fatalf("vhostd exited: %v\n%s", err, tail(v.Log(), 3000))
	default:
	}
	if !strings.Contains(v.Log(), "the frontend truncated or unmapped its memory; dropping the connection") {
		t.Fatalf("no log line for the fault:\n%s", tail(v.Log(), 3000))
	}
	if p := v.ports(t)["b"]; !p.Vhost.Connected || p.State != "running" {
		t.Fatalf("b suffered from a's fault: %+v", p)
	}
	a2 := connectFake(t, filepath.Join(dir, "a.sock"))
	sendFake(t, a2, b, 2)
	v.stop()
}
