package virtqueue_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

func newQueue(t testing.TB, d *virtqueuetest.Driver, mod func(*virtqueue.Config)) *virtqueue.Queue {
	t.Helper()
	cfg := d.Config()
	if mod != nil {
		mod(&cfg)
	}
	q, err := virtqueue.New(d.Memory(), cfg, 0)
	if err != nil {
		t.Fatalf("new queue: %v", err)
	}
	return q
}

func chain(n int) *virtqueue.Chain { return &virtqueue.Chain{Segs: make([][]byte, 0, n)} }

func joined(c *virtqueue.Chain, from, to int) []byte {
	return bytes.Join(c.Segs[from:to], nil)
}

func TestDirectChain(t *testing.T) {
	d := virtqueuetest.New(8, 1<<21, 0)
	q := newQueue(t, d, nil)
	head := d.AddChain([]virtqueuetest.Buf{{Data: []byte("hdr")}, {Data: []byte("payload")}, {Write: true, WriteLen: 100}})
	if n := q.Pending(); n != 1 {
		t.Fatalf("pending %d, want 1", n)
	}
	mem := d.Memory()
	c := chain(8)
	if err := q.Pop(mem, c); err != nil {
		t.Fatalf("pop: %v", err)
	}
	if c.Head != head || c.NRead != 2 || len(c.Segs) != 3 || c.ReadLen != 10 || c.WriteLen != 100 {
		t.Fatalf("chain = head %d nread %d segs %d read %d write %d", c.Head, c.NRead, len(c.Segs), c.ReadLen, c.WriteLen)
	}
	if got := joined(c, 0, 2); string(got) != "hdrpayload" {
		t.Fatalf("readable bytes %q", got)
	}
	copy(c.Segs[2], "reply")
	if err := q.Pop(mem, c); !errors.Is(err, virtqueue.ErrEmpty) {
		t.Fatalf("second pop: %v, want ErrEmpty", err)
	}
	q.PushUsed(c.Head, 5)
	if d.UsedIdx() != 0 {
		t.Fatal("used index visible before Publish")
	}
	q.Publish()
	used := d.CollectUsed()
	if len(used) != 1 || used[0].ID != head || used[0].Len != 5 {
		t.Fatalf("used = %+v", used)
	}
	if got := d.Read(d.DescAddr(head+2), 5); string(got) != "reply" {
		t.Fatalf("device write landed as %q in the driver's buffer", got)
	}
	if q.LastAvail() != 1 || q.UsedIdx() != 1 {
		t.Fatalf("indices %d/%d", q.LastAvail(), q.UsedIdx())
	}
}

func TestIndirectChain(t *testing.T) {
	d := virtqueuetest.New(8, 1<<21, 0x100000000)
	q := newQueue(t, d, nil)
	d.AddIndirect([]virtqueuetest.Buf{{Data: []byte("abc")}, {Data: []byte("def")}, {Write: true, WriteLen: 7}})
	q.Pending()
	c := chain(8)
	if err := q.Pop(d.Memory(), c); err != nil {
		t.Fatalf("pop: %v", err)
	}
	if string(joined(c, 0, c.NRead)) != "abcdef" || c.WriteLen != 7 {
		t.Fatalf("indirect chain read %q write %d", joined(c, 0, c.NRead), c.WriteLen)
	}
}

func TestIndirectRefusedWhenNotNegotiated(t *testing.T) {
	d := virtqueuetest.New(8, 1<<21, 0)
	q := newQueue(t, d, func(c *virtqueue.Config) { c.Indirect = false })
	d.AddIndirect([]virtqueuetest.Buf{{Data: []byte("abc")}})
	q.Pending()
	if err := q.Pop(d.Memory(), chain(4)); !errors.Is(err, virtqueue.ErrBroken) {
		t.Fatalf("pop: %v, want ErrBroken", err)
	}
}

func TestTooManySegments(t *testing.T) {
	d := virtqueuetest.New(8, 1<<21, 0)
	q := newQueue(t, d, nil)
	d.AddChain([]virtqueuetest.Buf{{Data: []byte("a")}, {Data: []byte("b")}, {Data: []byte("c")}})
	d.AddChain([]virtqueuetest.Buf{{Data: []byte("d")}})
	q.Pending()
	c := chain(2)
	if err := q.Pop(d.Memory(), c); !errors.Is(err, virtqueue.ErrTooManySegments) {
		t.Fatalf("pop: %v, want ErrTooManySegments", err)
	}
	if err := q.Pop(d.Memory(), c); err != nil || string(c.Segs[0]) != "d" {
		t.Fatalf("queue not usable after a long chain: %v", err)
	}
}

// TestMalformed builds each kind of broken ring and checks that the queue
// breaks (stickily) instead of panicking or reading out of bounds.
func TestMalformed(t *testing.T) {
	const dt = virtqueuetest.DescBase
	cases := []struct {
		name  string
		build func(d *virtqueuetest.Driver)
	}{
		{"head out of range", func(d *virtqueuetest.Driver) { d.Publish(8) }},
		{"next out of range", func(d *virtqueuetest.Driver) {
			d.WriteDesc(dt, 0, 0x100000, 10, virtqueue.DescFNext, 9)
			d.Publish(0)
		}},
		{"loop", func(d *virtqueuetest.Driver) {
			d.WriteDesc(dt, 0, 0x100000, 10, virtqueue.DescFNext, 1)
			d.WriteDesc(dt, 1, 0x100000, 10, virtqueue.DescFNext, 0)
			d.Publish(0)
		}},
		{"self loop", func(d *virtqueuetest.Driver) {
			d.WriteDesc(dt, 3, 0x100000, 10, virtqueue.DescFNext, 3)
			d.Publish(3)
		}},
		{"buffer outside memory", func(d *virtqueuetest.Driver) {
			d.WriteDesc(dt, 0, 1<<40, 10, 0, 0)
			d.Publish(0)
		}},
		{"buffer runs past memory end", func(d *virtqueuetest.Driver) {
			d.WriteDesc(dt, 0, uint64(len(d.Mem))-4, 10, 0, 0)
			d.Publish(0)
		}},
		{"readable after writable", func(d *virtqueuetest.Driver) {
			d.WriteDesc(dt, 0, 0x100000, 10, virtqueue.DescFNext|virtqueue.DescFWrite, 1)
			d.WriteDesc(dt, 1, 0x100000, 10, 0, 0)
			d.Publish(0)
		}},
		{"indirect length not multiple of 16", func(d *virtqueuetest.Driver) {
			d.WriteDesc(dt, 0, 0x40000, 24, virtqueue.DescFIndirect, 0)
			d.Publish(0)
		}},
		{"indirect length zero", func(d *virtqueuetest.Driver) {
			d.WriteDesc(dt, 0, 0x40000, 0, virtqueue.DescFIndirect, 0)
			d.Publish(0)
		}},
		{"indirect with next", func(d *virtqueuetest.Driver) {
			d.WriteDesc(dt, 0, 0x40000, 16, virtqueue.DescFIndirect|virtqueue.DescFNext, 1)
			d.Publish(0)
		}},
		{"nested indirect", func(d *virtqueuetest.Driver) {
			d.WriteDesc(0x40000, 0, 0x40000, 16, virtqueue.DescFIndirect, 0)
			d.WriteDesc(dt, 0, 0x40000, 16, virtqueue.DescFIndirect, 0)
			d.Publish(0)
		}},
		{"indirect table outside memory", func(d *virtqueuetest.Driver) {
			d.WriteDesc(dt, 0, 1<<40, 32, virtqueue.DescFIndirect, 0)
			d.Publish(0)
		}},
		{"indirect next out of table", func(d *virtqueuetest.Driver) {
			d.WriteDesc(0x40000, 0, 0x100000, 4, virtqueue.DescFNext, 2)
			d.WriteDesc(0x40000, 1, 0x100000, 4, 0, 0)
			d.WriteDesc(dt, 0, 0x40000, 32, virtqueue.DescFIndirect, 0)
			d.Publish(0)
		}},
		{"indirect loop", func(d *virtqueuetest.Driver) {
			d.WriteDesc(0x40000, 0, 0x100000, 4, virtqueue.DescFNext, 1)
			d.WriteDesc(0x40000, 1, 0x100000, 4, virtqueue.DescFNext, 0)
			d.WriteDesc(dt, 0, 0x40000, 32, virtqueue.DescFIndirect, 0)
			d.Publish(0)
		}},
		{"byte total overflows", func(d *virtqueuetest.Driver) {
			for i := uint16(0); i < 7; i++ {
				d.WriteDesc(dt, i, 0, 0xffffffff, virtqueue.DescFNext, i+1)
			}
			d.WriteDesc(dt, 7, 0, 0xffffffff, 0, 0)
			d.Publish(0)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Memory is large enough that a 4 GiB descriptor cannot be mapped.
			d := virtqueuetest.New(8, 1<<21, 0)
			q := newQueue(t, d, nil)
			tc.build(d)
			q.Pending()
			c := chain(64)
			if err := q.Pop(d.Memory(), c); !errors.Is(err, virtqueue.ErrBroken) {
				t.Fatalf("pop: %v, want ErrBroken", err)
			}
			if q.Err() == nil {
				t.Fatal("queue broke without a reason")
			}
			d.AddChain([]virtqueuetest.Buf{{Data: []byte("ok")}})
			if q.Pending() != 0 || q.Pop(d.Memory(), c) != virtqueue.ErrBroken {
				t.Fatal("broken queue is not sticky")
			}
		})
	}
}

func TestAvailJumpBreaks(t *testing.T) {
	d := virtqueuetest.New(8, 1<<21, 0)
	q := newQueue(t, d, nil)
	d.SetAvailIdx(9)
	if n := q.Pending(); n != 0 || q.Err() == nil {
		t.Fatalf("pending %d err %v: an index 9 ahead of a size-8 ring must break it", n, q.Err())
	}
}

func TestAvailIndexWraps(t *testing.T) {
	d := virtqueuetest.New(8, 1<<21, 0)
	cfg := d.Config()
	d.SetAvailIdx(65534)
	q, err := virtqueue.New(d.Memory(), cfg, 65534)
	if err != nil {
		t.Fatal(err)
	}
	mem := d.Memory()
	c := chain(4)
	for i := 0; i < 20; i++ {
		d.AddChain([]virtqueuetest.Buf{{Data: []byte{byte(i)}}})
		if q.Pending() != 1 {
			t.Fatalf("step %d: pending %d", i, q.Pending())
		}
		if err := q.Pop(mem, c); err != nil || c.Segs[0][0] != byte(i) {
			t.Fatalf("step %d: pop %v", i, err)
		}
		q.PushUsed(c.Head, 0)
		q.Publish()
		d.CollectUsed()
	}
}

func TestNotifySuppression(t *testing.T) {
	d := virtqueuetest.New(8, 1<<21, 0)
	q := newQueue(t, d, nil)
	mem := d.Memory()
	c := chain(4)
	d.AddChain([]virtqueuetest.Buf{{Data: []byte("x")}})
	q.Pending()
	_ = q.Pop(mem, c)
	q.PushUsed(c.Head, 0)
	q.Publish()
	if !q.NeedCall() {
		t.Fatal("no call requested although the driver did not suppress interrupts")
	}
	if q.NeedCall() {
		t.Fatal("second call for the same used index")
	}
	d.SetAvailFlags(virtqueue.AvailFNoInterrupt)
	d.AddChain([]virtqueuetest.Buf{{Data: []byte("x")}})
	q.Pending()
	_ = q.Pop(mem, c)
	q.PushUsed(c.Head, 0)
	q.Publish()
	if q.NeedCall() {
		t.Fatal("call requested despite NO_INTERRUPT")
	}
	q.DisableNotify()
	if d.UsedFlags()&virtqueue.UsedFNoNotify == 0 {
		t.Fatal("NO_NOTIFY not set while polling")
	}
	if q.EnableNotify() {
		t.Fatal("EnableNotify reports work on an empty ring")
	}
	if d.UsedFlags()&virtqueue.UsedFNoNotify != 0 {
		t.Fatal("NO_NOTIFY still set after EnableNotify")
	}
	d.AddChain([]virtqueuetest.Buf{{Data: []byte("x")}})
	if !q.EnableNotify() {
		t.Fatal("EnableNotify missed a pending buffer")
	}
}

func TestEventIdx(t *testing.T) {
	d := virtqueuetest.New(8, 1<<21, 0)
	q := newQueue(t, d, func(c *virtqueue.Config) { c.EventIdx = true })
	mem := d.Memory()
	c := chain(4)
	step := func() bool {
		d.AddChain([]virtqueuetest.Buf{{Data: []byte("x")}})
		q.Pending()
		if err := q.Pop(mem, c); err != nil {
			t.Fatal(err)
		}
		q.PushUsed(c.Head, 0)
		q.Publish()
		d.CollectUsed()
		return q.NeedCall()
	}
	if !step() { // used idx 1, first call always goes out
		t.Fatal("first completion not signalled")
	}
	d.SetUsedEvent(3) // driver wants a call once used idx passes 3
	if step() {       // used idx 2
		t.Fatal("signalled before used_event")
	}
	if step() { // used idx 3
		t.Fatal("signalled before used_event was passed")
	}
	if !step() { // used idx 4: crossed 3
		t.Fatal("not signalled after passing used_event")
	}
	if q.EnableNotify() {
		t.Fatal("work reported on an empty ring")
	}
	if d.AvailEvent() != q.LastAvail() {
		t.Fatalf("avail_event %d, want %d", d.AvailEvent(), q.LastAvail())
	}
}

func TestConfigValidate(t *testing.T) {
	good := virtqueue.Config{Size: 256, Desc: 0x1000, Avail: 0x2002, Used: 0x3004}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []virtqueue.Config{
		{Size: 0, Desc: 0x1000, Avail: 0x2000, Used: 0x3000},
		{Size: 100, Desc: 0x1000, Avail: 0x2000, Used: 0x3000},
		{Size: 256, Desc: 0x1008, Avail: 0x2000, Used: 0x3000},
		{Size: 256, Desc: 0x1000, Avail: 0x2001, Used: 0x3000},
		{Size: 256, Desc: 0x1000, Avail: 0x2000, Used: 0x3002},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestRingOutsideMemory(t *testing.T) {
	d := virtqueuetest.New(8, 1<<21, 0)
	cfg := d.Config()
	cfg.Used = uint64(len(d.Mem)) - 8
	if _, err := virtqueue.New(d.Memory(), cfg, 0); err == nil {
		t.Fatal("used ring past the end of memory accepted")
	}
}

func TestPopAllocatesNothing(t *testing.T) {
	d := virtqueuetest.New(256, 1<<21, 0)
	q := newQueue(t, d, nil)
	mem := d.Memory()
	c := chain(8)
	d.AddIndirect([]virtqueuetest.Buf{{Data: []byte("0123456789")}, {Data: []byte("abcdef")}})
	// Pop the same chain again and again: the mock driver is not measured.
	allocs := testing.AllocsPerRun(1000, func() {
		q.Pending()
		if err := q.Pop(mem, c); err != nil {
			t.Fatal(err)
		}
		q.Unpop(1)
		q.PushUsed(c.Head, 0)
		q.Publish()
		q.NeedCall()
	})
	if allocs != 0 {
		t.Fatalf("device side allocates %.1f times per chain", allocs)
	}
}

// TestNoInterruptBothAlignments checks NO_INTERRUPT is honoured whether the
// available ring starts on a 4-byte boundary (flags read with one atomic
// load of the flags+idx word) or 2 bytes past one (fence, plain load).
func TestNoInterruptBothAlignments(t *testing.T) {
	for _, off := range []uint64{0, 2} {
		d := virtqueuetest.New(8, 1<<21, 0)
		cfg := d.Config()
		// Move the available ring by off bytes: copy nothing, the ring
		// is still empty.
		cfg.Avail += off
		q, err := virtqueue.New(d.Memory(), cfg, 0)
		if err != nil {
			t.Fatal(err)
		}
		mem := d.Memory()
		base := cfg.Avail
		put16 := func(at uint64, v uint16) { d.Mem[at], d.Mem[at+1] = byte(v), byte(v>>8) }
		c := chain(4)
		for i, noInt := range []bool{false, true, false} {
			var flags uint16
			if noInt {
				flags = virtqueue.AvailFNoInterrupt
			}
			put16(base, flags)
			head := uint16(i)
			d.WriteDesc(virtqueuetest.DescBase, head, virtqueuetest.BufBase, 4, 0, 0)
			put16(base+4+2*uint64(i), head)
			put16(base+2, uint16(i+1))
			if q.Pending() != 1 || q.Pop(mem, c) != nil {
				t.Fatalf("off %d step %d: no chain", off, i)
			}
			q.PushUsed(c.Head, 0)
			q.Publish()
			if got := q.NeedCall(); got == noInt {
				t.Fatalf("off %d step %d: NeedCall %v with NO_INTERRUPT %v", off, i, got, noInt)
			}
		}
	}
}

// TestIndirectTableBoundedByQueueSize checks virtio 1.2, 2.7.5.3.1: no
// chain is longer than the queue size, so an indirect table of more
// entries breaks the queue at once, before a single entry is walked. The
// tables are mapped and would be walkable: a 64 MiB one that loops back to
// its start (4 Mi entries: without the bound, the walk's time-to-live was
// the table's length and the poller went round it millions of times before
// calling it a loop) and a 65,536-entry chain that ends properly.
func TestIndirectTableBoundedByQueueSize(t *testing.T) {
	const (
		size  = 256
		table = 0x1000000 // past the mock's rings and buffers
	)
	d := virtqueuetest.New(size, table+64<<20, 0)
	// One write for the whole table: every entry a 4-byte readable buffer
	// chained to the next, the last one back to the first.
	writeTable := func(entries int, loop bool) {
		for i := 0; i < entries; i++ {
			next, flags := uint16(i+1), uint16(virtqueue.DescFNext)
			if i == entries-1 {
				next, flags = 0, 0
				if loop {
					flags = virtqueue.DescFNext
				}
			}
			d.WriteDesc(table, uint16(i), virtqueuetest.BufBase, 4, flags, next)
		}
	}
	cases := []struct {
		name    string
		entries int
		loop    bool
		reason  string // "" for a chain that must pop
	}{
		{"64 MiB looping table", 64 << 20 / 16, true, "indirect table has 4194304 entries, more than the queue size (256)"},
		{"65536-entry chain", 65536, false, "indirect table has 65536 entries, more than the queue size (256)"},
		{"queue size plus one", size + 1, false, "indirect table has 257 entries, more than the queue size (256)"},
		{"queue size, looping", size, true, "descriptor chain longer than its table (loop)"},
		{"queue size", size, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The 4 Mi-entry table writes uint16 indices: entries past
			// 65535 wrap, which only adds more loops.
			writeTable(min(tc.entries, 65536), tc.loop)
			if tc.entries > 65536 {
				for i := 65536; i < tc.entries; i += 65536 {
					copy(d.Mem[table+16*i:table+16*(i+65536)], d.Mem[table:table+16*65536])
				}
			}
			q := newQueue(t, d, nil)
			d.SetAvailIdx(0)
			d.WriteDesc(virtqueuetest.DescBase, 0, table, uint32(16*tc.entries), virtqueue.DescFIndirect, 0)
			d.Publish(0)
			q.Pending()
			c := chain(8)
			err := q.Pop(d.Memory(), c)
			if tc.reason == "" {
				if !errors.Is(err, virtqueue.ErrTooManySegments) || c.ReadLen != 4*size || q.Err() != nil {
					t.Fatalf("a chain of exactly the queue size: pop %v, %d bytes, queue error %v", err, c.ReadLen, q.Err())
				}
				return
			}
			if !errors.Is(err, virtqueue.ErrBroken) {
				t.Fatalf("pop: %v, want ErrBroken", err)
			}
			if q.Err() == nil || q.Err().Error() != tc.reason {
				t.Fatalf("queue broke with %q, want %q", q.Err(), tc.reason)
			}
			if q.Pop(d.Memory(), c) != virtqueue.ErrBroken {
				t.Fatal("broken queue is not sticky")
			}
		})
	}
}
