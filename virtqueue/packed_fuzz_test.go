package virtqueue_test

import (
	"errors"
	"testing"

	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// FuzzPackedChain lets the fuzzer write a packed ring's descriptors, an
// indirect table, the driver's event suppression area, the ring size (1
// to 16) and the base the device starts from, then pops everything, twice
// round. Any outcome but a panic, an out-of-bounds segment or a broken
// invariant of the data path is fine.
func FuzzPackedChain(f *testing.F) {
	const maxSize = 16
	seed := func(size uint8, build func(d *virtqueuetest.PackedDriver)) {
		d := virtqueuetest.NewPacked(uint16(size), 1<<22, 0)
		build(d)
		f.Add(size, uint32(virtqueue.PackedFreshBase),
			d.Mem[virtqueuetest.PackedDescBase:virtqueuetest.PackedDescBase+maxSize*16],
			d.Mem[virtqueuetest.PackedTableBase:virtqueuetest.PackedTableBase+maxSize*16],
			d.Mem[virtqueuetest.PackedDriverBase:virtqueuetest.PackedDriverBase+4])
	}
	seed(8, func(d *virtqueuetest.PackedDriver) {
		d.AddChain([]virtqueuetest.Buf{{Data: []byte("hdr")}, {Data: []byte("data")}})
		d.AddIndirect([]virtqueuetest.Buf{{Data: []byte("a")}, {Write: true, WriteLen: 64}})
		d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 1500}})
	})
	seed(5, func(d *virtqueuetest.PackedDriver) {
		for i := 0; i < 5; i++ {
			d.AddChain([]virtqueuetest.Buf{{Data: []byte("x")}})
		}
		d.SetDriverEvent(virtqueue.EventFlagDesc, 3, true)
	})
	seed(3, func(d *virtqueuetest.PackedDriver) {
		for i := uint16(0); i < 3; i++ {
			d.WriteRaw(i, virtqueuetest.PackedBufBase, 4, i, virtqueuetest.AvailFlags(true)|virtqueue.DescFNext)
		}
	})
	f.Fuzz(func(t *testing.T, size uint8, base uint32, desc, indirect, driver []byte) {
		size = 1 + size%maxSize
		d := virtqueuetest.NewPacked(uint16(size), 1<<22, 0)
		copy(d.Mem[virtqueuetest.PackedDescBase:virtqueuetest.PackedDescBase+int(size)*16], desc)
		copy(d.Mem[virtqueuetest.PackedTableBase:virtqueuetest.PackedTableBase+maxSize*16], indirect)
		copy(d.Mem[virtqueuetest.PackedDriverBase:virtqueuetest.PackedDriverBase+4], driver)
		cfg := d.Config()
		cfg.EventIdx = base&(1<<30) != 0
		cfg.Indirect = base&(1<<14) == 0
		mem := d.Memory()
		q, err := virtqueue.NewPacked(mem, cfg, base)
		if err != nil {
			return // a base the constructor refuses
		}
		gap := baseGap(q.RingBase(), uint32(size))
		// Writes are logged in a log covering half the memory: what lies
		// beyond is counted, never a fault.
		log := guestmem.LogFromBytes(make([]byte, (1<<21)/guestmem.LogPageSize/8))
		q.SetLog(log)
		c := &virtqueue.Chain{Segs: make([][]byte, 0, 16), GPAs: make([]uint64, 0, 16)}
		for round := 0; round < 2; round++ {
			n := q.Pending()
			if n > int(size) {
				t.Fatalf("pending %d exceeds queue size %d", n, size)
			}
			for i := 0; i < n; i++ {
				err := q.Pop(mem, c)
				if errors.Is(err, virtqueue.ErrBroken) {
					if q.Err() == nil {
						t.Fatal("broken without reason")
					}
					return
				}
				if errors.Is(err, virtqueue.ErrEmpty) {
					break
				}
				if err != nil && !errors.Is(err, virtqueue.ErrTooManySegments) {
					t.Fatalf("pop: %v", err)
				}
				if c.Head >= uint16(size) || c.NRead > len(c.Segs) {
					t.Fatalf("bad chain %+v", c)
				}
				var sum uint64
				for _, s := range c.Segs {
					sum += uint64(len(s))
				}
				if err == nil && sum != uint64(c.ReadLen)+uint64(c.WriteLen) {
					t.Fatalf("segments hold %d bytes, chain says %d+%d", sum, c.ReadLen, c.WriteLen)
				}
				if len(c.GPAs) != len(c.Segs) {
					t.Fatalf("%d GPAs for %d segments", len(c.GPAs), len(c.Segs))
				}
				for j, s := range c.Segs {
					if b := mem.Chunk(c.GPAs[j], uint64(len(s))); len(s) > 0 && (len(b) != len(s) || &b[0] != &s[0]) {
						t.Fatalf("segment %d is not at its GPA %#x", j, c.GPAs[j])
					}
				}
				if i == 0 && round == 0 {
					q.Unpop(1)
					if err := q.Pop(mem, c); err != nil && !errors.Is(err, virtqueue.ErrTooManySegments) {
						t.Fatalf("pop after unpop: %v", err)
					}
				}
				q.PushUsed(c.Head, c.WriteLen)
				if err == nil {
					q.LogWritten(c, c.WriteLen)
				}
			}
			if q.LastAvail() != q.UsedIdx() {
				t.Fatalf("%d chains popped, %d pushed", q.LastAvail(), q.UsedIdx())
			}
			q.Publish()
			q.NeedCall()
			q.EnableNotify()
			q.DisableNotify()
			if b := q.RingBase(); baseGap(b, uint32(size)) != gap {
				t.Fatalf("ring base %#x: with nothing out, used no longer %d slots behind avail", b, gap)
			}
			if a, u := q.Backlog(); a-u > uint16(size) {
				t.Fatalf("backlog %d-%d beyond the ring", a, u)
			}
		}
		if log.MissedWrites() != 0 {
			t.Fatalf("%d writes not logged", log.MissedWrites())
		}
	})
}

// baseGap returns how many slots a packed ring base's used position lies
// behind its available one.
func baseGap(b, size uint32) uint32 {
	seq := func(h uint32) uint32 {
		if h&0x8000 != 0 {
			return h & 0x7fff
		}
		return h&0x7fff + size
	}
	return (seq(b&0xffff) + 2*size - seq(b>>16)) % (2 * size)
}
