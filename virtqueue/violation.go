package virtqueue

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/vhostd/vhostd/virtqueue/release"
)

// Direction is which way a queue's buffers go, as the device type defines
// it: a virtio-net transmitq holds buffers the device only reads, a
// receiveq buffers it only writes (virtio 1.2, 5.1.6). The walker reports
// descriptors whose WRITE flag says otherwise.
type Direction uint8

// Directions of a queue.
const (
	AnyDirection Direction = iota // not checked
	DeviceReads                   // the device only reads (transmitq)
	DeviceWrites                  // the device only writes (receiveq)
)

// Violation is a rule of the split ring a driver broke that the queue
// tolerates: it goes on working, counts each occurrence and records the
// first. Rules whose breach leaves the queue unusable break it instead
// (see Broken and BreakSpec).
type Violation uint8

// Violations the queue counts.
const (
	// WritableOnTransmit is a device-writable descriptor in a chain of a
	// queue the device only reads: its buffer is ignored.
	WritableOnTransmit Violation = iota
	// ReadableOnReceive is a device-readable descriptor in a chain of a
	// queue the device only writes: its buffer is skipped.
	ReadableOnReceive
	// AvailFlags is an available ring whose flags are not 0 while
	// EVENT_IDX is negotiated, or neither 0 nor 1 without it. Seen when
	// the device decides whether to call the driver (once per burst).
	AvailFlags
	// NumViolations is the number of kinds.
	NumViolations
)

// String names the violation for scripts ("writable_on_transmit").
func (v Violation) String() string {
	switch v {
	case WritableOnTransmit:
		return "writable_on_transmit"
	case ReadableOnReceive:
		return "readable_on_receive"
	case AvailFlags:
		return "avail_flags"
	}
	return "unknown"
}

// Describe says what the driver did, for a person.
func (v Violation) Describe() string {
	switch v {
	case WritableOnTransmit:
		return "device-writable (VIRTQ_DESC_F_WRITE) descriptor in a chain of a transmit queue; its buffer was ignored"
	case ReadableOnReceive:
		return "device-readable descriptor (no VIRTQ_DESC_F_WRITE) in a chain of a receive queue; its buffer was skipped"
	case AvailFlags:
		return "available ring flags other than the specification allows"
	}
	return "unknown"
}

// Spec is the section of the specification the violation breaks.
func (v Violation) Spec() string {
	switch v {
	case WritableOnTransmit:
		return "virtio 1.2, 5.1.6 (packets are transmitted by placing them in the transmitq) and 2.7.5.1 (a device SHOULD NOT read a device-writable buffer)"
	case ReadableOnReceive:
		return "virtio 1.2, 5.1.6 (buffers for incoming packets are placed in the receiveq) and 2.7.5.1 (a device MUST NOT write to a device-readable buffer)"
	case AvailFlags:
		return "virtio 1.2, 2.7.7.1 (without VIRTIO_F_EVENT_IDX the driver MUST set flags to 0 or 1; with it, to 0)"
	}
	return ""
}

// ViolationRecord is what a queue saw of one kind of violation: how many
// times, and where and when first.
type ViolationRecord struct {
	Count uint64
	First time.Time
	// The first occurrence: the chain's head, the offending descriptor
	// (an index into the chain's indirect table if Indirect) and its
	// flags; for AvailFlags only Flags, the ring's flags, is set.
	Head     uint16
	Desc     uint16
	Indirect bool
	Flags    uint16
}

// violationFirst is the first occurrence of a kind, written once by the
// queue's owner before the count leaves zero (an atomic store, so a
// reader that sees the count sees this too).
type violationFirst struct {
	at       int64 // unix nanoseconds
	head     uint16
	desc     uint16
	flags    uint16
	indirect bool
	walker   bool // a chain-walker break (broke only)
}

// violations is a queue's record of what it tolerated (see Queue.note*)
// and of what broke it. Only the owner writes; any goroutine reads.
type violations struct {
	count [NumViolations]uint64 // stored with release.Store64, loaded atomically
	first [NumViolations]violationFirst
	// broke describes where the walker found the chain that broke the
	// queue, if it did; set before Queue.broken is published.
	broke violationFirst
}

// note counts one violation of kind v, recording the first one. Called
// only on the rare path, by the queue's owner.
//
//go:noinline
func (q *Queue) note(v Violation, head, desc, flags uint16, indirect bool) {
	c := &q.viol.count[v]
	n := *c // the owner's own count
	if n == 0 {
		q.viol.first[v] = violationFirst{at: time.Now().UnixNano(), head: head, desc: desc, flags: flags, indirect: indirect}
	}
	// One writer: a release store, not a locked instruction (a full
	// fence on amd64, which would stall a driver's every bad frame on
	// the burst's stores to guest memory).
	release.Store64(c, n+1)
}

// noteDirection records a descriptor whose WRITE flag contradicts the
// queue's direction.
func (q *Queue) noteDirection(head, desc, flags uint16, indirect bool) {
	v := WritableOnTransmit
	if q.dir == DeviceWrites {
		v = ReadableOnReceive
	}
	q.note(v, head, desc, flags, indirect)
}

// Violations returns what the queue has counted of each kind. Any
// goroutine may call it while the owner runs the queue.
func (q *Queue) Violations() [NumViolations]ViolationRecord {
	var out [NumViolations]ViolationRecord
	for v := range out {
		n := atomic.LoadUint64(&q.viol.count[v])
		if n == 0 {
			continue
		}
		f := q.viol.first[v]
		out[v] = ViolationRecord{Count: n, First: time.Unix(0, f.at), Head: f.head, Desc: f.desc, Indirect: f.indirect, Flags: f.flags}
	}
	return out
}

// BrokenRecord returns why and when the queue broke (err is nil while it
// runs) and, if the chain walker broke it, where: the chain's head and the
// descriptor (walker is then true; rec.Count is 1). Any goroutine may call
// it.
func (q *Queue) BrokenRecord() (err error, rec ViolationRecord, walker bool) {
	p := q.broken.Load()
	if p == nil {
		return nil, ViolationRecord{}, false
	}
	f := q.viol.broke
	rec = ViolationRecord{Count: 1, First: time.Unix(0, f.at), Head: f.head, Desc: f.desc, Indirect: f.indirect, Flags: f.flags}
	return *p, rec, f.walker
}

// breakAt breaks the queue for a rule the walker found broken at
// descriptor desc (of the indirect table if indirect) of the chain at
// head, recording where.
//
//go:noinline
func (q *Queue) breakAt(reason error, head, desc, flags uint16, indirect bool) error {
	if q.err == nil {
		q.viol.broke = violationFirst{head: head, desc: desc, flags: flags, indirect: indirect, walker: true}
	}
	return q.breakWith(reason)
}

// BreakSpec names the section of the specification a driver broke to
// break a queue with err (from Broken or Err), or "" if err is not one of
// the queue's reasons.
func BreakSpec(err error) string {
	var ts *tableSizeError
	if errors.As(err, &ts) {
		return "virtio 1.2, 2.7.5.3.1 (a driver MUST NOT create a descriptor chain longer than the Queue Size of the device)"
	}
	switch err {
	case errAvailJump:
		return "virtio 1.2, 2.7.6 (idx is where the driver puts the next entry, at most Queue Size ahead of the device) and 2.7.6.1 (the driver MUST NOT decrement idx)"
	case errHeadRange, errNextRange:
		return "virtio 1.2, 2.7.5 (descriptor indices, ring entries and next, refer to the table of Queue Size entries)"
	case errLoop:
		return "virtio 1.2, 2.7.5.2 (loops in the descriptor chain are forbidden) and 2.7.5.3.1 (no chain longer than the Queue Size)"
	case errNestedIndirect:
		return "virtio 1.2, 2.7.5.3.1 (the driver MUST NOT set VIRTQ_DESC_F_INDIRECT within an indirect descriptor)"
	case errIndirectNext:
		return "virtio 1.2, 2.7.5.3.1 (a driver MUST NOT set both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT)"
	case errIndirectLen:
		return "virtio 1.2, 2.7.5.3 (an indirect table is len/16 descriptors of 16 bytes)"
	case errIndirectOff:
		return "virtio 1.2, 2.7.5.3.1 (the driver MUST NOT set VIRTQ_DESC_F_INDIRECT unless VIRTIO_F_INDIRECT_DESC was negotiated)"
	case errIndirectMem, errBufferMem:
		return "vhost-user.rst, Memory regions description (every address the rings use lies in the memory table); virtio 1.2, 2.7.5"
	case errReadAfterWrite:
		return "virtio 1.2, 2.7.4.2 (the driver MUST place any device-writable descriptor elements after any device-readable ones)"
	case errPackedID:
		return "virtio 1.2, 2.8.6 (the Buffer ID of an available descriptor is one the driver gave out; vhostd takes ids below the queue size, as every driver uses them)"
	case errPackedOverrun:
		return "virtio 1.2, 2.8.6 and 2.8.13 (a chain's descriptors are all made available together, never more than the queue size outstanding)"
	case errChainTooBig:
		return "virtio 1.2, 2.7.5.2 (drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total)"
	}
	return ""
}
