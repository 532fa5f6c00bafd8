package virtqueue_test

import (
	"fmt"
	"testing"

	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// popped is one chain taken from a ring, as the data path sees it.
type popped struct {
	err               error
	head              uint16
	nread             int
	readLen, writeLen uint32
	gpas, segLens     string
	lastAvail         uint16
	brokenReason      string
}

func record(c *virtqueue.Chain, err error, q interface {
	LastAvail() uint16
	Err() error
}) popped {
	p := popped{err: err, lastAvail: q.LastAvail()}
	if err := q.Err(); err != nil {
		p.brokenReason = err.Error()
	}
	if err == virtqueue.ErrBroken {
		return p // the chain is left as it was: nothing to compare
	}
	p.head, p.nread, p.readLen, p.writeLen, p.gpas = c.Head, c.NRead, c.ReadLen, c.WriteLen, fmt.Sprint(c.GPAs)
	lens := make([]int, len(c.Segs))
	for i, s := range c.Segs {
		lens[i] = len(s)
	}
	p.segLens = fmt.Sprint(lens)
	return p
}

// poppable is what drainPop and drainBurst need of either layout.
type poppable interface {
	Pending() int
	Pop(mem *guestmem.Memory, c *virtqueue.Chain) error
	PopBurst(mem *guestmem.Memory, cs []virtqueue.Chain) (int, error)
	PushUsed(head uint16, length uint32)
	Publish()
	LastAvail() uint16
	Err() error
}

func newChains(n int) []virtqueue.Chain {
	cs := make([]virtqueue.Chain, n)
	for i := range cs {
		cs[i] = virtqueue.Chain{Segs: make([][]byte, 0, 4), GPAs: make([]uint64, 0, 4)}
	}
	return cs
}

// drainPop takes every chain with Pop, one at a time, and records each.
func drainPop(q poppable, mem *guestmem.Memory) []popped {
	var out []popped
	c := &newChains(1)[0]
	for round := 0; round < 2; round++ {
		n := q.Pending()
		for i := 0; i < n; i++ {
			err := q.Pop(mem, c)
			if err == virtqueue.ErrEmpty {
				break
			}
			out = append(out, record(c, err, q))
			if err == virtqueue.ErrBroken {
				return out
			}
			q.PushUsed(c.Head, 0)
		}
		q.Publish()
	}
	return out
}

// drainBurst takes every chain with PopBurst, in bursts of the sizes
// given (cycled), and records each.
func drainBurst(q poppable, mem *guestmem.Memory, sizes []byte) []popped {
	var out []popped
	cs := newChains(32)
	k := 0
	for round := 0; round < 2; round++ {
		n := q.Pending()
		for n > 0 {
			want := 1
			if len(sizes) > 0 {
				want = 1 + int(sizes[k%len(sizes)])%len(cs)
				k++
			}
			before := q.LastAvail()
			got, err := q.PopBurst(mem, cs[:min(want, n)])
			for i := 0; i < got; i++ {
				// LastAvail after each chain is not observable
				// mid-burst: each chain counts one.
				p := record(&cs[i], nil, q)
				p.lastAvail = before + uint16(i) + 1
				p.brokenReason = ""
				out = append(out, p)
				q.PushUsed(cs[i].Head, 0)
			}
			n -= got
			if err == nil {
				continue
			}
			if err == virtqueue.ErrEmpty {
				break
			}
			out = append(out, record(&cs[got], err, q))
			if err == virtqueue.ErrBroken {
				return out
			}
			q.PushUsed(cs[got].Head, 0)
			n--
		}
		q.Publish()
	}
	return out
}

func samePops(t *testing.T, one, burst []popped) {
	t.Helper()
	if len(one) != len(burst) {
		t.Fatalf("Pop took %d chains, PopBurst %d:\n%+v\n%+v", len(one), len(burst), one, burst)
	}
	for i := range one {
		a, b := one[i], burst[i]
		if a.err == nil {
			a.brokenReason = "" // not comparable mid-burst; the last one is
		}
		if a != b {
			t.Fatalf("chain %d: Pop %+v, PopBurst %+v", i, a, b)
		}
	}
}

// FuzzPopBurst: on any split ring, PopBurst in bursts of any sizes takes
// the same chains, with the same errors, as Pop one at a time, and leaves
// the queue in the same state.
func FuzzPopBurst(f *testing.F) {
	seed := func(sizes []byte, build func(d *virtqueuetest.Driver)) {
		d := virtqueuetest.New(8, 2<<20, 0)
		build(d)
		f.Add(d.Mem[virtqueuetest.DescBase:virtqueuetest.DescBase+8*16],
			d.Mem[0x40000:0x40000+8*16],
			d.Mem[virtqueuetest.AvailBase:virtqueuetest.AvailBase+6+16], sizes)
	}
	seed([]byte{3}, func(d *virtqueuetest.Driver) {
		for i := 0; i < 4; i++ {
			d.AddChain([]virtqueuetest.Buf{{Data: []byte("frame")}})
		}
		d.AddChain([]virtqueuetest.Buf{{Data: []byte("hdr")}, {Data: []byte("data")}})
		d.AddIndirect([]virtqueuetest.Buf{{Data: []byte("a")}, {Write: true, WriteLen: 64}})
		d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 1500}})
	})
	seed([]byte{0, 7}, func(d *virtqueuetest.Driver) {
		d.AddChain([]virtqueuetest.Buf{{Data: []byte("x")}})
		d.AddChain([]virtqueuetest.Buf{{Data: make([]byte, 10)}, {Data: make([]byte, 10)}, {Data: make([]byte, 10)}, {Data: make([]byte, 10)}, {Data: make([]byte, 10)}})
		d.AddChain([]virtqueuetest.Buf{{Data: []byte("y")}})
		d.WriteDesc(virtqueuetest.DescBase, 7, 0x100000, 10, 0, 0)
		d.Publish(9) // head out of range
	})
	f.Fuzz(func(t *testing.T, desc, indirect, avail, sizes []byte) {
		var qs [2]*virtqueue.Queue
		var mems [2]*guestmem.Memory
		for i := range qs {
			d := virtqueuetest.New(8, 2<<20, 0)
			copy(d.Mem[virtqueuetest.DescBase:virtqueuetest.DescBase+8*16], desc)
			copy(d.Mem[0x40000:0x40000+8*16], indirect)
			copy(d.Mem[virtqueuetest.AvailBase:virtqueuetest.AvailBase+6+16], avail)
			cfg := d.Config()
			cfg.EventIdx = len(avail) > 0 && avail[0]&0x80 != 0
			q, err := virtqueue.New(d.Memory(), cfg, 0)
			if err != nil {
				t.Fatal(err)
			}
			qs[i], mems[i] = q, d.Memory()
		}
		samePops(t, drainPop(qs[0], mems[0]), drainBurst(qs[1], mems[1], sizes))
		if qs[0].LastAvail() != qs[1].LastAvail() || qs[0].UsedIdx() != qs[1].UsedIdx() {
			t.Fatalf("after: Pop at %d/%d, PopBurst at %d/%d", qs[0].LastAvail(), qs[0].UsedIdx(), qs[1].LastAvail(), qs[1].UsedIdx())
		}
		if (qs[0].Err() == nil) != (qs[1].Err() == nil) || qs[0].Err() != nil && qs[0].Err().Error() != qs[1].Err().Error() {
			t.Fatalf("after: Pop broke with %v, PopBurst with %v", qs[0].Err(), qs[1].Err())
		}
	})
}

// FuzzPackedPopBurst is FuzzPopBurst for packed rings.
func FuzzPackedPopBurst(f *testing.F) {
	const maxSize = 16
	seed := func(size uint8, sizes []byte, build func(d *virtqueuetest.PackedDriver)) {
		d := virtqueuetest.NewPacked(uint16(size), 1<<22, 0)
		build(d)
		f.Add(size, uint32(virtqueue.PackedFreshBase),
			d.Mem[virtqueuetest.PackedDescBase:virtqueuetest.PackedDescBase+maxSize*16],
			d.Mem[virtqueuetest.PackedTableBase:virtqueuetest.PackedTableBase+maxSize*16], sizes)
	}
	seed(8, []byte{2}, func(d *virtqueuetest.PackedDriver) {
		for i := 0; i < 4; i++ {
			d.AddChain([]virtqueuetest.Buf{{Data: []byte("frame")}})
		}
		d.AddChain([]virtqueuetest.Buf{{Data: []byte("hdr")}, {Data: []byte("data")}})
		d.AddIndirect([]virtqueuetest.Buf{{Data: []byte("a")}, {Write: true, WriteLen: 64}})
		d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 1500}})
	})
	seed(5, []byte{9, 1}, func(d *virtqueuetest.PackedDriver) {
		for i := 0; i < 5; i++ {
			d.AddChain([]virtqueuetest.Buf{{Data: []byte("x")}})
		}
	})
	f.Fuzz(func(t *testing.T, size uint8, base uint32, desc, indirect, sizes []byte) {
		size = 1 + size%maxSize
		var qs [2]*virtqueue.PackedQueue
		var mems [2]*guestmem.Memory
		for i := range qs {
			d := virtqueuetest.NewPacked(uint16(size), 1<<22, 0)
			copy(d.Mem[virtqueuetest.PackedDescBase:virtqueuetest.PackedDescBase+int(size)*16], desc)
			copy(d.Mem[virtqueuetest.PackedTableBase:virtqueuetest.PackedTableBase+maxSize*16], indirect)
			cfg := d.Config()
			cfg.Indirect = base&(1<<14) == 0
			q, err := virtqueue.NewPacked(d.Memory(), cfg, base)
			if err != nil {
				return // a base the constructor refuses
			}
			qs[i], mems[i] = q, d.Memory()
		}
		samePops(t, drainPop(qs[0], mems[0]), drainBurst(qs[1], mems[1], sizes))
		if qs[0].LastAvail() != qs[1].LastAvail() || qs[0].UsedIdx() != qs[1].UsedIdx() || qs[0].RingBase() != qs[1].RingBase() {
			t.Fatalf("after: Pop at %d/%d, PopBurst at %d/%d", qs[0].LastAvail(), qs[0].UsedIdx(), qs[1].LastAvail(), qs[1].UsedIdx())
		}
		if (qs[0].Err() == nil) != (qs[1].Err() == nil) || qs[0].Err() != nil && qs[0].Err().Error() != qs[1].Err().Error() {
			t.Fatalf("after: Pop broke with %v, PopBurst with %v", qs[0].Err(), qs[1].Err())
		}
	})
}
