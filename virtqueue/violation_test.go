package virtqueue_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

func withDir(dir virtqueue.Direction) func(*virtqueue.Config) {
	return func(c *virtqueue.Config) { c.Dir = dir }
}

// popAll pops every pending chain and returns the errors.
func popAll(t *testing.T, q *virtqueue.Queue, d *virtqueuetest.Driver) []error {
	t.Helper()
	var errs []error
	c := chain(8)
	for n := q.Pending(); n > 0; n-- {
		errs = append(errs, q.Pop(d.Memory(), c))
	}
	return errs
}

// Descriptors whose WRITE flag goes against the queue's direction are
// counted, with the first one recorded, and the chains still taken: on
// the fast path (one descriptor), in a direct chain and in an indirect
// table.
func TestDirectionViolations(t *testing.T) {
	hdr := make([]byte, 12)
	for _, c := range []struct {
		name     string
		dir      virtqueue.Direction
		add      func(d *virtqueuetest.Driver) uint16
		kind     virtqueue.Violation
		desc     uint16
		indirect bool
		flags    uint16
	}{
		{"writable alone on transmit", virtqueue.DeviceReads, func(d *virtqueuetest.Driver) uint16 {
			return d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 64}})
		}, virtqueue.WritableOnTransmit, 0, false, virtqueue.DescFWrite},
		{"writable data in a transmit chain", virtqueue.DeviceReads, func(d *virtqueuetest.Driver) uint16 {
			return d.AddChain([]virtqueuetest.Buf{{Data: hdr}, {Data: []byte("frame"), Flags: virtqueue.DescFWrite}})
		}, virtqueue.WritableOnTransmit, 1, false, virtqueue.DescFWrite},
		{"writable in a transmit indirect table", virtqueue.DeviceReads, func(d *virtqueuetest.Driver) uint16 {
			return d.AddIndirect([]virtqueuetest.Buf{{Data: hdr}, {Write: true, WriteLen: 64}})
		}, virtqueue.WritableOnTransmit, 1, true, virtqueue.DescFWrite},
		{"readable alone on receive", virtqueue.DeviceWrites, func(d *virtqueuetest.Driver) uint16 {
			return d.AddChain([]virtqueuetest.Buf{{Data: make([]byte, 64)}})
		}, virtqueue.ReadableOnReceive, 0, false, 0},
		{"readable before writable on receive", virtqueue.DeviceWrites, func(d *virtqueuetest.Driver) uint16 {
			return d.AddChain([]virtqueuetest.Buf{{Data: hdr}, {Write: true, WriteLen: 2048}})
		}, virtqueue.ReadableOnReceive, 0, false, virtqueue.DescFNext},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := virtqueuetest.New(8, 1<<21, 0)
			q := newQueue(t, d, withDir(c.dir))
			before := time.Now()
			head := c.add(d)
			for _, err := range popAll(t, q, d) {
				if err != nil {
					t.Fatalf("pop: %v (a tolerated violation must not break the queue)", err)
				}
			}
			v := q.Violations()
			r := v[c.kind]
			if r.Count != 1 || r.Head != head || r.Desc != c.desc || r.Indirect != c.indirect || r.Flags != c.flags {
				t.Errorf("%v recorded as %+v, want one at head %d desc %d indirect %v flags %#x", c.kind, r, head, c.desc, c.indirect, c.flags)
			}
			if r.First.Before(before) || r.First.After(time.Now()) {
				t.Errorf("first seen at %v, not during the test", r.First)
			}
			for k := range v {
				if virtqueue.Violation(k) != c.kind && v[k].Count != 0 {
					t.Errorf("%v counted too: %+v", virtqueue.Violation(k), v[k])
				}
			}
			// Counted each time, the first kept.
			c.add(d)
			popAll(t, q, d)
			if r2 := q.Violations()[c.kind]; r2.Count != 2 || r2.Head != head || !r2.First.Equal(r.First) {
				t.Errorf("after a second: %+v, want count 2 and the first kept (%+v)", r2, r)
			}
			if q.Err() != nil {
				t.Errorf("queue broken: %v", q.Err())
			}
		})
	}
}

// Well-formed chains of the queue's direction, and any chain on a queue
// of no direction, count nothing; nor does a WRITE flag on the descriptor
// naming an indirect table, which the device must ignore (2.7.5.3.2).
func TestNoViolationsForWellFormedChains(t *testing.T) {
	for _, c := range []struct {
		dir virtqueue.Direction
		add func(d *virtqueuetest.Driver)
	}{
		{virtqueue.DeviceReads, func(d *virtqueuetest.Driver) {
			d.AddChain([]virtqueuetest.Buf{{Data: make([]byte, 60)}})
			d.AddChain([]virtqueuetest.Buf{{Data: make([]byte, 12)}, {Data: make([]byte, 60)}})
			d.AddIndirectFlags([]virtqueuetest.Buf{{Data: make([]byte, 12)}, {Data: make([]byte, 60)}}, virtqueue.DescFWrite)
		}},
		{virtqueue.DeviceWrites, func(d *virtqueuetest.Driver) {
			d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
			d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 12}, {Write: true, WriteLen: 2048}})
			d.AddIndirectFlags([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}}, virtqueue.DescFWrite)
		}},
		{virtqueue.AnyDirection, func(d *virtqueuetest.Driver) {
			d.AddChain([]virtqueuetest.Buf{{Data: make([]byte, 60)}, {Write: true, WriteLen: 2048}})
			d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 64}})
		}},
	} {
		d := virtqueuetest.New(8, 1<<21, 0)
		q := newQueue(t, d, withDir(c.dir))
		c.add(d)
		for _, err := range popAll(t, q, d) {
			if err != nil {
				t.Fatalf("direction %d: pop: %v", c.dir, err)
			}
		}
		if v := q.Violations(); v != ([virtqueue.NumViolations]virtqueue.ViolationRecord{}) {
			t.Errorf("direction %d: counted %+v", c.dir, v)
		}
	}
}

// Chains the walker refuses break the queue with a reason whose section
// BreakSpec names, and the record says where in the chain it was.
func TestRefusedChainsRecorded(t *testing.T) {
	for _, c := range []struct {
		name     string
		add      func(d *virtqueuetest.Driver) uint16
		reason   string
		spec     string
		desc     uint16
		indirect bool
		flags    uint16
	}{
		{"indirect with next", func(d *virtqueuetest.Driver) uint16 {
			return d.AddIndirectFlags([]virtqueuetest.Buf{{Data: make([]byte, 60)}}, virtqueue.DescFNext)
		}, "indirect descriptor with NEXT flag", "2.7.5.3.1 (a driver MUST NOT set both", 0, false, virtqueue.DescFIndirect | virtqueue.DescFNext},
		{"nested indirect", func(d *virtqueuetest.Driver) uint16 {
			return d.AddIndirect([]virtqueuetest.Buf{{Data: make([]byte, 12)}, {Data: make([]byte, 32), Flags: virtqueue.DescFIndirect}})
		}, "nested indirect descriptor table", "2.7.5.3.1 (the driver MUST NOT set VIRTQ_DESC_F_INDIRECT within", 1, true, virtqueue.DescFIndirect},
		{"readable after writable", func(d *virtqueuetest.Driver) uint16 {
			return d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 64}, {Data: make([]byte, 12)}})
		}, "device-readable descriptor after a device-writable one", "2.7.4.2", 1, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := virtqueuetest.New(8, 1<<21, 0)
			q := newQueue(t, d, nil)
			head := c.add(d)
			if errs := popAll(t, q, d); len(errs) != 1 || !errors.Is(errs[0], virtqueue.ErrBroken) {
				t.Fatalf("pop: %v, want ErrBroken", errs)
			}
			err, rec, walker := q.BrokenRecord()
			if err == nil || err.Error() != c.reason || !walker {
				t.Fatalf("broken: %v (walker %v), want %q", err, walker, c.reason)
			}
			if spec := virtqueue.BreakSpec(err); !strings.Contains(spec, c.spec) {
				t.Errorf("section %q, want %q", spec, c.spec)
			}
			if rec.Head != head || rec.Desc != c.desc || rec.Indirect != c.indirect || rec.Flags != c.flags || rec.First.IsZero() {
				t.Errorf("record %+v, want head %d desc %d indirect %v flags %#x", rec, head, c.desc, c.indirect, c.flags)
			}
		})
	}
	// Breaks outside the walker have a section too, and no chain.
	d := virtqueuetest.New(8, 1<<21, 0)
	q := newQueue(t, d, nil)
	d.SetAvailIdx(100)
	q.Pending()
	err, _, walker := q.BrokenRecord()
	if err == nil || walker || !strings.Contains(virtqueue.BreakSpec(err), "2.7.6") {
		t.Errorf("avail jump: %v walker %v section %q", err, walker, virtqueue.BreakSpec(err))
	}
}

// Available ring flags: with EVENT_IDX anything but 0 is counted, without
// it anything but 0 and 1, when the device decides whether to call.
func TestAvailFlagsViolations(t *testing.T) {
	for _, c := range []struct {
		eventIdx bool
		flags    uint16
		bad      bool
	}{
		{false, 0, false}, {false, 1, false}, {false, 2, true}, {false, 0x8001, true},
		{true, 0, false}, {true, 1, true}, {true, 4, true},
	} {
		d := virtqueuetest.New(8, 1<<21, 0)
		q := newQueue(t, d, func(cfg *virtqueue.Config) { cfg.EventIdx = c.eventIdx })
		d.SetAvailFlags(c.flags)
		d.AddChain([]virtqueuetest.Buf{{Data: make([]byte, 60)}})
		popAll(t, q, d)
		q.PushUsed(0, 0)
		q.Publish()
		q.NeedCall()
		r := q.Violations()[virtqueue.AvailFlags]
		if got := r.Count != 0; got != c.bad {
			t.Errorf("event_idx %v flags %#x: counted %d, want bad=%v", c.eventIdx, c.flags, r.Count, c.bad)
		}
		if c.bad && r.Flags != c.flags {
			t.Errorf("event_idx %v: recorded flags %#x, want %#x", c.eventIdx, r.Flags, c.flags)
		}
	}
}

// Violations may be read from another goroutine while the owner counts
// (run with -race).
func TestViolationsReadConcurrently(t *testing.T) {
	d := virtqueuetest.New(256, 1<<22, 0)
	q := newQueue(t, d, withDir(virtqueue.DeviceReads))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				if r := q.Violations()[virtqueue.WritableOnTransmit]; r.Count > 0 && r.First.IsZero() {
					t.Error("count seen without its first occurrence")
					return
				}
			}
		}
	}()
	c := chain(8)
	for i := 0; i < 200; i++ {
		d.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 64}})
		q.Pending()
		if err := q.Pop(d.Memory(), c); err != nil {
			t.Fatal(err)
		}
		q.PushUsed(c.Head, 0)
		q.Publish()
		d.CollectUsed()
	}
	close(stop)
	wg.Wait()
	if n := q.Violations()[virtqueue.WritableOnTransmit].Count; n != 200 {
		t.Errorf("counted %d, want 200", n)
	}
}

// Counting a violation allocates nothing either, first occurrence
// included: a misbehaving driver does not make the data path allocate.
func TestViolationsAllocateNothing(t *testing.T) {
	d := virtqueuetest.New(256, 1<<21, 0)
	q := newQueue(t, d, func(cfg *virtqueue.Config) { cfg.Dir = virtqueue.DeviceReads; cfg.EventIdx = true })
	mem := d.Memory()
	c := chain(8)
	d.SetAvailFlags(1)
	d.AddIndirect([]virtqueuetest.Buf{{Data: make([]byte, 12)}, {Write: true, WriteLen: 64}})
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
		t.Fatalf("counting violations allocates %.1f times per chain", allocs)
	}
	v := q.Violations()
	if v[virtqueue.WritableOnTransmit].Count < 1000 || v[virtqueue.AvailFlags].Count == 0 {
		t.Fatalf("not counted: %+v", v)
	}
}
