package hostile

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	vt "github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// kill ends vhostd with SIGKILL, as a crash would, and waits for it.
func (v *vhostd) kill() {
	v.killed = true
	v.cmd.Process.Kill()
	<-v.done
	v.exited = true
}

// resume connects a new frontend to path for the guest whose memory and
// rings f and rings hold, as QEMU does when its backend comes back: the
// same memory and eventfds, each ring resumed at its used index (QEMU
// could not ask the dead backend for GET_VRING_BASE, so it takes the used
// index; hw/virtio/vhost.c, vhost_virtqueue_stop), the inflight region
// handed over again when there is one.
func resume(t *testing.T, path string, f *vt.Frontend, protocol uint64, in *vt.Inflight, ifd int, rings ...*vt.Ring) *vt.Frontend {
	t.Helper()
	n, err := vt.Dial(path, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	n.Memory, n.MemFD, n.GPA, n.UAddr = f.Memory, f.MemFD, f.GPA, f.UAddr
	if _, err := n.Negotiate(stdFeatures, protocol); err != nil {
		t.Fatal(err)
	}
	if err := n.SetMemTable(true); err != nil {
		t.Fatal(err)
	}
	if in != nil {
		if err := n.SetInflightFD(*in, ifd, true); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range rings {
		if err := n.ResumeRing(r, r.Driver.UsedIdx()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestKilledMidTrafficLosesNothing: guest A streams numbered frames to
// guest B through vhostd; vhostd is killed (SIGKILL) in the middle of the
// stream and a new vhostd started; both guests reconnect as QEMU does, A
// handing over the inflight region it got from the first vhostd. Every
// frame must reach B: the chains the dead vhostd had taken and not
// returned are processed again (a frame of the burst cut short may arrive
// twice, never more than a burst of them).
func TestKilledMidTrafficLosesNothing(t *testing.T) {
	const inflightShmfd = 1 << 12
	v1 := startVhostd(t, names("a", "b"))
	fa, err := vt.Dial(v1.Socks["a"], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	if err := fa.MapMemory(guestMem, vt.GuestGPA, vt.GuestUAddr); err != nil {
		t.Fatal(err)
	}
	if _, err := fa.Negotiate(stdFeatures, stdProtocol|inflightShmfd); err != nil {
		t.Fatal(err)
	}
	if err := fa.SetMemTable(true); err != nil {
		t.Fatal(err)
	}
	in, ifd, err := fa.GetInflightFD(2, vt.RingSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := fa.SetInflightFD(in, ifd, true); err != nil {
		t.Fatal(err)
	}
	arx, err := fa.SetupRing(0, vt.RingSize, 0)
	if err != nil {
		t.Fatal(err)
	}
	atx, err := fa.SetupRing(1, vt.RingSize, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fa.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	b, err := vt.DialGuest(v1.Socks["b"], guestMem, stdFeatures, stdProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// More receive buffers than A can have queued at the restart (about
	// 100 in flight plus 100 queued while no vhostd runs), so that B
	// never drops a frame for want of buffers (tx_no_buffers) while the
	// test catches up: a drop that would not be the restart's.
	const rxBufs = 240
	b.PostRX(rxBufs, 2048)

	macA, macB := [6]byte{2, 0, 0, 0, 1, 0x10}, [6]byte{2, 0, 0, 0, 1, 0x11}
	got := map[uint32]int{}
	collect := func() {
		used := b.RX.Driver.CollectUsed()
		for _, u := range used {
			p := b.RX.Driver.Read(b.RX.Driver.DescAddr(u.ID), int(u.Len))
			if len(p) >= 12+18 {
				got[binary.LittleEndian.Uint32(p[12+14:])]++
			}
		}
		for range used {
			b.RX.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
		}
		if len(used) > 0 {
			b.RX.KickNow()
		}
		atx.Driver.CollectUsed()
	}
	const total = 3000
	sent := uint32(0)
	// send queues frames up to number upto, keeping at most limit of
	// them on A's ring (of 256 single-descriptor chains).
	send := func(upto uint32, limit int) {
		for sent < upto {
			collect()
			if int(uint16(sent)-atx.Driver.UsedIdx()) > limit {
				time.Sleep(100 * time.Microsecond)
				continue
			}
			for i := 0; i < 16 && sent < upto; i++ {
				f := vt.Frame(macB, macA, int(sent), 64)
				binary.LittleEndian.PutUint32(f[14:], sent)
				atx.Driver.AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), f...)}})
				sent++
			}
			atx.KickNow()
		}
	}
	send(total/2, 100)
	atKill := sent
	v1.kill() // mid-stream: the last kick has just gone out
	if c := crash(v1.Log()); c != "" {
		t.Fatalf("the first vhostd crashed or raced before the kill:\n%s", c)
	}
	atStop := len(got)
	send(total/2+100, 250) // queued while no vhostd runs

	v2 := startVhostd(t, names("a", "b"))
	// B first: frames for a guest not (yet) connected are dropped, as
	// for any guest that is down.
	fb2 := resume(t, v2.Socks["b"], b.F, stdProtocol, nil, -1, b.RX, b.TX)
	defer fb2.C.Close()
	fa2 := resume(t, v2.Socks["a"], fa, stdProtocol|inflightShmfd, &in, ifd, arx, atx)
	defer fa2.C.Close()
	atx.KickNow()
	b.RX.KickNow()
	send(total, 100)
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < total && time.Now().Before(deadline) {
		collect()
		time.Sleep(time.Millisecond)
	}
	dups := 0
	for i := uint32(0); i < total; i++ {
		switch n := got[i]; {
		case n == 0:
			var missing []uint32
			for j := uint32(0); j < total; j++ {
				if got[j] == 0 {
					missing = append(missing, j)
				}
			}
			t.Fatalf("frame %d of %d lost (%d distinct received, %d before the kill, %d queued when killed); missing %v; stats %+v\n%s", i, total, len(got), atStop, atKill, missing, v2.stats(t), tail(v2.Log(), 2000))
		case n > 1:
			dups += n - 1
		}
	}
	if dups > 32 {
		t.Fatalf("%d duplicate frames, more than one burst", dups)
	}
	resub := strings.Count(v2.Log(), "resubmitting transmit chains")
	t.Logf("%d frames, %d received before the kill, %d duplicates, %d resubmission log lines", total, atStop, dups, resub)
}
