package vhost_test

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// A fake frontend negotiating VIRTIO_F_RING_PACKED: rings laid out by the
// packed driver mock, through vhost's device and the real switch.

const packedFeatures = fVersion1 | fProtocol | fEventIdx | fIndirect | fRingPacked

// packedGuest is a frontend with packed receive ring 0 and transmit ring 1.
type packedGuest struct {
	f      *vt.Frontend
	rx, tx *vt.PackedRing
}

// connectPackedGuest negotiates features (which must hold RING_PACKED)
// and sets up both rings of size descriptors from the fresh base.
func connectPackedGuest(t *testing.T, path string, features uint64, size uint16) *packedGuest {
	t.Helper()
	f := dial(t, path)
	if err := f.MapMemory(64<<20, 0x40000000, 0x7f1200000000); err != nil {
		t.Fatal(err)
	}
	got, err := f.Negotiate(features, pReplyAck)
	if err != nil {
		t.Fatal(err)
	}
	if got&fRingPacked == 0 {
		t.Fatalf("RING_PACKED not negotiated: %#x", got)
	}
	if err := f.SetMemTable(true); err != nil {
		t.Fatal(err)
	}
	g := &packedGuest{f: f}
	if g.rx, err = f.SetupPackedRing(0, size, 0, virtqueue.PackedFreshBase); err != nil {
		t.Fatal(err)
	}
	if g.tx, err = f.SetupPackedRing(1, size, 16<<20, virtqueue.PackedFreshBase); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.rx.Close(); g.tx.Close() })
	if _, err := f.GetU64(vt.GetFeatures); err != nil { // a barrier
		t.Fatal(err)
	}
	return g
}

// send queues frames on the transmit ring (header and frame in separate
// descriptors) and kicks.
func (g *packedGuest) send(hdr int, frames ...[]byte) {
	for _, fr := range frames {
		g.tx.Driver.AddChain([]virtqueuetest.Buf{{Data: make([]byte, hdr)}, {Data: fr}})
	}
	g.tx.KickNow()
}

// receive waits until n buffers have come back on the receive ring and
// returns their frames (header stripped), reposting a buffer for each.
func (g *packedGuest) receive(t *testing.T, hdr, n int) [][]byte {
	t.Helper()
	var out [][]byte
	deadline := time.Now().Add(5 * time.Second)
	for len(out) < n {
		used := g.rx.Driver.CollectUsed()
		for _, u := range used {
			p := g.rx.Driver.Read(g.rx.Driver.BufAddr(u.ID), int(u.Len))
			out = append(out, append([]byte(nil), p[hdr:]...))
		}
		// Reposted only now: a new chain may take a freed id, and
		// with it the buffer address BufAddr reads.
		for range used {
			g.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
		}
		if len(used) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("received %d of %d frames", len(out), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return out
}

// TestPackedForward sends frames from a packed guest to another through
// vhost and the switch, with and without MRG_RXBUF, on a ring whose size
// is not a power of two (allowed for packed rings only) and so many
// frames that both wrap counters flip several times: each frame arrives
// once and intact, and every transmit chain comes back.
func TestPackedForward(t *testing.T) {
	for _, mrg := range []bool{false, true} {
		_, pathA, pathB := twoServers(t)
		feats := uint64(packedFeatures)
		if mrg {
			feats |= fMrgRxbuf
		}
		a := connectPackedGuest(t, pathA, feats, 40)
		b := connectPackedGuest(t, pathB, feats, 40)
		for i := 0; i < 30; i++ {
			b.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
		}
		b.rx.KickNow()
		sent := 0
		for round := 0; round < 20; round++ {
			var frames [][]byte
			for i := 0; i < 1+round%7; i++ {
				fr := ethFrame(0xb, 0xa, 60+13*sent%1400)
				binary.LittleEndian.PutUint32(fr[14:], uint32(sent))
				frames = append(frames, fr)
				sent++
			}
			a.send(12, frames...)
			got := b.receive(t, 12, len(frames))
			for i, g := range got {
				if string(g) != string(frames[i]) {
					t.Fatalf("mrg=%v round %d: frame %d differs", mrg, round, i)
				}
			}
			deadline := time.Now().Add(5 * time.Second)
			for a.tx.Driver.Outstanding() > 0 {
				a.tx.Driver.CollectUsed()
				if time.Now().After(deadline) {
					t.Fatalf("mrg=%v: %d transmit chains not returned", mrg, a.tx.Driver.Outstanding())
				}
				time.Sleep(time.Millisecond)
			}
		}
		// The driver left its event suppression at ENABLE: vhostd
		// called it (event suppression, virtio 1.2, 2.8.10).
		var cnt [8]byte
		if n, err := unix.Read(b.rx.Call, cnt[:]); n != 8 || err != nil {
			t.Fatalf("mrg=%v: no call on b's receive ring: %v", mrg, err)
		}
		// 2 transmit slots a frame on a ring of 40: it went round
		// several times.
		if sent*2 < 3*40 {
			t.Fatalf("only %d frames: the ring did not wrap often enough to test", sent)
		}
	}
}

// TestPackedVringBase checks that GET_VRING_BASE reports a packed ring's
// positions and wrap counters in QEMU's layout (virtqueue.PackedBase:
// bits 0-14 next avail, 15 avail wrap, 16-30 next used, 31 used wrap),
// that they match the driver's view after the wrap counters have flipped,
// and that SET_VRING_BASE with that value resumes the ring exactly.
func TestPackedVringBase(t *testing.T) {
	_, pathA, pathB := twoServers(t)
	a := connectPackedGuest(t, pathA, packedFeatures, 24)
	b := connectPackedGuest(t, pathB, packedFeatures, 24)
	for i := 0; i < 20; i++ {
		b.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
	}
	sent := 0
	for cycle := 0; cycle < 9; cycle++ {
		n := 5 + cycle%4
		var frames [][]byte
		for i := 0; i < n; i++ {
			frames = append(frames, ethFrame(0xb, 0xa, 100))
			sent++
		}
		a.send(12, frames...)
		if got := b.receive(t, 12, n); len(got) != n {
			t.Fatalf("cycle %d: got %d", cycle, len(got))
		}
		for a.tx.Driver.Outstanding() > 0 {
			a.tx.Driver.CollectUsed()
			time.Sleep(time.Millisecond)
		}
		// Stop both rings of each guest and check their bases.
		for _, r := range []struct {
			g    *packedGuest
			ring *vt.PackedRing
		}{{a, a.tx}, {b, b.rx}} {
			base, err := r.g.f.GetVringBase(r.ring.Index)
			if err != nil {
				t.Fatal(err)
			}
			pos, wrap := r.ring.Driver.UsedPos()
			if want := virtqueue.PackedBase(pos, wrap, pos, wrap); base != want {
				t.Fatalf("cycle %d ring %d: base %#x, want %#x (driver's next used slot %d wrap %v)", cycle, r.ring.Index, base, want, pos, wrap)
			}
			if err := r.g.f.ResumePackedRing(r.ring, base); err != nil {
				t.Fatal(err)
			}
		}
		for _, g := range []*packedGuest{a, b} {
			if _, err := g.f.GetU64(vt.GetFeatures); err != nil {
				t.Fatal(err)
			}
		}
	}
	// 2 transmit slots a frame on a ring of 24: both wrap counters have
	// flipped several times.
	if sent*2 < 3*24 {
		t.Fatalf("only %d frames: the wrap counters did not flip often enough to test", sent)
	}
}

// TestPackedBaseResumesAtUsed: a base whose used position (high half)
// lies behind its available position, as QEMU sends for a backend that
// went away holding chains, resumes at the used position: the chains in
// between are read again, not lost.
func TestPackedBaseResumesAtUsed(t *testing.T) {
	_, pathA, pathB := twoServers(t)
	a := connectPackedGuest(t, pathA, packedFeatures, 32)
	b := connectPackedGuest(t, pathB, packedFeatures, 32)
	b.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
	b.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
	if _, err := a.f.GetVringBase(1); err != nil { // stop a's transmit ring
		t.Fatal(err)
	}
	// Two frames the "old backend" took (available position 4) but never
	// returned (used position 0).
	a.tx.Driver.AddChain([]virtqueuetest.Buf{{Data: make([]byte, 12)}, {Data: ethFrame(0xb, 0xa, 80)}})
	a.tx.Driver.AddChain([]virtqueuetest.Buf{{Data: make([]byte, 12)}, {Data: ethFrame(0xb, 0xa, 90)}})
	if err := a.f.ResumePackedRing(a.tx, virtqueue.PackedBase(4, true, 0, true)); err != nil {
		t.Fatal(err)
	}
	a.tx.KickNow()
	got := b.receive(t, 12, 2)
	if len(got[0]) != 80 || len(got[1]) != 90 {
		t.Fatalf("got frames of %d and %d bytes, want 80 and 90", len(got[0]), len(got[1]))
	}
}

// TestPackedBadAddresses: packed ring parts outside the memory table or
// misaligned are refused when the ring starts, as split ones are: the
// connection is dropped with an error naming the part (vhostctl shows
// it), and the server goes on serving.
func TestPackedBadAddresses(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	cases := []struct {
		name   string
		field  int // offset in the SET_VRING_ADDR payload
		addr   uint64
		reason string
	}{
		{"descriptor ring outside memory", 8, 0x7f1200000000 + 64<<20 - 512, "packed descriptor ring"},
		{"device area outside memory", 16, 0x7f1100000000, "device event suppression area"},
		{"driver area outside memory", 24, 0x7f1200000000 + 64<<20, "driver event suppression area"},
		{"driver area not 4-byte aligned", 24, 0x7f1200000000 + 16<<20 + virtqueuetest.PackedDriverBase + 2, "not 4-byte aligned"},
	}
	for _, c := range cases {
		f := dial(t, path)
		if err := f.MapMemory(64<<20, 0x40000000, 0x7f1200000000); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Negotiate(packedFeatures, pReplyAck); err != nil {
			t.Fatal(err)
		}
		if err := f.SetMemTable(true); err != nil {
			t.Fatal(err)
		}
		good, err := f.SetupPackedRing(0, 64, 0, virtqueue.PackedFreshBase)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.GetU64(vt.GetFeatures); err != nil { // a barrier
			t.Fatal(err)
		}
		if !ringStatus(t, s, 0).Running {
			t.Fatalf("%s: the good ring does not run", c.name)
		}
		bad := &vt.PackedRing{Index: 1, Driver: virtqueuetest.NewPackedOn(f.Memory[16<<20:32<<20], 64, f.GPA+16<<20)}
		p := f.PackedAddrPayload(bad)
		binary.LittleEndian.PutUint64(p[c.field:], c.addr)
		f.Send(vt.SetVringNum, vt.FlagVersion, vt.RingState(1, 64))
		f.Send(vt.SetVringBase, vt.FlagVersion, vt.RingState(1, virtqueue.PackedFreshBase))
		f.Send(vt.SetVringAddr, vt.FlagVersion, p)
		f.Send(vt.SetVringEnable, vt.FlagVersion, vt.RingState(1, 1))
		f.Send(vt.SetVringKick, vt.FlagVersion, vt.U64(1|0x100))
		if !f.Closed() {
			t.Fatalf("%s: connection kept", c.name)
		}
		if st := s.Status(); !strings.Contains(st.LastError, c.reason) {
			t.Fatalf("%s: last error %q, want it to name %q", c.name, st.LastError, c.reason)
		}
		good.Close()
	}
}

// TestPackedSizeRules: a packed ring may have any size up to 2^15; a
// split ring only a power of two.
func TestPackedSizeRules(t *testing.T) {
	for _, c := range []struct {
		features uint64
		num      uint32
		ok       bool
	}{
		{packedFeatures, 40, true},
		{packedFeatures, 32768, true},
		{packedFeatures, 32769, false},
		{fVersion1 | fProtocol, 40, false},
	} {
		_, path := serve(t, vhost.Options{}, &recorder{})
		f := dial(t, path)
		if _, err := f.Negotiate(c.features, pReplyAck); err != nil {
			t.Fatal(err)
		}
		ack, err := f.SendAck(vt.SetVringNum, vt.RingState(0, c.num))
		if err != nil {
			if c.ok {
				t.Fatalf("features %#x size %d: %v", c.features, c.num, err)
			}
			continue
		}
		if (ack == 0) != c.ok {
			t.Fatalf("features %#x size %d: ack %d", c.features, c.num, ack)
		}
	}
}

// TestPackedInflightRefused: inflight tracking is not supported for
// packed rings. GET_INFLIGHT_FD is answered with no region (mmap_size 0,
// no fd: QEMU then runs without one), SET_INFLIGHT_FD is NACKed, and the
// connection stays.
func TestPackedInflightRefused(t *testing.T) {
	_, path := serve(t, vhost.Options{}, &recorder{})
	f := dial(t, path)
	if err := f.MapMemory(64<<20, 0x40000000, 0x7f1200000000); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Negotiate(packedFeatures, pReplyAck|pInflight); err != nil {
		t.Fatal(err)
	}
	if err := f.Send(vt.GetInflightFD, vt.FlagVersion, make([]byte, 24)); err != nil {
		t.Fatal(err)
	}
	p, err := f.Reply(vt.GetInflightFD)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 24 || binary.LittleEndian.Uint64(p) != 0 {
		t.Fatalf("GET_INFLIGHT_FD reply %x, want mmap_size 0", p)
	}
	fd, err := vt.Eventfd(true) // any fd: refused before it is looked at
	if err != nil {
		t.Fatal(err)
	}
	if err := f.SetInflightFD(vt.Inflight{MmapSize: 4096, NumQueues: 2, QueueSize: 256}, fd, true); err == nil {
		t.Fatal("SET_INFLIGHT_FD accepted for packed rings")
	}
	if _, err := f.GetU64(vt.GetFeatures); err != nil {
		t.Fatalf("connection dropped: %v", err)
	}
}

// TestPackedDirtyLog: with LOG_ALL and a log (SET_LOG_BASE), a packed
// ring marks what vhostd writes: the receive buffers, and the descriptor
// ring where its used descriptors go; nothing else.
func TestPackedDirtyLog(t *testing.T) {
	sb, pathB, pathA := twoServers(t)
	a := connectPackedGuest(t, pathA, packedFeatures, 64)
	b := dial(t, pathB)
	defer func() {
		if t.Failed() {
			t.Logf("status b %+v", sb.Status())
		}
	}()
	if err := b.MapMemory(64<<20, 0x40000000, 0x7f1200000000); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Negotiate(packedFeatures, pReplyAck|pLogShmfd1); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMemTable(true); err != nil {
		t.Fatal(err)
	}
	logSize := int((b.GPA + uint64(len(b.Memory))) / 4096 / 8)
	l := newLog(t, logSize)
	if err := b.SetLogBase(l.FD, uint64(logSize), 0); err != nil {
		t.Fatal(err)
	}
	if err := b.SetU64(vt.SetFeatures, packedFeatures|1<<vhost.FeatureLogAll, true); err != nil {
		t.Fatal(err)
	}
	rx, err := b.SetupPackedRing(0, 64, 0, virtqueue.PackedFreshBase)
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	tx, err := b.SetupPackedRing(1, 64, 16<<20, virtqueue.PackedFreshBase)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	gb := &packedGuest{f: b, rx: rx, tx: tx}
	if _, err := b.GetU64(vt.GetFeatures); err != nil { // a barrier: b's rings run
		t.Fatal(err)
	}
	id := rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
	buf := rx.Driver.BufAddr(id)
	if l.Dirty(buf) || l.Dirty(rx.Driver.Config().Desc) {
		t.Fatal("pages marked before vhostd wrote anything")
	}
	a.send(12, ethFrame(0xb, 0xa, 300))
	gb.receive(t, 12, 1)
	if !l.Dirty(buf) {
		t.Fatalf("b's receive buffer at %#x not marked", buf)
	}
	if !l.Dirty(rx.Driver.Config().Desc) {
		t.Fatal("b's packed descriptor ring (used descriptors) not marked")
	}
	if l.Dirty(0x40000000 + 48<<20) {
		t.Fatal("a page vhostd never wrote is marked")
	}
}

// TestPackedBrokenRingReported: a packed transmit ring the driver breaks
// (a buffer id beyond the queue) stops alone, shows as broken in the
// status at once, and is reported as a queue_broken violation quoting
// the specification; the connection stays.
func TestPackedBrokenRingReported(t *testing.T) {
	sa, pathA, pathB := twoServers(t)
	a := connectPackedGuest(t, pathA, packedFeatures, 64)
	connectPackedGuest(t, pathB, packedFeatures, 64)
	pos, wrap := a.tx.Driver.AvailPos()
	a.tx.Driver.WriteRaw(pos, a.tx.Driver.Alloc(100), 100, 500, virtqueuetest.AvailFlags(wrap))
	a.tx.KickNow()
	deadline := time.Now().Add(5 * time.Second)
	for ringStatus(t, sa, 1).Broken == "" {
		if time.Now().After(deadline) {
			t.Fatalf("ring 1 not broken: %+v", ringStatus(t, sa, 1))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := ringStatus(t, sa, 1); !strings.Contains(st.Broken, "buffer id out of range") {
		t.Fatalf("ring 1 broken by %q", st.Broken)
	}
	var found bool
	for _, v := range sa.Status().Violations {
		if v.Kind == "queue_broken" && v.Ring != nil && *v.Ring == 1 {
			found = true
			if !strings.Contains(v.Spec, "2.8") || v.Count != 1 {
				t.Errorf("violation %+v", v)
			}
		}
	}
	if !found {
		t.Fatalf("no queue_broken violation for ring 1: %+v", sa.Status().Violations)
	}
	if !ringStatus(t, sa, 0).Running {
		t.Fatal("the receive ring stopped too")
	}
	if _, err := a.f.GetU64(vt.GetFeatures); err != nil {
		t.Fatalf("connection dropped: %v", err)
	}
}
