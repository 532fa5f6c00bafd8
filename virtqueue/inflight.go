package virtqueue

import (
	"encoding/binary"
	"fmt"
	"sort"
	"unsafe"
)

// Inflight I/O tracking for split queues (vhost-user.rst, "Inflight I/O
// tracking"). The frontend keeps a shared region for the backend that
// survives the backend: per queue, a header and one 16-byte state per
// descriptor.
//
//	struct QueueRegionSplit {            struct DescStateSplit {
//	    u64 features;                        u8  inflight;
//	    u16 version;                         u8  padding[5];
//	    u16 desc_num;                        u16 next;
//	    u16 last_batch_head;                 u64 counter;
//	    u16 used_idx;                    };
//	    DescStateSplit desc[desc_num];
//	};
//
// The device marks a head inflight (with a rising counter) when it takes
// the chain from the available ring, and clears it once the used index
// that returns the chain is published; the chains of one publish form a
// batch linked through next from last_batch_head, so a backend that died
// between publishing the used index and clearing the batch can finish the
// job (used_idx records the used index the clears were done for). On
// reconnect, the chains still marked are processed again, oldest first,
// before any new one.
const (
	inflightHeader   = 16
	inflightDescSize = 16
	// InflightVersion is the region version vhostd writes and accepts.
	InflightVersion = 1
	// inflightAlign is the alignment of each queue's part of the region
	// (libvhost-user and DPDK align it to 64 bytes as well).
	inflightAlign = 64
)

// InflightQueueBytes is the size of one queue's part of an inflight region
// for queues of up to size descriptors.
func InflightQueueBytes(size uint16) uint64 {
	return (inflightHeader + inflightDescSize*uint64(size) + inflightAlign - 1) &^ (inflightAlign - 1)
}

// inflight is a queue's inflight tracking state.
type inflight struct {
	region  []byte         // the queue's part of the shared region
	desc    unsafe.Pointer // &region[inflightHeader]
	counter uint64         // last counter written
	// resubmit holds the heads found inflight at attach, oldest first;
	// Pop takes resubmit[resubNext:] before any new chain.
	resubmit  []uint16
	resubNext int
}

// AttachInflight makes the queue record its chains in region, the queue's
// part of a frontend's inflight region (at least InflightQueueBytes of the
// queue size), and recovers what a previous backend left there. It must
// be called before the data path runs the queue, and region must stay
// mapped while it does.
//
// A zeroed region (version 0, as GET_INFLIGHT_FD hands it out) is
// initialised and the queue starts at the base it was created with. A
// region written before holds the truth of the previous run: the queue
// resumes at the driver's used index plus the chains still inflight
// (those are the chains taken but never returned, as this device returns
// chains in the order it takes them), and Pop hands out the inflight
// chains again, oldest first. It returns how many chains will be
// resubmitted.
//
// A region written for a ring of another size, or whose used_idx lies
// more than the queue size away from the used ring's index, tracked an
// earlier life of the ring (the driver reset it since) and is started
// afresh.
//
// The region is written by the frontend too, so everything in it is
// checked: a bad version, size, state, head or batch link is an error and
// the queue must not run.
func (q *Queue) AttachInflight(region []byte) (int, error) {
	if q.err != nil {
		return 0, q.err
	}
	need := InflightQueueBytes(q.size)
	if uint64(len(region)) < need {
		return 0, fmt.Errorf("inflight region of %d bytes, a queue of %d needs %d", len(region), q.size, need)
	}
	if uintptr(unsafe.Pointer(&region[0]))%8 != 0 {
		return 0, fmt.Errorf("inflight region not 8-byte aligned")
	}
	region = region[:need]
	in := &inflight{region: region, desc: unsafe.Pointer(&region[inflightHeader])}
	version := binary.LittleEndian.Uint16(region[8:])
	used := uint16(q.usedIdx)
	fresh := func() (int, error) {
		clear(region)
		binary.LittleEndian.PutUint16(region[10:], q.size)
		binary.LittleEndian.PutUint16(region[14:], used)
		binary.LittleEndian.PutUint16(region[8:], InflightVersion)
		q.infl = in
		return 0, nil
	}
	switch version {
	case 0:
		// Fresh: nothing was ever tracked here.
		return fresh()
	case InflightVersion:
	default:
		return 0, fmt.Errorf("inflight region version %d, want %d", version, InflightVersion)
	}
	if n := binary.LittleEndian.Uint16(region[10:]); n != q.size {
		// Written for a ring of another size: the driver laid the ring
		// out anew since, and nothing in the region applies.
		return fresh()
	}
	// Finish a batch whose used index was published but not cleared
	// (vhost-user.rst, split queue recovery, step 1).
	if old := binary.LittleEndian.Uint16(region[14:]); old != used {
		n := used - old
		if n > q.size {
			// No batch is larger than the queue: the region speaks of
			// another life of the ring (the driver reset it, and its
			// used index started again). Nothing in it applies.
			return fresh()
		}
		head := binary.LittleEndian.Uint16(region[12:])
		for i := uint16(0); i < n; i++ {
			if head >= q.size {
				return 0, fmt.Errorf("inflight batch list reaches head %d, out of range", head)
			}
			d := region[inflightHeader+inflightDescSize*uint32(head):]
			d[0] = 0
			head = binary.LittleEndian.Uint16(d[6:])
		}
		binary.LittleEndian.PutUint16(region[14:], used)
	}
	// Step 2: collect what is still inflight, in the order it was taken.
	type entry struct {
		head    uint16
		counter uint64
	}
	var es []entry
	for h := uint16(0); h < q.size; h++ {
		d := region[inflightHeader+inflightDescSize*uint32(h):]
		switch d[0] {
		case 0:
		case 1:
			c := binary.LittleEndian.Uint64(d[8:])
			es = append(es, entry{h, c})
			in.counter = max(in.counter, c)
		default:
			return 0, fmt.Errorf("inflight state of head %d is %d, want 0 or 1", h, d[0])
		}
	}
	sort.Slice(es, func(i, j int) bool { return es[i].counter < es[j].counter })
	in.resubmit = make([]uint16, len(es))
	for i, e := range es {
		in.resubmit[i] = e.head
	}
	q.infl = in
	// Every chain before used was returned; the inflight ones follow it
	// in the available ring.
	q.lastAvail = used + uint16(len(es))
	q.availCache = q.loadAvailIdx()
	return len(es), nil
}

// mark records head as taken. head < q.size.
func (in *inflight) mark(head uint16) {
	in.counter++
	d := unsafe.Add(in.desc, uintptr(head)*inflightDescSize)
	*(*uint64)(unsafe.Add(d, 8)) = in.counter
	*(*uint8)(d) = 1
}

// unmark clears head's inflight state. head < q.size.
func (in *inflight) unmark(head uint16) {
	*(*uint8)(unsafe.Add(in.desc, uintptr(head)*inflightDescSize)) = 0
}

// inflightBatch links the batch of used entries [q.published, q.usedIdx)
// and records its head: the part of a publish that comes before the used
// index is stored. The heads are read back from the used ring, which the
// driver could overwrite; an out-of-range one is left out (the driver then
// only misleads its own recovery).
func (q *Queue) inflightBatch() {
	in := q.infl
	var first, prev uint16
	have := false
	for i := q.published; i != q.usedIdx; i++ {
		h := uint16(*(*uint32)(unsafe.Add(q.usedBase, 4+usedElemSize*uintptr(i&q.mask))))
		if h >= q.size {
			continue
		}
		if !have {
			first, have = h, true
		} else {
			*(*uint16)(unsafe.Add(in.desc, uintptr(prev)*inflightDescSize+6)) = h
		}
		prev = h
	}
	if have {
		*(*uint16)(unsafe.Add(unsafe.Pointer(&in.region[0]), 12)) = first
	}
}

// inflightDone clears the batch just published and records the used index
// it was cleared for.
func (q *Queue) inflightDone(from uint16) {
	in := q.infl
	for i := from; i != q.usedIdx; i++ {
		h := uint16(*(*uint32)(unsafe.Add(q.usedBase, 4+usedElemSize*uintptr(i&q.mask))))
		if h < q.size {
			in.unmark(h)
		}
	}
	*(*uint16)(unsafe.Add(unsafe.Pointer(&in.region[0]), 14)) = q.usedIdx
}

// ResumeIndex is the avail index a device taking over the queue resumes
// from, the value GET_VRING_BASE reports: LastAvail, less the inflight
// chains not yet handed out again. Those follow the used index in the
// available ring (this device returns chains in the order it takes them,
// and hands them out again in that order), so a frontend that resumes
// without the inflight region still gets them processed.
func (q *Queue) ResumeIndex() uint16 {
	if in := q.infl; in != nil {
		return q.lastAvail - uint16(len(in.resubmit)-in.resubNext)
	}
	return q.lastAvail
}
