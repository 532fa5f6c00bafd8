// Package virtqueue processes virtqueues living in guest memory, from the
// device side: split ones (virtio 1.2, section 2.7) with Queue, packed
// ones (section 2.8) with PackedQueue, both with the data-path method set
// Ring describes.
//
// A Queue holds the ring pointers and the device's private indices. It is
// not safe for concurrent use: one poller owns a running queue, and the
// control path touches it only once the data path has let go of it.
package virtqueue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/vhostd/vhostd/virtqueue/release"
	"time"
	"unsafe"

	"github.com/vhostd/vhostd/virtqueue/guestmem"
	"github.com/vhostd/vhostd/virtqueue/prefetch"
)

// Descriptor and ring flags from the virtio specification.
const (
	DescFNext     = 1 // VIRTQ_DESC_F_NEXT: the chain continues at Next
	DescFWrite    = 2 // VIRTQ_DESC_F_WRITE: the buffer is device-writable
	DescFIndirect = 4 // VIRTQ_DESC_F_INDIRECT: the buffer is a descriptor table

	AvailFNoInterrupt = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT: driver asks for no call
	UsedFNoNotify     = 1 // VIRTQ_USED_F_NO_NOTIFY: device asks for no kick

	// MaxSize is the largest split queue size the specification allows.
	MaxSize      = 32768
	descSize     = 16
	usedElemSize = 8
)

// Errors returned by the data path. They are sentinels: returning them
// allocates nothing.
var (
	// ErrEmpty means the driver has made no more buffers available.
	ErrEmpty = errors.New("no available buffers")
	// ErrTooManySegments means a well-formed chain had more segments than
	// the caller's buffer holds; the chain is consumed and must be returned
	// with PushUsed.
	ErrTooManySegments = errors.New("chain has too many segments")
	// ErrBroken means the queue was marked broken earlier; see Err.
	ErrBroken = errors.New("queue is broken")
)

// Reasons a queue breaks. Each is the text of the log line the owner prints
// once when it sees the queue break.
var (
	errAvailJump      = errors.New("avail index moved more than the queue size")
	errHeadRange      = errors.New("descriptor head index out of range")
	errNextRange      = errors.New("descriptor next index out of range")
	errLoop           = errors.New("descriptor chain longer than its table (loop)")
	errNestedIndirect = errors.New("nested indirect descriptor table")
	errIndirectNext   = errors.New("indirect descriptor with NEXT flag")
	errIndirectLen    = errors.New("indirect table length not a non-zero multiple of 16")
	errIndirectMem    = errors.New("indirect table not in guest memory")
	errIndirectOff    = errors.New("indirect descriptor without negotiated RING_INDIRECT_DESC")
	errBufferMem      = errors.New("descriptor buffer not in guest memory")
	errReadAfterWrite = errors.New("device-readable descriptor after a device-writable one")
	errChainTooBig    = errors.New("chain byte total overflows 32 bits")
)

// tableSizeError breaks a queue whose driver hands over an indirect table
// of more entries than the queue size. It lives in the Queue (see
// Queue.tableErr) so that breaking with it, numbers included, allocates
// nothing.
type tableSizeError struct {
	entries uint32
	size    uint16
}

func (e *tableSizeError) Error() string {
	return fmt.Sprintf("indirect table has %d entries, more than the queue size (%d)", e.entries, e.size)
}

// Config is what the frontend set up for one ring: its size and the
// guest-physical addresses of its three parts, plus the negotiated features
// that change how the ring is read.
type Config struct {
	Size     uint16 // number of descriptors, a power of two
	Desc     uint64 // guest-physical address of the descriptor table
	Avail    uint64 // guest-physical address of the available ring
	Used     uint64 // guest-physical address of the used ring
	EventIdx bool   // VIRTIO_F_RING_EVENT_IDX negotiated
	Indirect bool   // VIRTIO_F_RING_INDIRECT_DESC negotiated
	// Dir is the way the queue's buffers go, if the device type says:
	// descriptors against it are counted (see Violations), not refused.
	Dir Direction
}

// Ring sizes in bytes, per the specification (with the event-index field,
// which is always accounted for so enabling EVENT_IDX needs no re-check).
func descBytes(size uint16) uint64  { return uint64(size) * descSize }
func availBytes(size uint16) uint64 { return 6 + 2*uint64(size) }
func usedBytes(size uint16) uint64  { return 6 + usedElemSize*uint64(size) }

// Validate checks the size and alignment rules of the specification
// (section 2.7: descriptor table 16, available ring 2, used ring 4).
func (c Config) Validate() error {
	if c.Size == 0 || c.Size&(c.Size-1) != 0 {
		return fmt.Errorf("queue size %d is not a power of two", c.Size)
	}
	if c.Desc%16 != 0 {
		return fmt.Errorf("descriptor table address %#x is not 16-byte aligned", c.Desc)
	}
	if c.Avail%2 != 0 {
		return fmt.Errorf("available ring address %#x is not 2-byte aligned", c.Avail)
	}
	if c.Used%4 != 0 {
		return fmt.Errorf("used ring address %#x is not 4-byte aligned", c.Used)
	}
	return nil
}

// Queue is the device side of one split virtqueue.
type Queue struct {
	size uint16
	mask uint16
	// Views of the three ring parts in guest memory, exactly sized.
	desc  []byte
	avail []byte
	used  []byte

	// Base pointers of the three parts, for the hot reads and writes
	// whose offsets are in range by construction (an index masked to the
	// ring size, or a head already checked against it); the slices above
	// keep the memory alive and serve the checked slow paths.
	descBase  unsafe.Pointer
	availBase unsafe.Pointer
	usedBase  unsafe.Pointer

	availIdx   *uint32 // 32-bit aligned word holding avail->idx
	availShift uint32  // 0 or 16: where idx sits in that word
	usedWord   *uint32 // used->flags | used->idx<<16

	eventIdx bool
	indirect bool

	// The chain fast path takes a descriptor whose flags, XORed with
	// dirWant and masked with fastMask, are zero: no NEXT, no INDIRECT,
	// and a WRITE flag that fits the queue's direction, so checking the
	// direction costs the fast path one XOR. (They fill the padding
	// before infl: the hot fields keep their cache lines.)
	dir      Direction
	dirWant  uint16
	fastMask uint16

	// infl, when set, records the chains taken and not yet returned in
	// the frontend's inflight region (see inflight.go).
	infl *inflight

	// log, when set, is the dirty-page log every write into guest memory
	// is marked in, and usedLog the guest-physical address the used ring
	// is logged at (see SetLog and dirty.go).
	log     *guestmem.Log
	usedLog uint64

	lastAvail  uint16 // next available-ring slot to read
	availCache uint16 // avail->idx as last read
	usedIdx    uint16 // next used-ring slot to write
	usedFlags  uint16 // flags we publish with the used index
	published  uint16 // used index as last published
	signalled  uint16 // used index at the last call (event-idx)
	sigValid   bool

	fence    uint32         // target of the atomic that acts as a full barrier
	err      error          // sticky reason the queue broke
	tableErr tableSizeError // err points here for an oversized indirect table
	// broken points at brokenErr, a copy of err, for readers on other
	// goroutines (status reports): the owner sets them once, and reads
	// only err. A field, so that breaking allocates nothing.
	broken    atomic.Pointer[error]
	brokenErr error

	// viol counts what the driver did wrong that the queue tolerates
	// (violation.go). Written only on the rare path.
	viol violations
	// dirMask is the WRITE bit when the direction is checked (the slow
	// walk's test). availBad are the available ring flags the driver
	// must not set (2.7.7.1): all with EVENT_IDX, all but NO_INTERRUPT
	// without.
	dirMask  uint16
	availBad uint16
}

// New builds a queue over mem from cfg, starting at lastAvail (the
// frontend's SET_VRING_BASE). The used index is read from guest memory, as
// the driver may have reset or resumed the ring.
func New(mem *guestmem.Memory, cfg Config, lastAvail uint16) (*Queue, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	desc, err := mem.Slice(cfg.Desc, descBytes(cfg.Size))
	if err != nil {
		return nil, fmt.Errorf("descriptor table %#x+%#x: %w", cfg.Desc, descBytes(cfg.Size), err)
	}
	avail, err := mem.Slice(cfg.Avail, availBytes(cfg.Size))
	if err != nil {
		return nil, fmt.Errorf("available ring %#x+%#x: %w", cfg.Avail, availBytes(cfg.Size), err)
	}
	used, err := mem.Slice(cfg.Used, usedBytes(cfg.Size))
	if err != nil {
		return nil, fmt.Errorf("used ring %#x+%#x: %w", cfg.Used, usedBytes(cfg.Size), err)
	}
	q := &Queue{
		size: cfg.Size, mask: cfg.Size - 1,
		desc: desc, avail: avail, used: used,
		eventIdx: cfg.EventIdx, indirect: cfg.Indirect,
		lastAvail: lastAvail,
		dir:       cfg.Dir,
		fastMask:  DescFNext | DescFIndirect,
		availBad:  ^uint16(AvailFNoInterrupt),
	}
	if cfg.EventIdx {
		q.availBad = 0xffff
	}
	if cfg.Dir != AnyDirection {
		q.dirMask = DescFWrite
		q.fastMask |= DescFWrite
		if cfg.Dir == DeviceWrites {
			q.dirWant = DescFWrite
		}
	}
	// Host addresses, not guest ones, decide atomic alignment: a region's
	// mapping need not share the guest's alignment.
	if uintptr(unsafe.Pointer(&used[0]))%4 != 0 {
		return nil, fmt.Errorf("used ring %#x is not 4-byte aligned in this process", cfg.Used)
	}
	q.usedWord = (*uint32)(unsafe.Pointer(&used[0]))
	q.descBase = unsafe.Pointer(&desc[0])
	q.availBase = unsafe.Pointer(&avail[0])
	q.usedBase = unsafe.Pointer(&used[0])
	if p := uintptr(unsafe.Pointer(&avail[2])); p%4 == 0 {
		q.availIdx = (*uint32)(unsafe.Pointer(&avail[2]))
	} else {
		// avail is 2-aligned, so &avail[0] is 4-aligned here.
		q.availIdx = (*uint32)(unsafe.Pointer(&avail[0]))
		q.availShift = 16
	}
	w := atomic.LoadUint32(q.usedWord)
	q.usedIdx = uint16(w >> 16)
	q.published = q.usedIdx
	q.availCache = q.loadAvailIdx()
	return q, nil
}

// Size returns the number of descriptors.
func (q *Queue) Size() uint16 { return q.size }

// LastAvail returns the next available-ring index the device will read: the
// value GET_VRING_BASE reports.
func (q *Queue) LastAvail() uint16 { return q.lastAvail }

// UsedIdx returns the next used index the device will write.
func (q *Queue) UsedIdx() uint16 { return q.usedIdx }

// RingContains reports whether the host address addr lies in one of the
// queue's three ring parts, so that a fault there can be pinned on the
// queue (one in a buffer cannot: buffers lie anywhere in guest memory).
func (q *Queue) RingContains(addr uintptr) bool {
	return inAny(addr, q.desc, q.avail, q.used)
}

// Err returns why the queue broke, or nil.
func (q *Queue) Err() error { return q.err }

func (q *Queue) breakWith(reason error) error {
	if q.err == nil {
		q.viol.broke.at = time.Now().UnixNano()
		q.err, q.brokenErr = reason, reason
		q.broken.Store(&q.brokenErr)
	}
	return ErrBroken
}

// Broken returns why the queue broke, or nil. Unlike Err, any goroutine
// may call it while the owner runs the queue.
func (q *Queue) Broken() error {
	if p := q.broken.Load(); p != nil {
		return *p
	}
	return nil
}

func (q *Queue) loadAvailIdx() uint16 {
	return uint16(atomic.LoadUint32(q.availIdx) >> q.availShift)
}

// Pending reads the driver's available index and returns how many chains
// are waiting. An index more than the queue size ahead breaks the queue.
func (q *Queue) Pending() int {
	if q.err != nil {
		return 0
	}
	q.availCache = q.loadAvailIdx()
	n := q.availCache - q.lastAvail
	if n > q.size {
		q.breakWith(errAvailJump)
		return 0
	}
	if q.infl != nil && q.infl.resubNext < len(q.infl.resubmit) {
		return int(n) + len(q.infl.resubmit) - q.infl.resubNext
	}
	return int(n)
}

// Chain is one descriptor chain taken from the available ring, translated to
// host memory. Segs is filled from its own backing array, whose capacity
// bounds the segments a chain may have.
//
// GPAs, if it has a backing array (capacity at least that of Segs), is
// filled in parallel with Segs: GPAs[i] is the guest-physical address of
// Segs[i]. A chain the device writes into must carry them, so that
// LogWritten can log the write; one only read may leave GPAs nil.
type Chain struct {
	Head     uint16
	Segs     [][]byte // device-readable segments first, then device-writable
	GPAs     []uint64 // guest-physical address of each segment, if recorded
	NRead    int      // Segs[:NRead] are device-readable
	ReadLen  uint32   // bytes in the readable segments
	WriteLen uint32   // bytes in the writable segments
}

// Pop takes the next chain from the available ring into c, translating each
// descriptor's buffer into c.Segs (whose capacity must be at least one). It
// returns ErrEmpty when nothing is pending as of the last Pending call,
// ErrTooManySegments for a valid chain that does not fit (consumed: return
// it with PushUsed), and ErrBroken when the chain breaks the rules (the
// queue stays broken).
func (q *Queue) Pop(mem *guestmem.Memory, c *Chain) error {
	if q.err != nil {
		return ErrBroken
	}
	var head uint16
	if in := q.infl; in != nil && in.resubNext < len(in.resubmit) {
		// Chains a previous backend took and never returned come
		// first (checked < size at attach).
		head = in.resubmit[in.resubNext]
		in.resubNext++
	} else {
		if q.lastAvail == q.availCache {
			return ErrEmpty
		}
		// avail->ring[lastAvail % size]: 4 + 2*(size-1) + 2 <= len(avail).
		head = *(*uint16)(unsafe.Add(q.availBase, 4+2*uintptr(q.lastAvail&q.mask)))
		if head >= q.size {
			return q.breakWith(errHeadRange)
		}
		q.lastAvail++
	}
	if q.infl != nil {
		q.infl.mark(head)
	}
	c.Head = head
	c.Segs = c.Segs[:0]
	c.GPAs = c.GPAs[:0]
	c.NRead = 0
	c.ReadLen, c.WriteLen = 0, 0

	// Fast path: a single direct descriptor whose buffer lies in the
	// largest region and goes the queue's way, the common shape of both
	// transmit and receive chains. Anything else takes the general walk
	// below.
	// desc[head], head < size checked above.
	d := (*[descSize]byte)(unsafe.Add(q.descBase, uintptr(head)*descSize))
	if flags := binary.LittleEndian.Uint16(d[12:14]); (flags^q.dirWant)&q.fastMask == 0 && cap(c.Segs) > 0 {
		length := binary.LittleEndian.Uint32(d[8:12])
		addr := binary.LittleEndian.Uint64(d[0:8])
		if b, ok := mem.ChunkFast(addr, uint64(length)); ok {
			c.Segs = append(c.Segs, b)
			if cap(c.GPAs) != 0 {
				c.GPAs = append(c.GPAs, addr)
			}
			if flags&DescFWrite != 0 {
				c.WriteLen = length
			} else {
				c.ReadLen, c.NRead = length, 1
			}
			return nil
		}
	}

	table := q.desc
	idx := uint32(head)
	ttl := uint32(q.size)
	inIndirect := false
	var total uint64
	full := false
	for {
		if ttl == 0 {
			return q.breakAt(errLoop, head, uint16(idx), 0, inIndirect)
		}
		ttl--
		// Copy the descriptor once: the driver may change it under us, so
		// every check below is made on this copy.
		d := (*[descSize]byte)(table[idx*descSize:])
		addr := binary.LittleEndian.Uint64(d[0:8])
		length := binary.LittleEndian.Uint32(d[8:12])
		flags := binary.LittleEndian.Uint16(d[12:14])
		next := binary.LittleEndian.Uint16(d[14:16])

		if flags&DescFIndirect != 0 {
			// The WRITE flag of a descriptor naming a table is
			// ignored, as 2.7.5.3.2 requires of the device.
			switch {
			case !q.indirect:
				return q.breakAt(errIndirectOff, head, uint16(idx), flags, inIndirect)
			case inIndirect:
				return q.breakAt(errNestedIndirect, head, uint16(idx), flags, inIndirect)
			case flags&DescFNext != 0:
				return q.breakAt(errIndirectNext, head, uint16(idx), flags, inIndirect)
			case length == 0 || length%descSize != 0:
				return q.breakAt(errIndirectLen, head, uint16(idx), flags, inIndirect)
			case length/descSize > uint32(q.size):
				// "A driver MUST NOT create a descriptor chain longer
				// than the Queue Size of the device" (virtio 1.2,
				// 2.7.5.3.1); DPDK and rust-vmm refuse such tables
				// too. Without this bound the time-to-live below would
				// be the table's own length, up to 2^28 entries: one
				// looping table would hold a poller for seconds.
				q.tableErr = tableSizeError{entries: length / descSize, size: q.size}
				return q.breakAt(&q.tableErr, head, uint16(idx), flags, inIndirect)
			}
			t := mem.Chunk(addr, uint64(length))
			if uint32(len(t)) != length {
				return q.breakAt(errIndirectMem, head, uint16(idx), flags, inIndirect)
			}
			table = t
			inIndirect = true
			idx = 0
			ttl = length / descSize // at most the queue size, checked above
			continue
		}

		write := flags&DescFWrite != 0
		if !write && c.WriteLen > 0 {
			return q.breakAt(errReadAfterWrite, head, uint16(idx), flags, inIndirect)
		}
		if (flags^q.dirWant)&q.dirMask != 0 {
			q.noteDirection(head, uint16(idx), flags, inIndirect)
		}
		total += uint64(length)
		if total > 1<<32-1 {
			return q.breakAt(errChainTooBig, head, uint16(idx), flags, inIndirect)
		}
		if write {
			c.WriteLen += length
		} else {
			c.ReadLen += length
		}
		// Translate the buffer; it may span regions, so take it chunk by
		// chunk. Past the segment capacity, keep walking to validate the
		// chain but record nothing.
		for rem := uint64(length); rem > 0; {
			b, ok := mem.ChunkFast(addr, rem)
			if !ok {
				if b = mem.Chunk(addr, rem); b == nil {
					return q.breakAt(errBufferMem, head, uint16(idx), flags, inIndirect)
				}
			}
			if len(c.Segs) == cap(c.Segs) {
				full = true
			} else {
				c.Segs = append(c.Segs, b)
				if cap(c.GPAs) != 0 {
					c.GPAs = append(c.GPAs, addr)
				}
				if !write {
					c.NRead++
				}
			}
			addr += uint64(len(b))
			rem -= uint64(len(b))
		}

		if flags&DescFNext == 0 {
			break
		}
		if uint32(next) >= uint32(len(table)/descSize) {
			return q.breakAt(errNextRange, head, uint16(idx), flags, inIndirect)
		}
		idx = uint32(next)
	}
	if full {
		return ErrTooManySegments
	}
	return nil
}

// setOne makes c the chain of one buffer, b, at guest address addr and
// length bytes long, written by the device if write, else read. The
// caller has checked cap(c.Segs) > 0. Reslicing in place, not append:
// no growth path whose spills the burst loop would pay for.
func (c *Chain) setOne(b []byte, addr uint64, length uint32, write bool) {
	c.Segs = c.Segs[:1]
	c.Segs[0] = b
	if cap(c.GPAs) != 0 {
		c.GPAs = c.GPAs[:1]
		c.GPAs[0] = addr
	} // else len(c.GPAs) is 0 already
	if write {
		c.ReadLen, c.WriteLen, c.NRead = 0, length, 0
	} else {
		c.ReadLen, c.WriteLen, c.NRead = length, 0, 1
	}
}

// PopBurst takes up to len(cs) chains into cs, each as Pop would, and
// returns how many it took. It stops at the first chain Pop would not
// return nil for and returns that error too; with ErrTooManySegments that
// chain is cs[n], consumed (return it with PushUsed). It is Pop without
// a call per chain, for the data path's bursts.
func (q *Queue) PopBurst(mem *guestmem.Memory, cs []Chain) (int, error) {
	if q.err != nil {
		return 0, ErrBroken
	}
	if q.infl != nil {
		return q.popEach(mem, cs, 0)
	}
	hot := mem.Hot()
	// The queue's fields in locals: the stores into cs would otherwise make
	// the compiler load each of them again for every chain.
	last := q.lastAvail
	n := min(len(cs), int(q.availCache-last)) // then Pop would say ErrEmpty
	availBase, descBase, mask, size := q.availBase, q.descBase, q.mask, q.size
	want, fastMask := q.dirWant, q.fastMask
	for i := range cs[:n] {
		c := &cs[i]
		// avail->ring[lastAvail % size]: 4 + 2*(size-1) + 2 <= len(avail).
		head := *(*uint16)(unsafe.Add(availBase, 4+2*uintptr(last&mask)))
		if head >= size {
			q.lastAvail = last
			return q.popEach(mem, cs, i) // Pop breaks the queue
		}
		// Pop's fast path, the same checks.
		d := (*[descSize]byte)(unsafe.Add(descBase, uintptr(head)*descSize))
		if flags := binary.LittleEndian.Uint16(d[12:14]); (flags^want)&fastMask == 0 && cap(c.Segs) > 0 {
			length := binary.LittleEndian.Uint32(d[8:12])
			addr := binary.LittleEndian.Uint64(d[0:8])
			if b := hot.Chunk(addr, uint64(length)); b != nil {
				last++
				c.Head = head
				c.setOne(b, addr, length, flags&DescFWrite != 0)
				continue
			}
		}
		q.lastAvail = last
		return q.popEach(mem, cs, i)
	}
	q.lastAvail = last
	if n < len(cs) {
		return n, ErrEmpty
	}
	return n, nil
}

// popEach is PopBurst from cs[i] on, one Pop per chain: the burst loop
// leaves for it at the first chain its fast path does not take, so that
// the loop itself has no call to keep its registers across.
func (q *Queue) popEach(mem *guestmem.Memory, cs []Chain, i int) (int, error) {
	for ; i < len(cs); i++ {
		if err := q.Pop(mem, &cs[i]); err != nil {
			return i, err
		}
	}
	return len(cs), nil
}

// Unpop gives back the last n chains taken with Pop, which have not been
// pushed to the used ring; the next Pop returns them again.
//
// A queue tracking inflight chains must not give back resubmitted ones
// (only receive queues give chains back, and they are not tracked).
func (q *Queue) Unpop(n int) {
	q.lastAvail -= uint16(n)
	if q.infl != nil {
		q.unpopTracked(n)
	}
}

// unpopTracked clears the inflight marks of the n chains just given back.
func (q *Queue) unpopTracked(n int) {
	for i := 0; i < n; i++ {
		if h := *(*uint16)(unsafe.Add(q.availBase, 4+2*uintptr((q.lastAvail+uint16(i))&q.mask))); h < q.size {
			q.infl.unmark(h)
		}
	}
}

// PrefetchUsed adds to b, for writing, the lines of the used ring that
// the next n PushUsed calls write. The driver reads those lines on its
// CPU, so each first write into one waits for the line to come over;
// prefetched a pass ahead, the transfers overlap the copies instead.
func (q *Queue) PrefetchUsed(b *prefetch.Batch, n int) {
	if n <= 0 {
		return
	}
	// Elements are 8 bytes from offset 4: one in eight starts a line,
	// give or take the one that straddles it; the last is added too.
	for j := 0; j < n; j += 8 {
		b.Write((*byte)(unsafe.Add(q.usedBase, 4+usedElemSize*uintptr((q.usedIdx+uint16(j))&q.mask))))
	}
	b.Write((*byte)(unsafe.Add(q.usedBase, 4+usedElemSize*uintptr((q.usedIdx+uint16(n-1))&q.mask))))
}

// PrefetchAhead adds to b, for reading, the descriptors of up to n of the
// chains the last Pending found available beyond those taken: the ones
// the next pops will read. The driver wrote them on its CPU; fetched now,
// a pass ahead, the next transmit into this queue does not wait for them
// one burst after the other (docs/bench.md, "Descriptors a pass ahead").
// It reads the available ring's entries, which the driver does not change
// once published, and changes nothing in the queue.
func (q *Queue) PrefetchAhead(b *prefetch.Batch, n int) {
	if q.err != nil || q.infl != nil {
		return
	}
	// The queue's fields in locals: the stores into b would otherwise
	// make the compiler load them again for every chain.
	at, end := q.lastAvail, q.lastAvail+uint16(min(n, int(q.availCache-q.lastAvail)))
	availBase, descBase, mask, size := q.availBase, q.descBase, q.mask, q.size
	last := ^uintptr(0)
	for ; at != end; at++ {
		// avail->ring[at % size]: in range, as in Pop.
		head := *(*uint16)(unsafe.Add(availBase, 4+2*uintptr(at&mask)))
		if head >= size {
			return // Pop will break the queue on it
		}
		// Four descriptors to a line, and drivers mostly post them in
		// order: one prefetch per line in a row.
		p := unsafe.Add(descBase, uintptr(head)*descSize)
		if line := uintptr(p) >> 6; line != last {
			last = line
			b.Read((*byte)(p))
		}
	}
}

// PushUsed records chain head as used with length bytes written into it.
// The entry becomes visible to the driver at the next Publish. A device
// that wrote into the chain's buffers also reports the bytes with
// LogWritten while the queue is Logging.
func (q *Queue) PushUsed(head uint16, length uint32) {
	// used->ring[usedIdx % size], a struct virtq_used_elem { le32 id;
	// le32 len; } written with one store; 4 + 8*size <= len(used). The
	// ring is 4-byte aligned, so the 8-byte store may straddle a cache
	// line but never a page. (x86 is little-endian, as virtio is.)
	*(*uint64)(unsafe.Add(q.usedBase, 4+usedElemSize*uintptr(q.usedIdx&q.mask))) = uint64(head) | uint64(length)<<32
	q.usedIdx++
}

// Publish makes every entry pushed since the last Publish visible to the
// driver with one release store of the used index.
func (q *Queue) Publish() {
	if q.published == q.usedIdx {
		return
	}
	from := q.published
	if q.infl != nil {
		q.publishTracked()
	} else {
		release.Store32(q.usedWord, uint32(q.usedFlags)|uint32(q.usedIdx)<<16)
		q.published = q.usedIdx
	}
	// Marked after the store: a page the frontend copies between a mark
	// and the write it stands for would go over without the write.
	if q.log != nil {
		q.logPublish(from)
	}
}

// publishTracked is Publish with inflight tracking, in the order the
// specification's recovery relies on: link the batch, publish the used
// index, clear the batch, record the used index it was cleared for.
func (q *Queue) publishTracked() {
	from := q.published
	q.inflightBatch()
	release.Store32(q.usedWord, uint32(q.usedFlags)|uint32(q.usedIdx)<<16)
	q.published = q.usedIdx
	q.inflightDone(from)
}

// fullFence orders the preceding stores before the following loads, which a
// release store alone does not (store-load ordering needs a locked
// instruction on x86; Go's atomic add is one).
func (q *Queue) fullFence() { Fence(&q.fence) }

// Fence orders every store before it ahead of every load after it, as
// NeedCallFenced needs after Publish. word is the caller's own scratch
// (an atomic add on it is the fence: a word no other CPU writes, so the
// add itself never waits for a cache line).
func Fence(word *uint32) { atomic.AddUint32(word, 1) }

// NeedCall reports whether the driver wants an interrupt for what was
// published since the last call, honouring NO_INTERRUPT or used_event. It
// must be called after Publish, at most once per burst.
//
// The driver's flag or event index must be read after the used index was
// published (store, then load), or a call the driver waits for could be
// missed: Publish's release store does not order them, a full fence does.
func (q *Queue) NeedCall() bool {
	q.fullFence()
	return q.NeedCallFenced()
}

// NeedCallFenced is NeedCall for a caller that has executed a full fence
// (Fence) since Publish: one fence can then serve every ring a poller
// published in a pass of its loop, where it would otherwise cost one per
// ring and burst (a fence waits for every store of the burst into guest
// memory, cache misses on lines the driver holds).
func (q *Queue) NeedCallFenced() bool {
	newIdx := q.published
	if q.sigValid && newIdx == q.signalled {
		return false // nothing new since the last decision
	}
	old, valid := q.signalled, q.sigValid
	q.signalled, q.sigValid = newIdx, true
	if !q.eventIdx {
		var flags uint16
		if q.availShift == 16 {
			// The word holding avail->idx starts at &avail[0]: flags
			// are its low half.
			flags = uint16(atomic.LoadUint32(q.availIdx))
		} else {
			flags = binary.LittleEndian.Uint16(q.avail[0:2])
		}
		if flags&q.availBad != 0 {
			q.note(AvailFlags, 0, 0, flags, false)
		}
		return flags&AvailFNoInterrupt == 0
	}
	// Read only to check it (2.7.7.2: the device ignores it here); it
	// shares a cache line with avail->idx, read by Pending.
	if flags := *(*uint16)(q.availBase); flags != 0 {
		q.note(AvailFlags, 0, 0, flags, false)
	}
	o := 4 + 2*uint32(q.size)
	event := binary.LittleEndian.Uint16(q.avail[o : o+2])
	// vring_need_event: call if the driver's event index lies in
	// (old, new]. Before the first call there is no old value to trust.
	return !valid || newIdx-event-1 < newIdx-old
}

// DisableNotify asks the driver not to kick while the device is polling.
// With EVENT_IDX the stale avail_event already does so after one kick.
func (q *Queue) DisableNotify() {
	if q.eventIdx || q.usedFlags&UsedFNoNotify != 0 {
		return
	}
	q.usedFlags |= UsedFNoNotify
	atomic.StoreUint32(q.usedWord, uint32(q.usedFlags)|uint32(q.published)<<16)
	q.log.Mark(q.usedLog, 4)
}

// EnableNotify asks the driver to kick on the next buffer it makes
// available, then re-reads the available index so no buffer added in the
// meantime is missed. It returns true if work is already pending, in which
// case the caller must not sleep.
func (q *Queue) EnableNotify() bool {
	if q.err != nil {
		return false
	}
	if q.eventIdx {
		o := 4 + usedElemSize*uint32(q.size)
		q.used[o], q.used[o+1] = byte(q.lastAvail), byte(q.lastAvail>>8)
		q.log.Mark(q.usedLog+uint64(o), 2)
	} else if q.usedFlags&UsedFNoNotify != 0 {
		q.usedFlags &^= UsedFNoNotify
		atomic.StoreUint32(q.usedWord, uint32(q.usedFlags)|uint32(q.published)<<16)
		q.log.Mark(q.usedLog, 4)
	}
	q.fullFence()
	return q.Pending() > 0
}

// Backlog returns how many chains the driver has made available that the
// device has not yet returned in a published used index: the guest's
// avail index minus the published used index, both read atomically from
// the rings. Unlike Pending, any goroutine may call it while the owner
// runs the queue, as long as the ring memory stays mapped (see
// daemon's shutdown drain); the caller must bound what it makes of the
// result (a driver can write anything there).
func (q *Queue) Backlog() (avail, used uint16) {
	return q.loadAvailIdx(), uint16(atomic.LoadUint32(q.usedWord) >> 16)
}

// inAny reports whether the host address addr lies in one of parts.
func inAny(addr uintptr, parts ...[]byte) bool {
	for _, b := range parts {
		if addr-uintptr(unsafe.Pointer(unsafe.SliceData(b))) < uintptr(len(b)) {
			return true
		}
	}
	return false
}
