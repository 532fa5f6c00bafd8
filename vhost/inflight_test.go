package vhost_test

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

const pInflight = 1 << 12

// holder is a Backend whose data path is the test: it runs with the
// rings under mu, so Publish (taking mu) waits for it to let go, as the
// real data path's Publish does.
type holder struct {
	mu    sync.Mutex
	rings *vhost.Rings
}

func (h *holder) Publish(r *vhost.Rings) {
	h.mu.Lock()
	h.rings = r
	h.mu.Unlock()
}

// run calls f with the running transmit queue 1, waiting for it to run.
func (h *holder) run(t *testing.T, f func(mem *vhost.Rings, q *virtqueue.Queue)) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		if r := h.rings; r != nil {
			for _, ring := range r.TX {
				if ring.Index == 1 {
					f(r, ring.Queue)
					h.mu.Unlock()
					return
				}
			}
		}
		h.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("transmit ring 1 never ran")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// inflightGuest connects a frontend with inflight tracking negotiated and
// guest memory mapped and announced.
func inflightGuest(t *testing.T, path string) *vt.Frontend {
	t.Helper()
	f := dial(t, path)
	if err := f.MapMemory(64<<20, 0x40000000, 0x7f1200000000); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Negotiate(fVersion1|fProtocol, pReplyAck|pInflight); err != nil {
		t.Fatal(err)
	}
	if err := f.SetMemTable(true); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestInflightOffered(t *testing.T) {
	if vhost.OfferedProtocolFeatures&pInflight == 0 {
		t.Fatal("INFLIGHT_SHMFD is not offered")
	}
}

func TestGetInflightFD(t *testing.T) {
	_, path := serve(t, vhost.Options{}, &recorder{})
	f := inflightGuest(t, path)
	in, fd, err := f.GetInflightFD(2, 256)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	want := 2 * virtqueue.InflightQueueBytes(256)
	if in.MmapSize != want || in.MmapOffset != 0 || in.NumQueues != 2 || in.QueueSize != 256 {
		t.Fatalf("reply %+v, want mmap_size %d offset 0 for 2 queues of 256", in, want)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || uint64(st.Size) != want {
		t.Fatalf("fd size %d (%v), want %d", st.Size, err, want)
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil || seals&(unix.F_SEAL_SHRINK|unix.F_SEAL_GROW) != unix.F_SEAL_SHRINK|unix.F_SEAL_GROW {
		t.Fatalf("seals %#x (%v), want SHRINK|GROW", seals, err)
	}
	if err := unix.Ftruncate(fd, 0); err == nil {
		t.Fatal("the region could be truncated")
	}
	m, err := unix.Mmap(fd, 0, int(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	if !bytes.Equal(m, make([]byte, want)) {
		t.Fatal("region not zero-filled")
	}
	// The region is usable: SET_INFLIGHT_FD takes it back.
	if err := f.SetInflightFD(in, fd, true); err != nil {
		t.Fatal(err)
	}
}

func TestInflightNeedsProtocolFeature(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	f := dial(t, path)
	if _, err := f.Negotiate(fVersion1|fProtocol, pReplyAck); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.GetInflightFD(2, 256); err == nil {
		t.Fatal("GET_INFLIGHT_FD answered without INFLIGHT_SHMFD negotiated")
	}
	waitDisconnected(t, s)
	if got := s.Status().LastError; !strings.Contains(got, "inflight_shmfd") {
		t.Fatalf("last error %q", got)
	}
}

func TestInflightBadRequestsRefused(t *testing.T) {
	s, path := serve(t, vhost.Options{QueuePairs: 1}, &recorder{})
	good := vt.Inflight{MmapSize: 2 * virtqueue.InflightQueueBytes(256), NumQueues: 2, QueueSize: 256}
	memfd := func(size int64, seals int) int {
		fd, err := unix.MemfdCreate("t", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			t.Fatal(err)
		}
		unix.Ftruncate(fd, size)
		if seals != 0 {
			unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals)
		}
		return fd
	}
	sealed := func() int { return memfd(1<<20, unix.F_SEAL_SHRINK) }
	cases := []struct {
		name string
		in   vt.Inflight
		fd   func() int
		want string
	}{
		{"zero queues", vt.Inflight{MmapSize: good.MmapSize, QueueSize: 256}, sealed, "for 0 queues"},
		{"more queues than rings", vt.Inflight{MmapSize: 1 << 20, NumQueues: 3, QueueSize: 256}, sealed, "1 to 2"},
		{"queue size 3", vt.Inflight{MmapSize: good.MmapSize, NumQueues: 2, QueueSize: 3}, sealed, "not a power of two"},
		{"mmap_size short", vt.Inflight{MmapSize: good.MmapSize - 1, NumQueues: 2, QueueSize: 256}, sealed, "need"},
		{"offset unaligned", vt.Inflight{MmapSize: good.MmapSize, MmapOffset: 100, NumQueues: 2, QueueSize: 256}, sealed, "not page aligned"},
		{"beyond the file", vt.Inflight{MmapSize: good.MmapSize, MmapOffset: 1 << 20, NumQueues: 2, QueueSize: 256}, sealed, "beyond its file"},
		{"file too small", good, func() int { return memfd(100, unix.F_SEAL_SHRINK) }, "beyond its file"},
		{"not sealed", good, func() int { return memfd(1<<20, 0) }, "not sealed against shrinking"},
		{"eventfd", good, func() int { fd, _ := unix.Eventfd(0, unix.EFD_CLOEXEC); return fd }, "not a regular file"},
	}
	before := openFDs(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := dial(t, path)
			if _, err := f.Negotiate(fVersion1|fProtocol, pReplyAck|pInflight); err != nil {
				t.Fatal(err)
			}
			fd := c.fd()
			err := f.SetInflightFD(c.in, fd, true)
			unix.Close(fd)
			if err == nil {
				t.Fatal("SET_INFLIGHT_FD accepted")
			}
			if !f.Closed() {
				t.Fatal("connection kept")
			}
			waitDisconnected(t, s)
			if got := s.Status().LastError; !strings.Contains(got, "SET_INFLIGHT_FD") || !strings.Contains(got, c.want) {
				t.Fatalf("last error %q, want SET_INFLIGHT_FD and %q", got, c.want)
			}
		})
	}
	t.Run("GET with too many queues", func(t *testing.T) {
		f := dial(t, path)
		if _, err := f.Negotiate(fVersion1|fProtocol, pReplyAck|pInflight); err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.GetInflightFD(9, 256); err == nil {
			t.Fatal("GET_INFLIGHT_FD for 9 queues answered")
		}
		waitDisconnected(t, s)
		if got := s.Status().LastError; !strings.Contains(got, "GET_INFLIGHT_FD") || !strings.Contains(got, "1 to 2") {
			t.Fatalf("last error %q", got)
		}
	})
	waitFDs(t, before)
}

// TestInflightRestart: frontend A hands vhostd an inflight region; the
// data path takes ten chains, returns four, and the connection drops in
// the middle of the burst. Frontend B (the same guest, after the backend
// came back) hands over the same region and resumes the ring at the used
// index, as QEMU does when GET_VRING_BASE could not be asked: the six
// chains taken and not returned are processed again, first and in order,
// and every frame is delivered exactly once.
func TestInflightRestart(t *testing.T) {
	h := &holder{}
	s, path := serve(t, vhost.Options{}, h)
	fa := inflightGuest(t, path)
	in, ifd, err := fa.GetInflightFD(2, 256)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ifd)
	if err := fa.SetInflightFD(in, ifd, true); err != nil {
		t.Fatal(err)
	}
	g := setupRings(t, fa)

	delivered := map[byte]int{}
	var order []byte
	send := func(from, n int) {
		for i := from; i < from+n; i++ {
			g.tx.Driver.AddChain([]virtqueuetest.Buf{{Data: append(make([]byte, 12), byte(i))}})
		}
	}
	deliver := func(c *virtqueue.Chain) {
		id := c.Segs[c.NRead-1][len(c.Segs[c.NRead-1])-1]
		delivered[id]++
		order = append(order, id)
	}
	send(0, 10)
	var heads []uint16
	h.run(t, func(r *vhost.Rings, q *virtqueue.Queue) {
		if p := q.Pending(); p != 10 {
			t.Fatalf("pending %d", p)
		}
		c := &virtqueue.Chain{Segs: make([][]byte, 0, 4)}
		var got []virtqueue.Chain
		for i := 0; i < 10; i++ {
			if err := q.Pop(r.Mem, c); err != nil {
				t.Fatal(err)
			}
			heads = append(heads, c.Head)
			got = append(got, virtqueue.Chain{Head: c.Head, Segs: append([][]byte(nil), c.Segs...), NRead: c.NRead})
		}
		for i := 0; i < 4; i++ {
			q.PushUsed(got[i].Head, 0)
			deliver(&got[i])
		}
		q.Publish()
		// Chains 4..9 are taken; the backend "dies" before it
		// returns them.
	})
	fa.C.Close()
	waitDisconnected(t, s)
	if u := g.tx.Driver.UsedIdx(); u != 4 {
		t.Fatalf("used index %d after A, want 4", u)
	}

	// B: the same guest memory and rings, a new connection.
	fb, err := vt.Dial(path, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.C.Close()
	fb.Memory, fb.GPA, fb.UAddr = fa.Memory, fa.GPA, fa.UAddr
	fb.MemFD = fa.MemFD
	if _, err := fb.Negotiate(fVersion1|fProtocol, pReplyAck|pInflight); err != nil {
		t.Fatal(err)
	}
	if err := fb.SetMemTable(true); err != nil {
		t.Fatal(err)
	}
	if err := fb.SetInflightFD(in, ifd, true); err != nil {
		t.Fatal(err)
	}
	send(10, 3)
	if err := fb.ResumeRing(g.rx, 0); err != nil {
		t.Fatal(err)
	}
	if err := fb.ResumeRing(g.tx, g.tx.Driver.UsedIdx()); err != nil {
		t.Fatal(err)
	}
	if _, err := fb.GetU64(vt.GetFeatures); err != nil {
		t.Fatal(err)
	}
	h.run(t, func(r *vhost.Rings, q *virtqueue.Queue) {
		if p := q.Pending(); p != 9 {
			t.Fatalf("pending %d after restart, want 6 resubmitted + 3 new", p)
		}
		c := &virtqueue.Chain{Segs: make([][]byte, 0, 4)}
		for i := 0; ; i++ {
			err := q.Pop(r.Mem, c)
			if errors.Is(err, virtqueue.ErrEmpty) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if i < 6 && c.Head != heads[4+i] {
				t.Fatalf("chain %d after restart is head %d, want the inflight head %d", i, c.Head, heads[4+i])
			}
			deliver(c)
			q.PushUsed(c.Head, 0)
		}
		q.Publish()
	})
	for i := 0; i < 13; i++ {
		if delivered[byte(i)] != 1 {
			t.Fatalf("frame %d delivered %d times (order %v)", i, delivered[byte(i)], order)
		}
	}
	for i, id := range order {
		if id != byte(i) {
			t.Fatalf("delivery order %v", order)
		}
	}
	base, err := fb.GetVringBase(1)
	if err != nil {
		t.Fatal(err)
	}
	if base != 13 || g.tx.Driver.UsedIdx() != 13 {
		t.Fatalf("GET_VRING_BASE %d, used index %d, want 13 and 13", base, g.tx.Driver.UsedIdx())
	}
}
