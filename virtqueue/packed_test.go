package virtqueue_test

import (
	"errors"
	"fmt"
	"math/rand"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

func newPacked(t testing.TB, d *virtqueuetest.PackedDriver, mod func(*virtqueue.PackedConfig)) *virtqueue.PackedQueue {
	t.Helper()
	cfg := d.Config()
	if mod != nil {
		mod(&cfg)
	}
	q, err := virtqueue.NewPacked(d.Memory(), cfg, virtqueue.PackedFreshBase)
	if err != nil {
		t.Fatalf("new packed queue: %v", err)
	}
	return q
}

func TestPackedDirectChain(t *testing.T) {
	d := virtqueuetest.NewPacked(8, 1<<22, 0)
	q := newPacked(t, d, nil)
	id := d.AddChain([]virtqueuetest.Buf{{Data: []byte("hdr")}, {Data: []byte("payload")}, {Write: true, WriteLen: 100}})
	if n := q.Pending(); n != 3 {
		t.Fatalf("pending %d, want 3 (descriptors)", n)
	}
	mem := d.Memory()
	c := chain(8)
	if err := q.Pop(mem, c); err != nil {
		t.Fatalf("pop: %v", err)
	}
	if c.Head != id || c.NRead != 2 || len(c.Segs) != 3 || c.ReadLen != 10 || c.WriteLen != 100 {
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
	if u := d.CollectUsed(); len(u) != 0 {
		t.Fatalf("used visible before Publish: %+v", u)
	}
	q.Publish()
	used := d.CollectUsed()
	if len(used) != 1 || used[0].ID != id || used[0].Len != 5 || used[0].Pos != 0 {
		t.Fatalf("used = %+v", used)
	}
	if got := d.Read(d.SlotAddr(2), 5); string(got) != "reply" {
		t.Fatalf("device write landed as %q", got)
	}
	// The used position skipped the chain's three slots.
	if b, want := q.RingBase(), virtqueue.PackedBase(3, true, 3, true); b != want {
		t.Fatalf("ring base %#x, want %#x", b, want)
	}
	if q.LastAvail() != 1 || q.UsedIdx() != 1 {
		t.Fatalf("chain counters %d/%d", q.LastAvail(), q.UsedIdx())
	}
}

func TestPackedIndirectChain(t *testing.T) {
	d := virtqueuetest.NewPacked(8, 1<<22, 0x100000000)
	q := newPacked(t, d, nil)
	id := d.AddIndirect([]virtqueuetest.Buf{{Data: []byte("abc")}, {Data: []byte("def")}, {Write: true, WriteLen: 7}})
	d.AddChain([]virtqueuetest.Buf{{Data: []byte("next")}})
	q.Pending()
	c := chain(8)
	mem := d.Memory()
	if err := q.Pop(mem, c); err != nil {
		t.Fatalf("pop: %v", err)
	}
	if c.Head != id || string(joined(c, 0, c.NRead)) != "abcdef" || c.WriteLen != 7 {
		t.Fatalf("indirect chain id %d read %q write %d", c.Head, joined(c, 0, c.NRead), c.WriteLen)
	}
	q.PushUsed(c.Head, 7)
	if err := q.Pop(mem, c); err != nil || string(c.Segs[0]) != "next" {
		t.Fatalf("chain after an indirect one: %v", err)
	}
	q.PushUsed(c.Head, 0)
	q.Publish()
	if u := d.CollectUsed(); len(u) != 2 || u[0].Pos != 0 || u[1].Pos != 1 {
		t.Fatalf("used = %+v", u)
	}
}

func TestPackedIndirectRefusedWhenNotNegotiated(t *testing.T) {
	d := virtqueuetest.NewPacked(8, 1<<22, 0)
	q := newPacked(t, d, func(c *virtqueue.PackedConfig) { c.Indirect = false })
	d.AddIndirect([]virtqueuetest.Buf{{Data: []byte("abc")}})
	q.Pending()
	if err := q.Pop(d.Memory(), chain(4)); !errors.Is(err, virtqueue.ErrBroken) {
		t.Fatalf("pop: %v, want ErrBroken", err)
	}
}

// TestPackedLaps runs chains of one to four descriptors, direct and
// indirect, through rings of odd sizes for several laps, pushing in
// batches of varying size, and checks every chain's bytes, id and used
// length on the driver's side and the ring base against the driver's
// positions.
func TestPackedLaps(t *testing.T) {
	for _, size := range []uint16{1, 3, 5, 7, 100, 257} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(size)))
			d := virtqueuetest.NewPacked(size, 1<<22, 0)
			q := newPacked(t, d, nil)
			mem := d.Memory()
			c := chain(8)
			want := map[uint16]string{}
			var order []uint16
			chains := 0
			for chains < 12*int(size)+20 {
				// Post until the ring is full or a random stop.
				for d.Free() > 0 && rng.Intn(4) != 0 {
					n := 1 + rng.Intn(min(4, d.Free()))
					payload := fmt.Sprintf("chain %d", chains)
					var id uint16
					if n == 1 && size >= 3 && rng.Intn(2) == 0 {
						id = d.AddIndirect([]virtqueuetest.Buf{{Data: []byte(payload[:3])}, {Data: []byte(payload[3:])}, {Write: true, WriteLen: 16}})
					} else {
						bufs := []virtqueuetest.Buf{{Data: []byte(payload)}}
						for i := 1; i < n; i++ {
							bufs = append(bufs, virtqueuetest.Buf{Write: true, WriteLen: 8})
						}
						id = d.AddChain(bufs)
					}
					want[id] = payload
					order = append(order, id)
					chains++
				}
				q.Pending()
				popped := 0
				for {
					err := q.Pop(mem, c)
					if errors.Is(err, virtqueue.ErrEmpty) {
						break
					}
					if err != nil {
						t.Fatalf("pop: %v (%v)", err, q.Err())
					}
					if got := string(joined(c, 0, c.NRead)); got != want[c.Head] {
						t.Fatalf("chain id %d holds %q, want %q", c.Head, got, want[c.Head])
					}
					q.PushUsed(c.Head, c.WriteLen)
					popped++
					if rng.Intn(3) == 0 {
						q.Publish()
					}
				}
				q.Publish()
				for _, u := range d.CollectUsed() {
					if len(order) == 0 || u.ID != order[0] {
						t.Fatalf("used id %d out of order (want %v)", u.ID, order[:1])
					}
					order = order[1:]
				}
				if len(order) != 0 {
					t.Fatalf("%d chains not returned", len(order))
				}
				ap, aw := d.AvailPos()
				if b, want := q.RingBase(), virtqueue.PackedBase(ap, aw, ap, aw); b != want {
					t.Fatalf("ring base %#x, driver at %#x", b, want)
				}
			}
			if q.Err() != nil {
				t.Fatal(q.Err())
			}
		})
	}
}

// TestPackedBatchOrder checks that a batch of used descriptors goes out
// at Publish, whole: before it the driver sees nothing (the slots are
// untouched), after it every descriptor, each at the slot after the
// previous chain's. A driver goroutine polling the batch's first slot
// checks that once it reads that one as used, the later ones are too
// (their stores come first, the first one's flags last with release).
func TestPackedBatchOrder(t *testing.T) {
	for iter := 0; iter < 50; iter++ {
		d := virtqueuetest.NewPacked(8, 1<<22, 0)
		q := newPacked(t, d, nil)
		mem := d.Memory()
		ids := []uint16{
			d.AddChain([]virtqueuetest.Buf{{Data: []byte("a")}, {Data: []byte("b")}}),
			d.AddChain([]virtqueuetest.Buf{{Data: []byte("c")}}),
			d.AddChain([]virtqueuetest.Buf{{Data: []byte("d")}}),
		}
		q.Pending()
		c := chain(4)
		for i := range ids {
			if err := q.Pop(mem, c); err != nil || c.Head != ids[i] {
				t.Fatalf("pop %d: %v id %d", i, err, c.Head)
			}
			q.PushUsed(c.Head, uint32(10+i))
		}
		word := func(pos int) *uint32 {
			return (*uint32)(unsafe.Pointer(&d.Mem[virtqueuetest.PackedDescBase+16*pos+12]))
		}
		used := uint32(virtqueue.PackedDescFAvail|virtqueue.PackedDescFUsed) << 16
		if iter == 0 {
			if u := d.CollectUsed(); len(u) != 0 {
				t.Fatalf("driver saw %+v before Publish", u)
			}
			q.Publish()
			u := d.CollectUsed()
			if len(u) != 3 || u[0].Pos != 0 || u[1].Pos != 2 || u[2].Pos != 3 || u[2].Len != 12 {
				t.Fatalf("used = %+v", u)
			}
			continue
		}
		seen, ready := make(chan error), make(chan struct{})
		go func() {
			close(ready)
			for atomic.LoadUint32(word(0))&used != used {
			}
			if atomic.LoadUint32(word(2))&used != used || atomic.LoadUint32(word(3))&used != used {
				seen <- fmt.Errorf("first used descriptor visible before the later ones")
				return
			}
			seen <- nil
		}()
		<-ready
		q.Publish()
		if err := <-seen; err != nil {
			t.Fatal(err)
		}
	}
}

func TestPackedUnpop(t *testing.T) {
	d := virtqueuetest.NewPacked(7, 1<<22, 0)
	q := newPacked(t, d, nil)
	mem := d.Memory()
	var ids []uint16
	for i := 0; i < 3; i++ {
		ids = append(ids, d.AddChain([]virtqueuetest.Buf{{Data: []byte{byte(i)}}, {Write: true, WriteLen: 4}}))
	}
	q.Pending()
	c := chain(4)
	for i := 0; i < 3; i++ {
		if err := q.Pop(mem, c); err != nil {
			t.Fatal(err)
		}
	}
	q.Unpop(2)
	if q.LastAvail() != 1 {
		t.Fatalf("popped %d after unpop", q.LastAvail())
	}
	for i := 1; i < 3; i++ {
		if err := q.Pop(mem, c); err != nil || c.Head != ids[i] || c.Segs[0][0] != byte(i) {
			t.Fatalf("re-pop %d: %v id %d", i, err, c.Head)
		}
	}
	for _, id := range ids {
		q.PushUsed(id, 4)
	}
	q.Publish()
	if u := d.CollectUsed(); len(u) != 3 || u[2].Pos != 4 {
		t.Fatalf("used = %+v", u)
	}
}

func TestPackedTooManySegments(t *testing.T) {
	d := virtqueuetest.NewPacked(8, 1<<22, 0)
	q := newPacked(t, d, nil)
	d.AddChain([]virtqueuetest.Buf{{Data: []byte("a")}, {Data: []byte("b")}, {Data: []byte("c")}})
	d.AddChain([]virtqueuetest.Buf{{Data: []byte("d")}})
	q.Pending()
	c := chain(2)
	if err := q.Pop(d.Memory(), c); !errors.Is(err, virtqueue.ErrTooManySegments) {
		t.Fatalf("pop: %v, want ErrTooManySegments", err)
	}
	q.PushUsed(c.Head, 0)
	if err := q.Pop(d.Memory(), c); err != nil || string(c.Segs[0]) != "d" {
		t.Fatalf("queue not usable after a long chain: %v", err)
	}
}

// TestPackedMalformed builds each kind of hostile ring and checks that the
// queue breaks, stickily, with the reason, instead of panicking or reading
// out of bounds.
func TestPackedMalformed(t *testing.T) {
	const (
		size  = 8
		table = virtqueuetest.PackedTableBase
		buf   = virtqueuetest.PackedBufBase
	)
	av := virtqueuetest.AvailFlags(true)
	next := uint16(virtqueue.DescFNext)
	ind := uint16(virtqueue.DescFIndirect)
	cases := []struct {
		name   string
		reason string
		build  func(d *virtqueuetest.PackedDriver)
	}{
		{"id out of range", "packed buffer id out of range", func(d *virtqueuetest.PackedDriver) {
			d.WriteRaw(0, buf, 10, size, av)
		}},
		{"id out of range at chain end", "packed buffer id out of range", func(d *virtqueuetest.PackedDriver) {
			d.WriteRaw(1, buf, 10, 0xffff, av)
			d.WriteRaw(0, buf, 10, 0, av|next)
		}},
		{"buffer outside memory", "descriptor buffer not in guest memory", func(d *virtqueuetest.PackedDriver) {
			d.WriteRaw(0, 1<<40, 10, 0, av)
		}},
		{"buffer runs past memory end", "descriptor buffer not in guest memory", func(d *virtqueuetest.PackedDriver) {
			d.WriteRaw(0, uint64(len(d.Mem))-4, 10, 0, av)
		}},
		{"readable after writable", "device-readable descriptor after a device-writable one", func(d *virtqueuetest.PackedDriver) {
			d.WriteRaw(1, buf, 10, 0, av)
			d.WriteRaw(0, buf, 10, 0, av|next|virtqueue.DescFWrite)
		}},
		{"chain longer than the ring", "descriptor chain longer than its table (loop)", func(d *virtqueuetest.PackedDriver) {
			// Every slot continues, with the flags of both laps: the
			// walk would go round forever.
			for i := uint16(0); i < size; i++ {
				d.WriteRaw(i, buf, 4, 0, av|next)
			}
		}},
		{"chain into slots still out", "packed chain reaches past the descriptors the driver may have made available", func(d *virtqueuetest.PackedDriver) {
			d.AddChain([]virtqueuetest.Buf{{Data: []byte("x")}, {Data: []byte("y")}, {Data: []byte("z")}})
			for i := uint16(3); i < size; i++ {
				d.WriteRaw(i, buf, 4, 0, av|next)
			}
		}},
		{"indirect length not multiple of 16", "indirect table length not a non-zero multiple of 16", func(d *virtqueuetest.PackedDriver) {
			d.WriteRaw(0, table, 24, 0, av|ind)
		}},
		{"indirect length zero", "indirect table length not a non-zero multiple of 16", func(d *virtqueuetest.PackedDriver) {
			d.WriteRaw(0, table, 0, 0, av|ind)
		}},
		{"indirect table larger than the queue", "indirect table has 9 entries, more than the queue size (8)", func(d *virtqueuetest.PackedDriver) {
			for i := 0; i < 9; i++ {
				d.WriteTable(table, i, buf, 4, 0)
			}
			d.WriteRaw(0, table, 9*16, 0, av|ind)
		}},
		{"indirect with next", "indirect descriptor with NEXT flag", func(d *virtqueuetest.PackedDriver) {
			d.WriteRaw(1, buf, 4, 0, av)
			d.WriteRaw(0, table, 16, 0, av|ind|next)
		}},
		{"nested indirect", "nested indirect descriptor table", func(d *virtqueuetest.PackedDriver) {
			d.WriteTable(table, 0, table, 16, ind)
			d.WriteRaw(0, table, 16, 0, av|ind)
		}},
		{"indirect table outside memory", "indirect table not in guest memory", func(d *virtqueuetest.PackedDriver) {
			d.WriteRaw(0, 1<<40, 32, 0, av|ind)
		}},
		{"indirect buffer outside memory", "descriptor buffer not in guest memory", func(d *virtqueuetest.PackedDriver) {
			d.WriteTable(table, 0, buf, 4, 0)
			d.WriteTable(table, 1, 1<<40, 4, 0)
			d.WriteRaw(0, table, 32, 0, av|ind)
		}},
		{"indirect id out of range", "packed buffer id out of range", func(d *virtqueuetest.PackedDriver) {
			d.WriteTable(table, 0, buf, 4, 0)
			d.WriteRaw(0, table, 16, 9, av|ind)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := virtqueuetest.NewPacked(size, 1<<22, 0)
			q := newPacked(t, d, nil)
			tc.build(d)
			q.Pending()
			c := chain(64)
			mem := d.Memory()
			var err error
			for i := 0; i < 3 && err == nil; i++ {
				err = q.Pop(mem, c) // the hostile chain may follow good ones
			}
			if !errors.Is(err, virtqueue.ErrBroken) {
				t.Fatalf("pop: %v, want ErrBroken", err)
			}
			if q.Err() == nil || q.Err().Error() != tc.reason {
				t.Fatalf("broke with %q, want %q", q.Err(), tc.reason)
			}
			if q.Broken() != q.Err() {
				t.Fatal("Broken and Err disagree")
			}
			if q.Pending() != 0 || q.Pop(mem, c) != virtqueue.ErrBroken || q.EnableNotify() {
				t.Fatal("broken queue is not sticky")
			}
		})
	}
}

// TestPackedChainTooBig checks a chain whose byte total passes 2^32: an
// indirect table of 1025 entries each covering all 4 MiB of memory.
func TestPackedChainTooBig(t *testing.T) {
	d := virtqueuetest.NewPacked(2048, 1<<22, 0)
	q := newPacked(t, d, nil)
	for i := 0; i < 1025; i++ {
		d.WriteTable(virtqueuetest.PackedTableBase, i, 0, 1<<22, 0)
	}
	d.WriteRaw(0, virtqueuetest.PackedTableBase, 1025*16, 0, virtqueue.DescFIndirect|virtqueuetest.AvailFlags(true))
	q.Pending()
	if err := q.Pop(d.Memory(), chain(8)); !errors.Is(err, virtqueue.ErrBroken) || q.Err().Error() != "chain byte total overflows 32 bits" {
		t.Fatalf("pop: %v (%v)", err, q.Err())
	}
}

// TestPackedStaleSlotsNotAvailable checks the availability test against
// each combination of AVAIL and USED in both laps.
func TestPackedStaleSlotsNotAvailable(t *testing.T) {
	for _, tc := range []struct {
		flags uint16
		avail bool
	}{
		{0, false},
		{virtqueue.PackedDescFAvail, true},
		{virtqueue.PackedDescFUsed, false},
		{virtqueue.PackedDescFAvail | virtqueue.PackedDescFUsed, false},
	} {
		d := virtqueuetest.NewPacked(4, 1<<22, 0)
		q := newPacked(t, d, nil)
		d.WriteRaw(0, virtqueuetest.PackedBufBase, 4, 0, tc.flags)
		if got := q.Pending() > 0; got != tc.avail {
			t.Errorf("flags %#x: available %v, want %v", tc.flags, got, tc.avail)
		}
	}
}

func TestPackedEventSuppressionDriver(t *testing.T) {
	for _, eventIdx := range []bool{false, true} {
		d := virtqueuetest.NewPacked(5, 1<<22, 0)
		q := newPacked(t, d, func(c *virtqueue.PackedConfig) { c.EventIdx = eventIdx })
		mem := d.Memory()
		c := chain(4)
		round := func() bool {
			d.AddChain([]virtqueuetest.Buf{{Data: []byte("x")}})
			q.Pending()
			if err := q.Pop(mem, c); err != nil {
				t.Fatal(err)
			}
			q.PushUsed(c.Head, 0)
			q.Publish()
			call := q.NeedCall()
			d.CollectUsed()
			return call
		}
		d.SetDriverEvent(virtqueue.EventFlagEnable, 0, false)
		if !round() || !round() {
			t.Fatalf("event idx %v: ENABLE did not call", eventIdx)
		}
		if q.NeedCall() {
			t.Fatal("NeedCall true with nothing new published")
		}
		d.SetDriverEvent(virtqueue.EventFlagDisable, 0, false)
		if round() || round() {
			t.Fatalf("event idx %v: DISABLE called", eventIdx)
		}
		// DESC: call when the used descriptor at (pos, wrap) is
		// written; the ring has 5 slots, so this goes past a wrap.
		for i := 0; i < 6; i++ {
			pos, wrap := d.UsedPos()
			// Ask for the one after next.
			p, w := pos+1, wrap
			if p == 5 {
				p, w = 0, !w
			}
			d.SetDriverEvent(virtqueue.EventFlagDesc, p, w)
			first, second := round(), round()
			if !eventIdx {
				if !first || !second {
					t.Fatal("DESC without EVENT_IDX must read as ENABLE")
				}
				continue
			}
			if first || !second {
				t.Fatalf("step %d: DESC at %d/%v: calls %v %v, want false true", i, p, w, first, second)
			}
		}
	}
}

func TestPackedEventSuppressionDevice(t *testing.T) {
	for _, eventIdx := range []bool{false, true} {
		d := virtqueuetest.NewPacked(3, 1<<22, 0)
		q := newPacked(t, d, func(c *virtqueue.PackedConfig) { c.EventIdx = eventIdx })
		mem := d.Memory()
		c := chain(4)
		q.DisableNotify()
		if f, _, _ := d.DeviceEvent(); f != virtqueue.EventFlagDisable {
			t.Fatalf("flags %d after DisableNotify", f)
		}
		p, w := d.AvailPos()
		d.AddChain([]virtqueuetest.Buf{{Data: []byte("x")}})
		if d.NeedKick(p, w) {
			t.Fatal("driver kicks while notifications are disabled")
		}
		if !q.EnableNotify() {
			t.Fatal("EnableNotify missed the pending chain")
		}
		q.Pop(mem, c)
		q.PushUsed(c.Head, 0)
		q.Publish()
		d.CollectUsed()
		// Go round the 3-slot ring twice: every new buffer is kicked.
		for i := 0; i < 6; i++ {
			if q.EnableNotify() {
				t.Fatalf("step %d: pending with an empty ring", i)
			}
			flags, pos, wrap := d.DeviceEvent()
			ap, aw := d.AvailPos()
			if eventIdx && (flags != virtqueue.EventFlagDesc || pos != ap || wrap != aw) {
				t.Fatalf("step %d: device event %d %d/%v, want DESC at %d/%v", i, flags, pos, wrap, ap, aw)
			}
			if !eventIdx && flags != virtqueue.EventFlagEnable {
				t.Fatalf("step %d: flags %d, want ENABLE", i, flags)
			}
			d.AddChain([]virtqueuetest.Buf{{Data: []byte("x")}})
			if !d.NeedKick(ap, aw) {
				t.Fatalf("step %d: driver would not kick", i)
			}
			if q.Pending() != 1 || q.Pop(mem, c) != nil {
				t.Fatal("no chain")
			}
			q.PushUsed(c.Head, 0)
			q.Publish()
			d.CollectUsed()
		}
	}
}

func TestPackedRingBase(t *testing.T) {
	if b := virtqueue.PackedBase(5, true, 3, false); b != 5|1<<15|3<<16 {
		t.Fatalf("PackedBase = %#x", b)
	}
	const size = 7
	for start := 0; start < 3*size; start++ {
		d := virtqueuetest.NewPacked(size, 1<<22, 0)
		d.Skip(start)
		ap, aw := d.AvailPos()
		base := virtqueue.PackedBase(ap, aw, ap, aw)
		q, err := virtqueue.NewPacked(d.Memory(), d.Config(), base)
		if err != nil {
			t.Fatal(err)
		}
		if q.RingBase() != base {
			t.Fatalf("start %d: base %#x round-trips as %#x", start, base, q.RingBase())
		}
		// Only the low half, as DPDK and vhost-user.rst send it: used
		// follows avail.
		q2, err := virtqueue.NewPacked(d.Memory(), d.Config(), base&0xffff)
		if err != nil || (q2.RingBase() != base && base>>16 != 0) {
			t.Fatalf("start %d: low half %#x gives %#x (%v)", start, base&0xffff, q2.RingBase(), err)
		}
		// The queue resumes exactly where the driver is: run chains
		// across the wrap, then hand over to a new queue from RingBase.
		mem := d.Memory()
		c := chain(4)
		for i := 0; i < 2*size; i++ {
			id := d.AddChain([]virtqueuetest.Buf{{Data: []byte{byte(i)}}, {Write: true, WriteLen: 4}})
			if q.Pending() != 2 || q.Pop(mem, c) != nil || c.Head != id || c.Segs[0][0] != byte(i) {
				t.Fatalf("start %d step %d: no chain (%v)", start, i, q.Err())
			}
			q.PushUsed(c.Head, 1)
			q.Publish()
			if u := d.CollectUsed(); len(u) != 1 || u[0].ID != id {
				t.Fatalf("start %d step %d: used %+v", start, i, u)
			}
			if i == size {
				q, err = virtqueue.NewPacked(mem, d.Config(), q.RingBase())
				if err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	d := virtqueuetest.NewPacked(size, 1<<22, 0)
	for _, bad := range []uint32{
		virtqueue.PackedBase(size, true, 0, true),   // avail beyond the ring
		virtqueue.PackedBase(0, true, size+1, true), // used beyond the ring
		virtqueue.PackedBase(1, false, 0, true),     // avail more than a lap past used
	} {
		if _, err := virtqueue.NewPacked(d.Memory(), d.Config(), bad); err == nil {
			t.Errorf("base %#x accepted", bad)
		}
	}
}

func TestPackedConfigValidate(t *testing.T) {
	ok := virtqueue.PackedConfig{Size: 3, Desc: 0x1000, Driver: 0x2004, Device: 0x3008}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []virtqueue.PackedConfig{
		{Size: 0, Desc: 0x1000, Driver: 0x2000, Device: 0x3000},
		{Size: 32769, Desc: 0x1000, Driver: 0x2000, Device: 0x3000},
		{Size: 8, Desc: 0x1008, Driver: 0x2000, Device: 0x3000},
		{Size: 8, Desc: 0x1000, Driver: 0x2002, Device: 0x3000},
		{Size: 8, Desc: 0x1000, Driver: 0x2000, Device: 0x3001},
	} {
		if c.Validate() == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	d := virtqueuetest.NewPacked(32768, 1<<22, 0)
	if _, err := virtqueue.NewPacked(d.Memory(), d.Config(), virtqueue.PackedFreshBase); err != nil {
		t.Fatalf("largest queue refused: %v", err)
	}
	cfg := d.Config()
	cfg.Device = uint64(len(d.Mem)) - 2
	if _, err := virtqueue.NewPacked(d.Memory(), cfg, virtqueue.PackedFreshBase); err == nil {
		t.Fatal("device area past the end of memory accepted")
	}
	cfg = d.Config()
	cfg.Desc = uint64(len(d.Mem)) - 16*100
	if _, err := virtqueue.NewPacked(d.Memory(), cfg, virtqueue.PackedFreshBase); err == nil {
		t.Fatal("descriptor ring past the end of memory accepted")
	}
}

// TestPackedDirtyLog checks that every write the packed queue makes into
// guest memory is marked: used descriptors (also across the ring's end),
// the device event area, and the buffers reported with LogWritten.
func TestPackedDirtyLog(t *testing.T) {
	const size = 300 // 4800 bytes of ring: two pages
	d := virtqueuetest.NewPacked(size, 1<<22, 0)
	q := newPacked(t, d, func(c *virtqueue.PackedConfig) { c.EventIdx = true })
	logMem := make([]byte, (1<<22)/guestmem.LogPageSize/8)
	log := guestmem.LogFromBytes(logMem)
	q.SetLog(log)
	if !q.Logging() {
		t.Fatal("not logging")
	}
	mem := d.Memory()
	c := &virtqueue.Chain{Segs: make([][]byte, 0, 4), GPAs: make([]uint64, 0, 4)}
	page := func(gpa uint64) uint64 { return gpa / guestmem.LogPageSize }
	q.EnableNotify()
	wantPages(t, "device event", logMem, page(virtqueuetest.PackedDeviceBase))
	clear(logMem)
	// 290 one-slot chains, then a batch crossing the ring's end.
	for i := 0; i < 290; i++ {
		d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 8}})
		q.Pending()
		q.Pop(mem, c)
		q.PushUsed(c.Head, 0)
		q.Publish()
		d.CollectUsed()
	}
	clear(logMem)
	var bufs []uint64
	for i := 0; i < 20; i++ {
		d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 8}})
	}
	q.Pending()
	for i := 0; i < 20; i++ {
		if err := q.Pop(mem, c); err != nil {
			t.Fatal(err)
		}
		copy(c.Segs[0], "written!")
		q.PushUsed(c.Head, 8)
		q.LogWritten(c, 8)
		bufs = append(bufs, page(c.GPAs[0]))
	}
	q.Publish()
	// Slots 290..299 lie in the ring's second page, 0..9 in its first.
	want := []uint64{page(virtqueuetest.PackedDescBase), page(virtqueuetest.PackedDescBase + 16*299)}
	for _, b := range bufs {
		want = append(want, b)
	}
	wantPages(t, "used across the end and buffers", logMem, dedup(want)...)
	if log.MissedWrites() != 0 {
		t.Fatalf("%d writes missed", log.MissedWrites())
	}
}

func dedup(v []uint64) []uint64 {
	seen := map[uint64]bool{}
	var out []uint64
	for _, x := range v {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

func TestPackedBacklog(t *testing.T) {
	d := virtqueuetest.NewPacked(5, 1<<22, 0)
	q := newPacked(t, d, nil)
	mem := d.Memory()
	d.AddChain([]virtqueuetest.Buf{{Data: []byte("a")}, {Data: []byte("b")}})
	d.AddChain([]virtqueuetest.Buf{{Data: []byte("c")}})
	if a, u := q.Backlog(); a-u != 3 {
		t.Fatalf("backlog %d-%d, want 3 slots", a, u)
	}
	c := chain(4)
	q.Pending()
	q.Pop(mem, c)
	q.PushUsed(c.Head, 0)
	q.Pop(mem, c)
	q.PushUsed(c.Head, 0)
	if a, u := q.Backlog(); a-u != 3 {
		t.Fatalf("backlog before publish %d-%d, want 3", a, u)
	}
	q.Publish()
	d.CollectUsed()
	if a, u := q.Backlog(); a-u != 0 || u != 3 {
		t.Fatalf("backlog after publish %d-%d, want 0 at 3", a, u)
	}
	// Round the ring's end.
	for i := 0; i < 4; i++ {
		d.AddChain([]virtqueuetest.Buf{{Data: []byte("d")}})
	}
	if a, u := q.Backlog(); a-u != 4 {
		t.Fatalf("backlog across the end %d-%d, want 4", a, u)
	}
}

func TestPackedAllocatesNothing(t *testing.T) {
	d := virtqueuetest.NewPacked(256, 1<<22, 0)
	q := newPacked(t, d, nil)
	mem := d.Memory()
	c := &virtqueue.Chain{Segs: make([][]byte, 0, 8), GPAs: make([]uint64, 0, 8)}
	for i := 0; i < 256; i++ {
		d.AddChain([]virtqueuetest.Buf{{Data: []byte("0123456789")}})
	}
	allocs := testing.AllocsPerRun(1000, func() {
		q.Pending()
		if err := q.Pop(mem, c); err != nil {
			t.Fatal(err)
		}
		q.PushUsed(c.Head, 0)
		q.Publish()
		q.NeedCall()
		d.Recycle()
	})
	if allocs != 0 {
		t.Fatalf("packed device side allocates %.1f times per chain", allocs)
	}
}

// TestPackedEventInsideChain checks DESC at a slot no used descriptor is
// written to (the second slot of a three-slot chain, as Linux's delayed
// callbacks can ask for): the call comes when the used position passes
// it, and not before.
func TestPackedEventInsideChain(t *testing.T) {
	d := virtqueuetest.NewPacked(8, 1<<22, 0)
	q := newPacked(t, d, func(c *virtqueue.PackedConfig) { c.EventIdx = true })
	mem := d.Memory()
	c := chain(4)
	one := func(n int) bool {
		bufs := make([]virtqueuetest.Buf, n)
		for i := range bufs {
			bufs[i] = virtqueuetest.Buf{Data: []byte("x")}
		}
		d.AddChain(bufs)
		q.Pending()
		if err := q.Pop(mem, c); err != nil {
			t.Fatal(err)
		}
		q.PushUsed(c.Head, 0)
		q.Publish()
		d.CollectUsed()
		return q.NeedCall()
	}
	d.SetDriverEvent(virtqueue.EventFlagDesc, 0, true)
	if !one(1) { // slot 0: the event slot itself
		t.Fatal("no call for the event slot")
	}
	d.SetDriverEvent(virtqueue.EventFlagDesc, 5, true)
	if one(1) { // slot 1
		t.Fatal("call before the event slot")
	}
	if one(3) { // slots 2-4: not yet 5
		t.Fatal("call for a chain ending before the event slot")
	}
	if !one(3) { // slots 5-7: 5 lies inside
		t.Fatal("no call for a chain covering the event slot")
	}
	// Wrapped: slot 1 of the next lap (wrap counter 0).
	d.SetDriverEvent(virtqueue.EventFlagDesc, 1, false)
	if one(1) { // slot 0, lap 2
		t.Fatal("call before the wrapped event slot")
	}
	if !one(2) { // slots 1-2, lap 2
		t.Fatal("no call at the wrapped event slot")
	}
}

// TestPackedPendingBounded has a hostile driver flip every slot between
// available in one lap and in the next while the device scans: the scan
// never counts more than the ring holds, nor runs forever.
func TestPackedPendingBounded(t *testing.T) {
	const size = 16
	d := virtqueuetest.NewPacked(size, 1<<22, 0)
	q := newPacked(t, d, nil)
	stop, done, ready := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		close(ready)
		words := make([]*uint32, size)
		for i := range words {
			words[i] = (*uint32)(unsafe.Pointer(&d.Mem[virtqueuetest.PackedDescBase+16*i+12]))
		}
		for flip := uint32(0); ; flip ^= 1 {
			select {
			case <-stop:
				return
			default:
			}
			f := uint32(virtqueuetest.AvailFlags(flip == 0)) << 16
			for _, w := range words {
				atomic.StoreUint32(w, f)
			}
		}
	}()
	<-ready
	for start := time.Now(); time.Since(start) < 200*time.Millisecond; {
		if n := q.Pending(); n > size {
			close(stop)
			<-done
			t.Fatalf("pending %d in a ring of %d", n, size)
		}
	}
	close(stop)
	<-done
}

// TestPackedOverMemfd runs a packed ring in memfd memory mapped twice, as
// a frontend and vhostd each map it: the driver's writes reach the
// device through the backend's own mapping and back.
func TestPackedOverMemfd(t *testing.T) {
	m, err := virtqueuetest.NewMemfd(1 << 22)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	d := virtqueuetest.NewPackedOn(m.Mem, 5, 0)
	mem, err := m.Map(0)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Unmap()
	q, err := virtqueue.NewPacked(mem, d.Config(), virtqueue.PackedFreshBase)
	if err != nil {
		t.Fatal(err)
	}
	c := chain(4)
	for i := 0; i < 12; i++ {
		ap, _ := d.AvailPos()
		id := d.AddChain([]virtqueuetest.Buf{{Data: []byte{byte(i)}}, {Write: true, WriteLen: 4}})
		if q.Pending() != 2 || q.Pop(mem, c) != nil || c.Head != id || c.Segs[0][0] != byte(i) {
			t.Fatalf("step %d: chain not seen through the second mapping (%v)", i, q.Err())
		}
		c.Segs[1][0] = byte(i) + 100
		if got := d.Read(d.SlotAddr((ap+1)%5), 1)[0]; got != byte(i)+100 {
			t.Fatalf("step %d: the driver reads %d where the device wrote %d", i, got, byte(i)+100)
		}
		q.PushUsed(c.Head, 1)
		q.Publish()
		if u := d.CollectUsed(); len(u) != 1 || u[0].ID != id || u[0].Len != 1 {
			t.Fatalf("step %d: used %+v", i, u)
		}
	}
}

// TestPackedDirectThenIndirect checks a chain of direct descriptors that
// ends in an indirect one: the buffer id is the indirect descriptor's
// (the last in the ring), the chain takes its three ring slots, and the
// table's buffers follow the direct ones.
func TestPackedDirectThenIndirect(t *testing.T) {
	const table = virtqueuetest.PackedTableBase
	d := virtqueuetest.NewPacked(8, 1<<22, 0)
	q := newPacked(t, d, nil)
	av := virtqueuetest.AvailFlags(true)
	buf := uint64(virtqueuetest.PackedBufBase)
	copy(d.Mem[buf:], "abcdefgh")
	d.WriteTable(table, 0, buf+4, 2, 0)
	d.WriteTable(table, 1, buf+6, 2, virtqueue.DescFWrite)
	d.WriteRaw(2, table, 32, 5, av|virtqueue.DescFIndirect)
	d.WriteRaw(1, buf+2, 2, 0, av|virtqueue.DescFNext)
	d.WriteRaw(0, buf, 2, 0, av|virtqueue.DescFNext)
	q.Pending()
	c := chain(8)
	if err := q.Pop(d.Memory(), c); err != nil {
		t.Fatalf("pop: %v (%v)", err, q.Err())
	}
	if c.Head != 5 || string(joined(c, 0, c.NRead)) != "abcdef" || c.WriteLen != 2 {
		t.Fatalf("chain id %d read %q write %d", c.Head, joined(c, 0, c.NRead), c.WriteLen)
	}
	q.PushUsed(c.Head, 2)
	q.Publish()
	if b := q.RingBase(); b != virtqueue.PackedBase(3, true, 3, true) {
		t.Fatalf("ring base %#x after a three-slot chain", b)
	}
}

// TestPackedEventOddValues checks the driver event values a driver must
// not write are read so that no call it waits for is lost: the reserved
// flags value 3, and DESC at a slot beyond the ring.
func TestPackedEventOddValues(t *testing.T) {
	d := virtqueuetest.NewPacked(4, 1<<22, 0)
	q := newPacked(t, d, func(c *virtqueue.PackedConfig) { c.EventIdx = true })
	mem := d.Memory()
	c := chain(4)
	for i, set := range []func(){
		func() { d.SetDriverEvent(3, 0, true) },
		func() { d.SetDriverEvent(virtqueue.EventFlagDesc, 100, true) },
	} {
		set()
		for j := 0; j < 2; j++ {
			d.AddChain([]virtqueuetest.Buf{{Data: []byte("x")}})
			q.Pending()
			if err := q.Pop(mem, c); err != nil {
				t.Fatal(err)
			}
			q.PushUsed(c.Head, 0)
			q.Publish()
			d.CollectUsed()
			if !q.NeedCall() {
				t.Fatalf("case %d round %d: no call", i, j)
			}
		}
	}
}
