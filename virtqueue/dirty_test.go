package virtqueue_test

import (
	"encoding/binary"
	"fmt"
	"sort"
	"testing"

	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// dirtyPages lists the pages whose bits are set in log, and clears them.
func dirtyPages(log []byte) []uint64 {
	var out []uint64
	for i, b := range log {
		for bit := 0; bit < 8; bit++ {
			if b&(1<<bit) != 0 {
				out = append(out, uint64(i*8+bit))
			}
		}
		log[i] = 0
	}
	return out
}

func wantPages(t *testing.T, what string, log []byte, want ...uint64) {
	t.Helper()
	sort.Slice(want, func(i, j int) bool { return want[i] < want[j] })
	got := dirtyPages(log)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: dirty pages %#x, want %#x", what, got, want)
	}
}

// dirtyQueue is a queue of 1024 entries whose indices start at 600, so that
// the used index word (page 0x30), the used element written next (page
// 0x31) and avail_event (page 0x32) lie on pages of their own.
func dirtyQueue(t *testing.T, eventIdx bool) (*virtqueuetest.Driver, *virtqueue.Queue) {
	t.Helper()
	d := virtqueuetest.New(1024, 4<<20, 0)
	d.SetAvailIdx(600)
	binary.LittleEndian.PutUint16(d.Mem[virtqueuetest.UsedBase+2:], 600)
	cfg := d.Config()
	cfg.EventIdx = eventIdx
	q, err := virtqueue.New(d.Memory(), cfg, 600)
	if err != nil {
		t.Fatal(err)
	}
	return d, q
}

// TestDirtyLogEveryWrite checks that each kind of write into guest memory
// marks exactly its pages: the bytes of a frame copied across several
// receive segments (header included), the used element, the used index,
// and avail_event, and that nothing is marked with logging off.
func TestDirtyLogEveryWrite(t *testing.T) {
	d, q := dirtyQueue(t, true)
	bits := make([]byte, (4<<20)/guestmem.LogPageSize/8)
	q.SetLog(guestmem.LogFromBytes(bits), d.Config().Used)

	// A receive chain of three writable segments: 0x20 bytes straddling
	// pages 0x100/0x101, 0x3000 bytes over pages 0x200-0x202, 100 bytes
	// on page 0x300.
	const desc = virtqueuetest.DescBase
	d.WriteDesc(desc, 0, 0x100ff0, 0x20, virtqueue.DescFWrite|virtqueue.DescFNext, 1)
	d.WriteDesc(desc, 1, 0x200000, 0x3000, virtqueue.DescFWrite|virtqueue.DescFNext, 2)
	d.WriteDesc(desc, 2, 0x300000, 100, virtqueue.DescFWrite, 0)
	d.Publish(0)
	q.Pending()
	c := &virtqueue.Chain{Segs: make([][]byte, 0, 8), GPAs: make([]uint64, 0, 8)}
	if err := q.Pop(d.Memory(), c); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(c.GPAs) != fmt.Sprint([]uint64{0x100ff0, 0x200000, 0x300000}) {
		t.Fatalf("GPAs %#x", c.GPAs)
	}
	// The frame fills the first segment and 0x1001 bytes of the second.
	n := uint32(0x20 + 0x1001)
	wantPages(t, "pop", bits) // reading marks nothing
	q.PushUsed(c.Head, n)
	q.LogWritten(c, n)
	wantPages(t, "frame copy", bits, 0x100, 0x101, 0x200, 0x201)
	q.Publish()
	wantPages(t, "publish", bits, 0x30, 0x31) // idx word, element 600
	q.EnableNotify()
	wantPages(t, "avail_event", bits, 0x32)
	q.DisableNotify() // with EVENT_IDX it writes nothing
	wantPages(t, "disable with event idx", bits)

	// Without EVENT_IDX the flags word is written instead.
	d2, q2 := dirtyQueue(t, false)
	q2.SetLog(guestmem.LogFromBytes(bits), d2.Config().Used)
	q2.DisableNotify()
	wantPages(t, "disable notify", bits, 0x30)
	q2.EnableNotify()
	wantPages(t, "enable notify", bits, 0x30)

	// Logging off: the same writes mark nothing.
	q.SetLog(nil, 0)
	d.Publish(0)
	q.Pending()
	if err := q.Pop(d.Memory(), c); err != nil {
		t.Fatal(err)
	}
	q.PushUsed(c.Head, n)
	q.LogWritten(c, n)
	q.Publish()
	q.EnableNotify()
	wantPages(t, "logging off", bits)
}

// TestDirtyLogUsedAtLogAddr checks that the used ring is logged at the
// address SET_VRING_ADDR gave (log_guest_addr), not where it was found.
func TestDirtyLogUsedAtLogAddr(t *testing.T) {
	d, q := dirtyQueue(t, true)
	bits := make([]byte, 64)                        // 512 pages: 2 MiB
	q.SetLog(guestmem.LogFromBytes(bits), 0x100000) // page 0x100
	d.AddChain([]virtqueuetest.Buf{{Data: []byte("x")}})
	q.Pending()
	c := &virtqueue.Chain{Segs: make([][]byte, 0, 8)}
	if err := q.Pop(d.Memory(), c); err != nil {
		t.Fatal(err)
	}
	q.PushUsed(c.Head, 0)
	q.Publish()
	wantPages(t, "publish", bits, 0x100, 0x101)
	q.EnableNotify()
	wantPages(t, "avail_event", bits, 0x102)
}

// TestDirtyLogPublishWraps checks that a batch of used elements wrapping
// around the end of the ring marks both ends, and a full ring all of it.
func TestDirtyLogPublishWraps(t *testing.T) {
	d := virtqueuetest.New(1024, 4<<20, 0)
	d.SetAvailIdx(1020)
	binary.LittleEndian.PutUint16(d.Mem[virtqueuetest.UsedBase+2:], 1020)
	q, err := virtqueue.New(d.Memory(), d.Config(), 1020)
	if err != nil {
		t.Fatal(err)
	}
	// The used ring is logged where element 1020 starts page 0x10000:
	// the index word and elements 0-3 lie on page 0xfffe, elements 4-1019
	// on pages 0xfffe-0xffff, elements 1020-1023 on page 0x10000.
	bits := make([]byte, 0x10010/8)
	q.SetLog(guestmem.LogFromBytes(bits), 0x10000000-(4+8*1020))
	for i := 0; i < 8; i++ {
		d.AddChain([]virtqueuetest.Buf{{Data: []byte("x")}})
	}
	q.Pending()
	c := &virtqueue.Chain{Segs: make([][]byte, 0, 8)}
	for i := 0; i < 8; i++ {
		if err := q.Pop(d.Memory(), c); err != nil {
			t.Fatal(err)
		}
		q.PushUsed(c.Head, 0)
	}
	q.Publish()
	wantPages(t, "wrapped batch", bits, 0xfffe, 0x10000)
}

// TestDirtyLogSmallLog checks that a log smaller than the memory written
// marks what it covers, counts the rest, and never faults.
func TestDirtyLogSmallLog(t *testing.T) {
	d, q := dirtyQueue(t, true)
	bits := make([]byte, 8) // 64 pages: 256 KiB, less than the buffers' addresses
	l := guestmem.LogFromBytes(bits)
	q.SetLog(l, d.Config().Used)
	d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 3000}})
	q.Pending()
	c := &virtqueue.Chain{Segs: make([][]byte, 0, 8), GPAs: make([]uint64, 0, 8)}
	if err := q.Pop(d.Memory(), c); err != nil {
		t.Fatal(err)
	}
	q.PushUsed(c.Head, 3000)
	q.LogWritten(c, 3000)
	q.Publish()
	wantPages(t, "small log", bits, 0x30, 0x31)
	if l.Beyond() != 1 {
		t.Fatalf("%d writes counted beyond the log, want 1", l.Beyond())
	}
	if l.MissedWrites() != 0 {
		t.Fatalf("%d writes missed", l.MissedWrites())
	}
}

// TestDirtyLogChainWithoutGPAs: a chain popped without GPAs and written
// into cannot be logged; it is counted, not a crash.
func TestDirtyLogChainWithoutGPAs(t *testing.T) {
	d, q := dirtyQueue(t, true)
	bits := make([]byte, 128)
	l := guestmem.LogFromBytes(bits)
	q.SetLog(l, d.Config().Used)
	d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 100}})
	q.Pending()
	c := &virtqueue.Chain{Segs: make([][]byte, 0, 8)}
	if err := q.Pop(d.Memory(), c); err != nil {
		t.Fatal(err)
	}
	if c.GPAs != nil {
		t.Fatal("GPAs recorded into a nil slice")
	}
	q.PushUsed(c.Head, 100)
	q.LogWritten(c, 100)
	if l.MissedWrites() != 1 {
		t.Fatalf("missed writes %d, want 1", l.MissedWrites())
	}
}

// TestChainGPAs checks the recorded addresses on the fast path, through an
// indirect table, and for a buffer split across two regions.
func TestChainGPAs(t *testing.T) {
	d := virtqueuetest.New(8, 1<<21, 0)
	q := newQueue(t, d, nil)
	c := &virtqueue.Chain{Segs: make([][]byte, 0, 8), GPAs: make([]uint64, 0, 8)}
	d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 64}})
	d.AddIndirect([]virtqueuetest.Buf{{Data: []byte("hdr")}, {Write: true, WriteLen: 10}})
	q.Pending()
	for i := 0; i < 2; i++ {
		if err := q.Pop(d.Memory(), c); err != nil {
			t.Fatal(err)
		}
		if len(c.GPAs) != len(c.Segs) {
			t.Fatalf("chain %d: %d GPAs for %d segments", i, len(c.GPAs), len(c.Segs))
		}
		for j, s := range c.Segs {
			if want := d.Read(c.GPAs[j], len(s)); &want[0] != &s[0] {
				t.Fatalf("chain %d segment %d: GPA %#x is not where the segment lies", i, j, c.GPAs[j])
			}
		}
	}

	// Two regions back to back in guest-physical space: a buffer across
	// the boundary is two segments, the second at the second region.
	a := make([]byte, 1<<20)
	b := make([]byte, 1<<20)
	copy(a, d.Mem[:1<<20])
	mem, err := guestmem.FromBytes([]guestmem.RegionSpec{
		{GuestPhysAddr: 0, Size: 1 << 20, UserAddr: 0x10000000},
		{GuestPhysAddr: 1 << 20, Size: 1 << 20, UserAddr: 0x20000000},
	}, [][]byte{a, b})
	if err != nil {
		t.Fatal(err)
	}
	q2, err := virtqueue.New(mem, d.Config(), 0)
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint64(a[virtqueuetest.DescBase:], 1<<20-16)
	binary.LittleEndian.PutUint32(a[virtqueuetest.DescBase+8:], 32)
	binary.LittleEndian.PutUint16(a[virtqueuetest.DescBase+12:], virtqueue.DescFWrite)
	binary.LittleEndian.PutUint16(a[virtqueuetest.AvailBase+4:], 0)
	binary.LittleEndian.PutUint16(a[virtqueuetest.AvailBase+2:], 1)
	q2.Pending()
	if err := q2.Pop(mem, c); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(c.GPAs) != fmt.Sprint([]uint64{1<<20 - 16, 1 << 20}) {
		t.Fatalf("split buffer GPAs %#x", c.GPAs)
	}
}

func TestLogWrittenAllocatesNothing(t *testing.T) {
	d, q := dirtyQueue(t, true)
	bits := make([]byte, 128)
	q.SetLog(guestmem.LogFromBytes(bits), d.Config().Used)
	d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 100}})
	c := &virtqueue.Chain{Segs: make([][]byte, 0, 8), GPAs: make([]uint64, 0, 8)}
	mem := d.Memory()
	allocs := testing.AllocsPerRun(1000, func() {
		q.Pending()
		if err := q.Pop(mem, c); err != nil {
			t.Fatal(err)
		}
		q.Unpop(1)
		q.PushUsed(c.Head, 100)
		q.LogWritten(c, 100)
		q.Publish()
		q.EnableNotify()
	})
	if allocs != 0 {
		t.Fatalf("logging allocates %.1f times per chain", allocs)
	}
}
