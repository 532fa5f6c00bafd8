package virtqueue_test

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"unsafe"

	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// inflightRegion returns an 8-byte aligned zeroed region for one queue.
func inflightRegion(size uint16) []byte {
	n := virtqueue.InflightQueueBytes(size)
	b := make([]uint64, n/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), n)
}

func addFrames(d *virtqueuetest.Driver, n int) []uint16 {
	var heads []uint16
	for i := 0; i < n; i++ {
		heads = append(heads, d.AddChain([]virtqueuetest.Buf{{Data: []byte{byte(i), 'x'}}}))
	}
	return heads
}

func TestInflightLayout(t *testing.T) {
	for _, c := range []struct {
		size uint16
		want uint64
	}{{1, 64}, {2, 64}, {4, 128}, {256, 4160}, {32768, 524352}} {
		if got := virtqueue.InflightQueueBytes(c.size); got != c.want {
			t.Errorf("InflightQueueBytes(%d) = %d, want %d", c.size, got, c.want)
		}
	}
}

// A backend takes five chains, returns two, and dies; the next one must
// process the other three again, in order, before new chains.
func TestInflightResubmitAfterCrash(t *testing.T) {
	d := virtqueuetest.New(8, 1<<21, 0)
	mem := d.Memory()
	region := inflightRegion(8)
	q := newQueue(t, d, nil)
	if n, err := q.AttachInflight(region); err != nil || n != 0 {
		t.Fatalf("attach fresh: %d, %v", n, err)
	}
	if v := binary.LittleEndian.Uint16(region[8:]); v != virtqueue.InflightVersion {
		t.Fatalf("version %d after attach", v)
	}
	heads := addFrames(d, 5)
	c := chain(4)
	q.Pending()
	for i := 0; i < 5; i++ {
		if err := q.Pop(mem, c); err != nil || c.Head != heads[i] {
			t.Fatalf("pop %d: head %d, %v", i, c.Head, err)
		}
		if i < 2 {
			q.PushUsed(c.Head, 0)
		}
	}
	q.Publish()
	// The backend dies here: three chains taken, not returned.
	for i, h := range heads {
		got := region[16+16*int(h)]
		if want := byte(0); i >= 2 {
			want = 1
			if got != want {
				t.Fatalf("head %d inflight %d, want %d", h, got, want)
			}
		} else if got != want {
			t.Fatalf("head %d inflight %d, want %d", h, got, want)
		}
	}
	more := addFrames(d, 1)
	// The frontend saw no GET_VRING_BASE; it says base 0 (or anything).
	q2, err := virtqueue.New(mem, d.Config(), 0)
	if err != nil {
		t.Fatal(err)
	}
	n, err := q2.AttachInflight(region)
	if err != nil || n != 3 {
		t.Fatalf("attach after crash: %d, %v", n, err)
	}
	if q2.LastAvail() != 5 {
		t.Fatalf("resumes at avail %d, want 5", q2.LastAvail())
	}
	if p := q2.Pending(); p != 4 {
		t.Fatalf("pending %d, want 3 resubmitted + 1 new", p)
	}
	// Stopped before anything was resubmitted, the queue would resume
	// at the first inflight chain.
	if r := q2.ResumeIndex(); r != 2 {
		t.Fatalf("resume index %d before resubmitting, want 2", r)
	}
	want := append(heads[2:], more...)
	for i, h := range want {
		if err := q2.Pop(mem, c); err != nil || c.Head != h {
			t.Fatalf("pop %d after restart: head %d (%v), want %d", i, c.Head, err, h)
		}
		if c.ReadLen != 2 {
			t.Fatalf("resubmitted chain has %d bytes", c.ReadLen)
		}
		q2.PushUsed(c.Head, 0)
	}
	if r := q2.ResumeIndex(); r != 6 {
		t.Fatalf("resume index %d after resubmitting, want 6", r)
	}
	if err := q2.Pop(mem, c); !errors.Is(err, virtqueue.ErrEmpty) {
		t.Fatalf("extra pop: %v", err)
	}
	q2.Publish()
	if q2.LastAvail() != q2.UsedIdx() || q2.UsedIdx() != 6 {
		t.Fatalf("last avail %d, used %d, want 6 and 6", q2.LastAvail(), q2.UsedIdx())
	}
	for h := 0; h < 8; h++ {
		if region[16+16*h] != 0 {
			t.Fatalf("head %d still inflight after everything was used", h)
		}
	}
	// A clean restart resubmits nothing and resumes at the used index.
	q3, _ := virtqueue.New(mem, d.Config(), 6)
	if n, err := q3.AttachInflight(region); err != nil || n != 0 || q3.LastAvail() != 6 {
		t.Fatalf("clean attach: %d, %v, last avail %d", n, err, q3.LastAvail())
	}
}

// A backend that died after publishing the used index but before clearing
// the batch: recovery clears it from last_batch_head.
func TestInflightBatchRecovery(t *testing.T) {
	d := virtqueuetest.New(8, 1<<21, 0)
	mem := d.Memory()
	region := inflightRegion(8)
	q := newQueue(t, d, nil)
	q.AttachInflight(region)
	heads := addFrames(d, 3)
	c := chain(4)
	q.Pending()
	for range heads {
		q.Pop(mem, c)
		q.PushUsed(c.Head, 0)
	}
	q.Publish()
	// Undo the clears, as if the backend died right after the used
	// index store: marks set, used_idx still 0.
	for _, h := range heads {
		region[16+16*int(h)] = 1
	}
	binary.LittleEndian.PutUint16(region[14:], 0)
	q2, _ := virtqueue.New(mem, d.Config(), 0)
	n, err := q2.AttachInflight(region)
	if err != nil || n != 0 {
		t.Fatalf("attach: %d resubmitted, %v; want 0 (the batch was used)", n, err)
	}
	if q2.LastAvail() != 3 {
		t.Fatalf("last avail %d, want 3", q2.LastAvail())
	}
}

func TestInflightHostileRegion(t *testing.T) {
	d := virtqueuetest.New(8, 1<<21, 0)
	for _, c := range []struct {
		name string
		mod  func([]byte) []byte
		want string
	}{
		{"short", func(b []byte) []byte { return b[:100] }, "needs"},
		{"version", func(b []byte) []byte { b[8] = 7; return b }, "version 7"},
		{"state", func(b []byte) []byte { b[8], b[10], b[16+16*3] = 1, 8, 9; return b }, "want 0 or 1"},
		{"batch head", func(b []byte) []byte { b[8], b[10], b[14], b[15], b[12] = 1, 8, 0xff, 0xff, 9; return b }, "out of range"},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := newQueue(t, d, nil)
			_, err := q.AttachInflight(c.mod(inflightRegion(8)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("attach: %v, want an error saying %q", err, c.want)
			}
		})
	}
}

// A region from before the driver reset its ring (its used index far from
// the ring's) is started afresh: nothing is resubmitted.
func TestInflightStaleRegion(t *testing.T) {
	d := virtqueuetest.New(8, 1<<21, 0)
	for _, c := range []struct {
		name          string
		descNum, used byte
	}{{"used_idx far away", 8, 100}, {"another ring size", 4, 0}} {
		b := inflightRegion(8)
		b[8], b[10], b[14], b[16+16*2] = 1, c.descNum, c.used, 1
		q := newQueue(t, d, nil)
		n, err := q.AttachInflight(b)
		if err != nil || n != 0 || q.LastAvail() != 0 || b[16+16*2] != 0 || b[14] != 0 || b[10] != 8 {
			t.Fatalf("%s: attach: %d, %v, last avail %d, mark %d, used_idx %d, desc_num %d", c.name, n, err, q.LastAvail(), b[16+16*2], b[14], b[10])
		}
	}
}

// A chain given back (Unpop) is no longer inflight; one still held is.
func TestInflightUnpop(t *testing.T) {
	d := virtqueuetest.New(8, 1<<21, 0)
	mem := d.Memory()
	region := inflightRegion(8)
	q := newQueue(t, d, nil)
	if _, err := q.AttachInflight(region); err != nil {
		t.Fatal(err)
	}
	heads := addFrames(d, 2)
	q.Pending()
	c := chain(4)
	for range heads {
		if err := q.Pop(mem, c); err != nil {
			t.Fatal(err)
		}
	}
	q.Unpop(1)
	if region[16+16*int(heads[0])] != 1 || region[16+16*int(heads[1])] != 0 {
		t.Fatalf("marks %d %d after giving back the second chain, want 1 0", region[16+16*int(heads[0])], region[16+16*int(heads[1])])
	}
	if err := q.Pop(mem, c); err != nil || c.Head != heads[1] || region[16+16*int(heads[1])] != 1 {
		t.Fatalf("pop again: head %d (%v), mark %d", c.Head, err, region[16+16*int(heads[1])])
	}
}

// FuzzInflightAttach lets the fuzzer write an inflight region (as a
// hostile frontend could) and the driver's used index, then attaches it
// and drains the queue. Attach may refuse; if it accepts, every chain it
// hands out again must be a valid head, the queue must not break on
// account of the region, and a clean publish must leave nothing inflight.
func FuzzInflightAttach(f *testing.F) {
	healthy := inflightRegion(8)
	healthy[8], healthy[10] = 1, 8
	healthy[16+16*3], healthy[16+16*3+8] = 1, 5
	healthy[16+16*5], healthy[16+16*5+8] = 1, 2
	f.Add(healthy, uint16(0))
	f.Add(inflightRegion(8), uint16(7))
	batch := inflightRegion(8)
	batch[8], batch[10], batch[12], batch[14] = 1, 8, 2, 0
	batch[16+16*2], batch[16+16*2+6] = 1, 4
	batch[16+16*4] = 1
	f.Add(batch, uint16(2))
	f.Fuzz(func(t *testing.T, raw []byte, usedIdx uint16) {
		d := virtqueuetest.New(8, 1<<21, 0)
		for i := 0; i < 8; i++ {
			d.AddChain([]virtqueuetest.Buf{{Data: []byte{byte(i)}}})
		}
		// The driver's used index: where a previous device left it.
		binary.LittleEndian.PutUint16(d.Mem[virtqueuetest.UsedBase+2:], usedIdx)
		d.SetAvailIdx(usedIdx + 8)
		region := inflightRegion(8)
		copy(region, raw)
		q := newQueue(t, d, nil)
		n, err := q.AttachInflight(region)
		if err != nil {
			return
		}
		if n > 8 {
			t.Fatalf("%d chains to resubmit on a queue of 8", n)
		}
		mem := d.Memory()
		c := chain(4)
		q.Pending()
		for i := 0; i < 32; i++ {
			err := q.Pop(mem, c)
			if errors.Is(err, virtqueue.ErrEmpty) || errors.Is(err, virtqueue.ErrBroken) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Head >= 8 {
				t.Fatalf("head %d handed out", c.Head)
			}
			q.PushUsed(c.Head, 0)
		}
		q.Publish()
		if q.Err() == nil {
			for h := 0; h < 8; h++ {
				if region[16+16*h] != 0 {
					t.Fatalf("head %d still inflight after everything taken was used", h)
				}
			}
		}
	})
}
