package virtqueue_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// FuzzChain lets the fuzzer write the descriptor table, an indirect table
// and the avail ring of a queue, then pops everything. Any outcome but a
// panic or an out-of-bounds segment is fine; the invariants checked are the
// ones the data path relies on.
func FuzzChain(f *testing.F) {
	seed := func(build func(d *virtqueuetest.Driver)) {
		d := virtqueuetest.New(8, 1<<20, 0)
		build(d)
		f.Add(d.Mem[virtqueuetest.DescBase:virtqueuetest.DescBase+8*16],
			d.Mem[0x40000:0x40000+8*16],
			d.Mem[virtqueuetest.AvailBase:virtqueuetest.AvailBase+6+16])
	}
	seed(func(d *virtqueuetest.Driver) {
		d.AddChain([]virtqueuetest.Buf{{Data: []byte("hdr")}, {Data: []byte("data")}})
	})
	seed(func(d *virtqueuetest.Driver) {
		d.AddIndirect([]virtqueuetest.Buf{{Data: []byte("a")}, {Write: true, WriteLen: 64}})
		d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 1500}})
	})
	// A chain that loops on itself, its buffer in memory (0x80000), so
	// that the walk reaches the loop rather than stopping at the address.
	seed(func(d *virtqueuetest.Driver) {
		d.WriteDesc(virtqueuetest.DescBase, 0, 0x80000, 10, virtqueue.DescFNext, 0)
		d.Publish(0)
	})
	// Indirect tables longer than the queue: a looping one of 64 MiB (not
	// in memory) and one of size+1 entries that is, its first entries
	// looping over buffers in memory.
	seed(func(d *virtqueuetest.Driver) {
		for i := uint16(0); i < 8; i++ {
			d.WriteDesc(0x40000, i, 0x80000, 4, virtqueue.DescFNext, (i+1)%8)
		}
		d.WriteDesc(virtqueuetest.DescBase, 0, 0x40000, 64<<20, virtqueue.DescFIndirect, 0)
		d.WriteDesc(virtqueuetest.DescBase, 1, 0x40000, 9*16, virtqueue.DescFIndirect, 0)
		d.Publish(1)
		d.Publish(0)
	})
	f.Fuzz(func(t *testing.T, desc, indirect, avail []byte) {
		d := virtqueuetest.New(8, 1<<20, 0)
		copy(d.Mem[virtqueuetest.DescBase:virtqueuetest.DescBase+8*16], desc)
		copy(d.Mem[0x40000:0x40000+8*16], indirect)
		copy(d.Mem[virtqueuetest.AvailBase:virtqueuetest.AvailBase+6+16], avail)
		cfg := d.Config()
		cfg.EventIdx = len(avail) > 0 && avail[0]&0x80 != 0
		q, err := virtqueue.New(d.Memory(), cfg, 0)
		if err != nil {
			t.Fatal(err)
		}
		mem := d.Memory()
		// Every chain's writes are logged, in a log covering half the
		// memory: what lies beyond is counted, never a fault.
		log := guestmem.LogFromBytes(make([]byte, (1<<19)/guestmem.LogPageSize/8))
		q.SetLog(log, cfg.Used)
		c := &virtqueue.Chain{Segs: make([][]byte, 0, 16), GPAs: make([]uint64, 0, 16)}
		n := q.Pending()
		if n > 8 {
			t.Fatalf("pending %d exceeds queue size", n)
		}
		for i := 0; i < n; i++ {
			err := q.Pop(mem, c)
			if errors.Is(err, virtqueue.ErrBroken) {
				if q.Err() == nil {
					t.Fatal("broken without reason")
				}
				return
			}
			if err != nil && !errors.Is(err, virtqueue.ErrTooManySegments) {
				t.Fatalf("pop: %v", err)
			}
			if c.Head >= 8 || c.NRead > len(c.Segs) {
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
			q.PushUsed(c.Head, c.WriteLen)
			if err == nil {
				q.LogWritten(c, c.WriteLen)
			}
		}
		q.Publish()
		if got := binary.LittleEndian.Uint16(d.Mem[virtqueuetest.UsedBase+2:]); got != q.UsedIdx() {
			t.Fatalf("published used idx %d, queue says %d", got, q.UsedIdx())
		}
		q.NeedCall()
		q.EnableNotify()
		if log.MissedWrites() != 0 {
			t.Fatalf("%d writes not logged", log.MissedWrites())
		}
	})
}
