package virtqueue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vhostd/vhostd/virtqueue/guestmem"
	"github.com/vhostd/vhostd/virtqueue/prefetch"
	"github.com/vhostd/vhostd/virtqueue/release"
)

// Packed virtqueues (virtio 1.2, section 2.8), from the device side.
//
// One ring of 16-byte descriptors { le64 addr; le32 len; le16 id; le16
// flags } carries both directions: the driver makes a descriptor available
// by setting its AVAIL flag to the driver's wrap counter (and USED to the
// inverse), the device returns a buffer by writing one used descriptor
// (id, len, and AVAIL = USED = the device's wrap counter) at its own used
// position, which then skips as many ring slots as the chain took. Each
// counter flips when its position wraps past the end of the ring. Two
// 4-byte event suppression structures { le16 off_wrap; le16 flags } say
// when each side wants to be notified: the driver's (read by the device,
// for calls) and the device's (written by the device, for kicks).

// Packed descriptor flags (virtio 1.2, 2.8.1) and event suppression flags
// (2.8.10).
const (
	PackedDescFAvail = 1 << 7  // VIRTQ_DESC_F_AVAIL
	PackedDescFUsed  = 1 << 15 // VIRTQ_DESC_F_USED

	EventFlagEnable  = 0 // RING_EVENT_FLAGS_ENABLE: notify on every buffer
	EventFlagDisable = 1 // RING_EVENT_FLAGS_DISABLE: never notify
	EventFlagDesc    = 2 // RING_EVENT_FLAGS_DESC: notify at off_wrap (EVENT_IDX)

	// MaxPackedSize is the largest packed queue size (2^15: positions
	// and wrap counter share 16 bits).
	MaxPackedSize = 32768
	eventSize     = 4
)

// Reasons a packed queue breaks, beside the split ones it shares.
var (
	errPackedID      = errors.New("packed buffer id out of range")
	errPackedOverrun = errors.New("packed chain reaches past the descriptors the driver may have made available")
)

// PackedConfig is what the frontend set up for one packed ring: its size,
// the guest-physical addresses of its three parts (SET_VRING_ADDR's
// desc, avail and used addresses carry them in that order), and the
// negotiated features that change how the ring is read.
type PackedConfig struct {
	Size     uint16 // number of descriptors, 1 to MaxPackedSize (any value)
	Desc     uint64 // guest-physical address of the descriptor ring
	Driver   uint64 // driver event suppression area (the driver writes it)
	Device   uint64 // device event suppression area (the device writes it)
	EventIdx bool   // VIRTIO_F_RING_EVENT_IDX negotiated: DESC mode allowed
	Indirect bool   // VIRTIO_F_RING_INDIRECT_DESC negotiated
}

// Validate checks the size and alignment rules of the specification
// (virtio 1.2, 2.8.10.1 and 4.1.4.3: descriptor ring 16, event
// suppression areas 4; any size up to 2^15).
func (c PackedConfig) Validate() error {
	if c.Size == 0 || c.Size > MaxPackedSize {
		return fmt.Errorf("packed queue size %d is not between 1 and %d", c.Size, MaxPackedSize)
	}
	if c.Desc%16 != 0 {
		return fmt.Errorf("descriptor ring address %#x is not 16-byte aligned", c.Desc)
	}
	if c.Driver%4 != 0 {
		return fmt.Errorf("driver event suppression address %#x is not 4-byte aligned", c.Driver)
	}
	if c.Device%4 != 0 {
		return fmt.Errorf("device event suppression address %#x is not 4-byte aligned", c.Device)
	}
	return nil
}

// PackedBase encodes a packed ring's device state the way GET_VRING_BASE
// and SET_VRING_BASE carry it: bits 0-14 the next available position,
// bit 15 the driver (avail) wrap counter the device expects there
// (vhost-user.rst), and, as QEMU keeps it (virtio.c,
// virtio_queue_packed_get_last_avail_idx, which it sends back at the next
// SET_VRING_BASE), bits 16-30 the next used position and bit 31 the used
// wrap counter.
func PackedBase(availPos uint16, availWrap bool, usedPos uint16, usedWrap bool) uint32 {
	b := uint32(availPos&0x7fff) | uint32(usedPos&0x7fff)<<16
	if availWrap {
		b |= 1 << 15
	}
	if usedWrap {
		b |= 1 << 31
	}
	return b
}

// PackedFreshBase is the base of a ring nobody has used: both positions 0,
// both wrap counters 1 (virtio 1.2, 2.8.1).
const PackedFreshBase = 1<<15 | 1<<31

// PackedQueue is the device side of one packed virtqueue. Like Queue it is
// owned by one poller while it runs, and it has the same data-path method
// set (see Ring), so a burst loop is written once for both layouts.
//
// Positions are kept as sequence numbers modulo 2*size: seq = position
// for wrap counter 1, position + size for wrap counter 0, so a difference
// of two sequence numbers is a distance in descriptors whatever the laps.
type PackedQueue struct {
	size uint16
	seqN uint32 // 2 * size

	desc   []byte // the descriptor ring, exactly sized
	driver []byte // driver event suppression area (4 bytes)
	device []byte // device event suppression area (4 bytes)

	descBase    unsafe.Pointer
	driverEvent *uint32 // off_wrap | flags<<16, written by the driver
	deviceEvent *uint32 // off_wrap | flags<<16, written by us

	descGPA, deviceGPA uint64 // where writes are logged

	eventIdx bool
	indirect bool

	log *guestmem.Log

	availSeq uint32 // next descriptor to read
	endSeq   uint32 // descriptors before it are known available (Pending)
	usedSeq  uint32 // next used slot to write (at Publish)
	pubSeq   uint32 // used slots before it are published (= usedSeq)
	sigSeq   uint32 // pubSeq at the last call decision
	sigValid bool

	// popCnt chains are out: popped and not yet published. Most take
	// one ring slot; those that took more are in multi, oldest first, a
	// ring of size entries (no more chains than descriptors can be
	// out), each the chain's ordinal (chains popped since New, modulo
	// 2^16, which tells apart the at most size chains out) | its slots
	// <<16. So Pop's fast path records nothing but the count, and
	// Publish walks multi only when it is not empty.
	popCnt    int
	multi     []uint32
	multiHead int // index of the oldest
	multiCnt  int

	// The chains pushed since the last Publish, oldest first: length |
	// head<<32, a used descriptor's bytes 8-15 but for the flags.
	// Publish writes their used descriptors.
	shadow  []uint64
	nShadow int

	// Chains published since New: those pushed (UsedIdx) are retired +
	// nShadow, those popped (LastAvail) retired + popCnt, not counted in
	// Pop and PushUsed.
	retired uint16

	// published is the used position, wrap and descriptor count as of
	// the last Publish, for Backlog on other goroutines:
	// count | seq<<16.
	// Stored with a release store (an atomic Store is a full fence on
	// amd64, which Publish must not cost), loaded atomically.
	published uint64
	pubCount  uint16 // used descriptors published since New

	notify uint32 // device event word as last written, or ^0

	fence     uint32
	err       error
	tableErr  tableSizeError
	broken    atomic.Pointer[error]
	brokenErr error
	brokeAt   int64 // when it broke (unix nanoseconds), for BrokenRecord
}

// NewPacked builds a packed queue over mem from cfg, resuming at base
// (SET_VRING_BASE, see PackedBase). A base whose upper half is zero, as
// DPDK's virtio-user and any frontend following vhost-user.rst alone
// send, resumes the used position at the available one, which is where
// a device that stopped with nothing in flight left it.
func NewPacked(mem *guestmem.Memory, cfg PackedConfig, base uint32) (*PackedQueue, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	desc, err := mem.Slice(cfg.Desc, descBytes(cfg.Size))
	if err != nil {
		return nil, fmt.Errorf("descriptor ring %#x+%#x: %w", cfg.Desc, descBytes(cfg.Size), err)
	}
	driver, err := mem.Slice(cfg.Driver, eventSize)
	if err != nil {
		return nil, fmt.Errorf("driver event suppression area %#x: %w", cfg.Driver, err)
	}
	device, err := mem.Slice(cfg.Device, eventSize)
	if err != nil {
		return nil, fmt.Errorf("device event suppression area %#x: %w", cfg.Device, err)
	}
	// Host addresses, not guest ones, decide atomic alignment.
	for _, p := range []struct {
		what string
		b    []byte
	}{{"descriptor ring", desc}, {"driver event suppression area", driver}, {"device event suppression area", device}} {
		if uintptr(unsafe.Pointer(&p.b[0]))%4 != 0 {
			return nil, fmt.Errorf("%s is not 4-byte aligned in this process", p.what)
		}
	}
	q := &PackedQueue{
		size: cfg.Size, seqN: 2 * uint32(cfg.Size),
		desc: desc, driver: driver, device: device,
		descBase:    unsafe.Pointer(&desc[0]),
		driverEvent: (*uint32)(unsafe.Pointer(&driver[0])),
		deviceEvent: (*uint32)(unsafe.Pointer(&device[0])),
		descGPA:     cfg.Desc, deviceGPA: cfg.Device,
		eventIdx: cfg.EventIdx, indirect: cfg.Indirect,
		multi:  make([]uint32, cfg.Size),
		shadow: make([]uint64, cfg.Size),
		notify: ^uint32(0),
	}
	if err := q.setBase(base); err != nil {
		return nil, err
	}
	return q, nil
}

func (q *PackedQueue) setBase(base uint32) error {
	availPos, availWrap := uint16(base&0x7fff), base&(1<<15) != 0
	usedPos, usedWrap := uint16(base>>16&0x7fff), base&(1<<31) != 0
	if base>>16 == 0 {
		usedPos, usedWrap = availPos, availWrap
	}
	if availPos >= q.size || usedPos >= q.size {
		return fmt.Errorf("packed ring base %#x: position beyond the queue size %d", base, q.size)
	}
	q.availSeq = q.seq(availPos, availWrap)
	q.usedSeq = q.seq(usedPos, usedWrap)
	if q.dist(q.usedSeq, q.availSeq) > uint32(q.size) {
		return fmt.Errorf("packed ring base %#x: available position more than the queue size (%d) past the used one", base, q.size)
	}
	q.endSeq, q.pubSeq, q.sigSeq = q.availSeq, q.usedSeq, q.usedSeq
	release.Store64(&q.published, uint64(q.pubSeq)<<16)
	return nil
}

// seq maps a position and wrap counter to a sequence number.
func (q *PackedQueue) seq(pos uint16, wrap bool) uint32 {
	if wrap {
		return uint32(pos)
	}
	return uint32(pos) + uint32(q.size)
}

// pos returns the ring position and wrap counter of sequence number s.
func (q *PackedQueue) pos(s uint32) (uint16, bool) {
	if s >= uint32(q.size) {
		return uint16(s - uint32(q.size)), false
	}
	return uint16(s), true
}

// dist returns how many descriptors b lies after a (b - a mod 2*size).
func (q *PackedQueue) dist(a, b uint32) uint32 {
	if b >= a {
		return b - a
	}
	return b + q.seqN - a
}

// add returns s advanced by n < 2*size descriptors.
func (q *PackedQueue) add(s, n uint32) uint32 {
	s += n
	if s >= q.seqN {
		s -= q.seqN
	}
	return s
}

// Size returns the number of descriptors.
func (q *PackedQueue) Size() uint16 { return q.size }

// RingBase returns the state GET_VRING_BASE reports (see PackedBase): the
// next available position and wrap counter, and the next used ones.
// Chains popped and not yet published lie between the two: a device
// resumed from this base does not take them again (packed rings have no
// inflight tracking here yet), so the data path publishes everything
// before the rings stop, as it does for split ones.
func (q *PackedQueue) RingBase() uint32 {
	ap, aw := q.pos(q.availSeq)
	up, uw := q.pos(q.usedSeq)
	return PackedBase(ap, aw, up, uw)
}

// LastAvail returns how many chains were popped since New, modulo 2^16.
// Unlike Queue's it is not a ring index (see RingBase): LastAvail minus
// UsedIdx is, for both layouts, the chains taken and not yet pushed.
func (q *PackedQueue) LastAvail() uint16 { return q.retired + uint16(q.popCnt) }

// UsedIdx returns how many chains were pushed since New, modulo 2^16.
func (q *PackedQueue) UsedIdx() uint16 { return q.retired + uint16(q.nShadow) }

// RingContains reports whether the host address addr lies in one of the
// queue's three ring parts.
func (q *PackedQueue) RingContains(addr uintptr) bool {
	return inAny(addr, q.desc, q.driver, q.device)
}

// Err returns why the queue broke, or nil.
func (q *PackedQueue) Err() error { return q.err }

func (q *PackedQueue) breakWith(reason error) error {
	if q.err == nil {
		q.brokeAt = time.Now().UnixNano()
		q.err, q.brokenErr = reason, reason
		q.broken.Store(&q.brokenErr)
	}
	return ErrBroken
}

// Broken returns why the queue broke, or nil. Any goroutine may call it.
func (q *PackedQueue) Broken() error {
	if p := q.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// BrokenRecord returns why the queue broke and when, as Queue's does, or
// a nil error. A packed queue does not record where in a chain (walker is
// false). Any goroutine may call it: brokeAt is written before the
// atomic store of broken that publishes it.
func (q *PackedQueue) BrokenRecord() (err error, rec ViolationRecord, walker bool) {
	p := q.broken.Load()
	if p == nil {
		return nil, ViolationRecord{}, false
	}
	return *p, ViolationRecord{Count: 1, First: time.Unix(0, q.brokeAt)}, false
}

// wordAt loads the id and flags of the descriptor at position p (id |
// flags<<16, an aligned word) with acquire ordering: everything the driver
// wrote before the flags is visible after.
func (q *PackedQueue) wordAt(p uint16) uint32 {
	return atomic.LoadUint32((*uint32)(unsafe.Add(q.descBase, uintptr(p)*descSize+12)))
}

// Pending scans the ring for descriptors the driver made available since
// the last scan and returns how many are waiting: an upper bound on the
// chains Pop will return (a chain takes one descriptor or more). The scan
// stops at the first descriptor not available, and never goes more than
// the queue size past the used position (a driver cannot have made more
// available; flags that say otherwise are stale or lies).
func (q *PackedQueue) Pending() int {
	if q.err != nil {
		return 0
	}
	room := uint32(q.size) - q.dist(q.usedSeq, q.endSeq)
	p, wrap := q.pos(q.endSeq)
	// Available in a lap of wrap counter 1: AVAIL set, USED clear; of
	// wrap counter 0: the other way round.
	want := uint32(PackedDescFUsed)
	if wrap {
		want = PackedDescFAvail
	}
	n := scanAvail(q.descBase, uint32(p), uint32(q.size), room, want<<16)
	q.endSeq = q.add(q.endSeq, n)
	return int(q.dist(q.availSeq, q.endSeq))
}

// scanAvail counts the descriptors, at most room, from slot p of the ring
// at base of size slots whose flags word (id | flags<<16) has AVAIL and
// USED as want (at bits 16-31) says, want flipping at the ring's end.
// Each word is loaded with acquire ordering (as wordAt). The loop runs up
// to the ring's end or room with a pointer step and no wrap test.
func scanAvail(base unsafe.Pointer, p, size, room, want uint32) uint32 {
	const mask = (PackedDescFAvail | PackedDescFUsed) << 16
	var n uint32
	for n < room {
		k := min(room-n, size-p)
		w := unsafe.Add(base, uintptr(p)*descSize+12)
		var i uint32
		// Four at a time while all four are available (a driver
		// makes buffers available in batches), then one at a time.
		for i+4 <= k {
			w0 := atomic.LoadUint32((*uint32)(w))
			w1 := atomic.LoadUint32((*uint32)(unsafe.Add(w, descSize)))
			w2 := atomic.LoadUint32((*uint32)(unsafe.Add(w, 2*descSize)))
			w3 := atomic.LoadUint32((*uint32)(unsafe.Add(w, 3*descSize)))
			if ((w0^want)|(w1^want)|(w2^want)|(w3^want))&mask != 0 {
				break
			}
			w = unsafe.Add(w, 4*descSize)
			i += 4
		}
		for i < k {
			if atomic.LoadUint32((*uint32)(w))&mask != want {
				break
			}
			w = unsafe.Add(w, descSize)
			i++
		}
		n += i
		if i < k {
			break
		}
		p, want = 0, want^mask
	}
	return n
}

// Pop takes the next chain into c, as Queue.Pop does: c.Head is the
// chain's buffer id (from its last descriptor in the ring). It returns
// ErrEmpty when nothing is pending as of the last Pending call,
// ErrTooManySegments for a valid chain that does not fit (consumed: return
// it with PushUsed), and ErrBroken when the chain breaks the rules.
func (q *PackedQueue) Pop(mem *guestmem.Memory, c *Chain) error {
	if q.err != nil {
		return ErrBroken
	}
	if q.availSeq == q.endSeq {
		return ErrEmpty
	}
	p, _ := q.pos(q.availSeq)
	// Acquire: the head's flags are the driver's last write of the chain.
	w := q.wordAt(p)
	c.Segs = c.Segs[:0]
	c.GPAs = c.GPAs[:0]
	c.NRead = 0
	c.ReadLen, c.WriteLen = 0, 0

	// Fast path: one direct descriptor in the largest region.
	d := (*[descSize]byte)(unsafe.Add(q.descBase, uintptr(p)*descSize))
	if flags := uint16(w >> 16); flags&(DescFNext|DescFIndirect) == 0 && cap(c.Segs) > 0 {
		id := uint16(w)
		length := binary.LittleEndian.Uint32(d[8:12])
		addr := binary.LittleEndian.Uint64(d[0:8])
		if b, ok := mem.ChunkFast(addr, uint64(length)); ok && id < q.size {
			c.Segs = append(c.Segs, b)
			if cap(c.GPAs) != 0 {
				c.GPAs = append(c.GPAs, addr)
			}
			if flags&DescFWrite != 0 {
				c.WriteLen = length
			} else {
				c.ReadLen, c.NRead = length, 1
			}
			c.Head = id
			// q.took(id, 1), by hand: one slot never passes the
			// scanned end, which lies past this one.
			q.popCnt++
			if q.availSeq++; q.availSeq == q.seqN {
				q.availSeq = 0
			}
			return nil
		}
	}
	return q.popSlow(mem, c)
}

// PopBurst takes up to len(cs) chains into cs, each as Pop would, and
// returns how many it took. It stops at the first chain Pop would not
// return nil for and returns that error too; with ErrTooManySegments that
// chain is cs[n], consumed (return it with PushUsed). It is Pop without
// a call per chain, for the data path's bursts.
func (q *PackedQueue) PopBurst(mem *guestmem.Memory, cs []Chain) (int, error) {
	if q.err != nil {
		return 0, ErrBroken
	}
	hot := mem.Hot()
	// The queue's fields in locals (see Queue.PopBurst). Each chain of
	// the fast path takes one descriptor: after the dist(availSeq,
	// endSeq) scanned ones, Pop would say ErrEmpty.
	seq, seqN, size, descBase := q.availSeq, q.seqN, q.size, q.descBase
	n := min(len(cs), int(q.dist(seq, q.endSeq)))
	for i := range cs[:n] {
		c := &cs[i]
		p := uint16(seq)
		if seq >= uint32(size) {
			p = uint16(seq - uint32(size))
		}
		// Pop's fast path, the same checks.
		w := atomic.LoadUint32((*uint32)(unsafe.Add(descBase, uintptr(p)*descSize+12)))
		d := (*[descSize]byte)(unsafe.Add(descBase, uintptr(p)*descSize))
		if flags := uint16(w >> 16); flags&(DescFNext|DescFIndirect) == 0 && cap(c.Segs) > 0 {
			id := uint16(w)
			length := binary.LittleEndian.Uint32(d[8:12])
			addr := binary.LittleEndian.Uint64(d[0:8])
			if b := hot.Chunk(addr, uint64(length)); b != nil && id < size {
				c.setOne(b, addr, length, flags&DescFWrite != 0)
				c.Head = id
				if seq++; seq == seqN {
					seq = 0
				}
				continue
			}
		}
		q.availSeq, q.popCnt = seq, q.popCnt+i
		return q.popEach(mem, cs, i)
	}
	q.availSeq, q.popCnt = seq, q.popCnt+n
	if n < len(cs) {
		return n, ErrEmpty
	}
	return n, nil
}

// popEach is PopBurst from cs[i] on, one Pop per chain (see
// Queue.popEach).
func (q *PackedQueue) popEach(mem *guestmem.Memory, cs []Chain, i int) (int, error) {
	for ; i < len(cs); i++ {
		if err := q.Pop(mem, &cs[i]); err != nil {
			return i, err
		}
	}
	return len(cs), nil
}

// took records a popped chain of id that took n ring slots.
func (q *PackedQueue) took(id uint16, n uint32) {
	if n > 1 {
		i := q.multiHead + q.multiCnt
		if i >= len(q.multi) {
			i -= len(q.multi)
		}
		q.multi[i] = uint32(q.retired+uint16(q.popCnt)) | n<<16
		q.multiCnt++
	}
	q.popCnt++
	q.availSeq = q.add(q.availSeq, n)
	if q.dist(q.usedSeq, q.endSeq) < q.dist(q.usedSeq, q.availSeq) {
		q.endSeq = q.availSeq // a chain whose tail the scan had not reached
	}
}

// popSlow walks a chain of several descriptors, an indirect one, or one
// the fast path could not translate, with every check.
func (q *PackedQueue) popSlow(mem *guestmem.Memory, c *Chain) error {
	// Ring slots this chain may take: those the driver can have made
	// available past the chains already out.
	room := uint32(q.size) - q.dist(q.usedSeq, q.availSeq)
	s := q.availSeq
	var n uint32 // ring slots taken
	var id uint16
	var total uint64
	full := false
	var table []byte // the indirect table being walked, or nil
	var ti, tn uint32
	for {
		var addr uint64
		var length uint32
		var flags uint16
		if table == nil {
			if n == room {
				if room == uint32(q.size) {
					return q.breakWith(errLoop)
				}
				return q.breakWith(errPackedOverrun)
			}
			p, _ := q.pos(s)
			d := (*[descSize]byte)(unsafe.Add(q.descBase, uintptr(p)*descSize))
			w := q.wordAt(p)
			addr = binary.LittleEndian.Uint64(d[0:8])
			length = binary.LittleEndian.Uint32(d[8:12])
			flags, id = uint16(w>>16), uint16(w)
			s = q.add(s, 1)
			n++
		} else {
			if ti == tn {
				break
			}
			d := (*[descSize]byte)(table[ti*descSize:])
			addr = binary.LittleEndian.Uint64(d[0:8])
			length = binary.LittleEndian.Uint32(d[8:12])
			// Only WRITE is valid in an indirect table; NEXT and
			// the id are ignored (virtio 1.2, 2.8.19), a nested
			// table is refused.
			flags = binary.LittleEndian.Uint16(d[14:16]) &^ DescFNext
			ti++
		}

		if flags&DescFIndirect != 0 {
			switch {
			case !q.indirect:
				return q.breakWith(errIndirectOff)
			case table != nil:
				return q.breakWith(errNestedIndirect)
			case flags&DescFNext != 0:
				return q.breakWith(errIndirectNext)
			case length == 0 || length%descSize != 0:
				return q.breakWith(errIndirectLen)
			case length/descSize > uint32(q.size):
				q.tableErr = tableSizeError{entries: length / descSize, size: q.size}
				return q.breakWith(&q.tableErr)
			}
			t := mem.Chunk(addr, uint64(length))
			if uint32(len(t)) != length {
				return q.breakWith(errIndirectMem)
			}
			table, ti, tn = t, 0, length/descSize
			continue
		}

		write := flags&DescFWrite != 0
		if !write && c.WriteLen > 0 {
			return q.breakWith(errReadAfterWrite)
		}
		total += uint64(length)
		if total > 1<<32-1 {
			return q.breakWith(errChainTooBig)
		}
		if write {
			c.WriteLen += length
		} else {
			c.ReadLen += length
		}
		for rem := uint64(length); rem > 0; {
			b, ok := mem.ChunkFast(addr, rem)
			if !ok {
				if b = mem.Chunk(addr, rem); b == nil {
					return q.breakWith(errBufferMem)
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
		if table == nil && flags&DescFNext == 0 {
			break
		}
	}
	if id >= q.size {
		return q.breakWith(errPackedID)
	}
	c.Head = id
	q.took(id, n)
	if full {
		return ErrTooManySegments
	}
	return nil
}

// Unpop gives back the last n chains taken with Pop, which have not been
// pushed; the next Pop returns them again.
func (q *PackedQueue) Unpop(n int) {
	for ; n > 0 && q.popCnt > q.nShadow; n-- {
		q.popCnt--
		slots := uint32(1)
		if q.multiCnt > 0 {
			i := q.multiHead + q.multiCnt - 1
			if i >= len(q.multi) {
				i -= len(q.multi)
			}
			if e := q.multi[i]; uint16(e) == q.retired+uint16(q.popCnt) {
				slots = e >> 16
				q.multiCnt--
			}
		}
		q.availSeq = q.add(q.availSeq, q.seqN-slots)
	}
}

// PushUsed returns the oldest chain popped and not yet pushed, whose Head
// is head, with length bytes written into it: a packed device completes
// chains in the order it took them, and each used descriptor goes to the
// next used slot, after skipping the slots of the chain before. The
// descriptor is written, and becomes visible to the driver, at the next
// Publish. A device that wrote into the chain's buffers reports the bytes
// with LogWritten while the queue is Logging. Without a chain out, it
// does nothing.
func (q *PackedQueue) PushUsed(head uint16, length uint32) {
	if q.nShadow >= q.popCnt {
		return
	}
	q.shadow[q.nShadow] = uint64(length) | uint64(head)<<32
	q.nShadow++
}

// PrefetchUsed does nothing on a packed ring: its used descriptors go
// into the slots the pops just read, whose lines are here already.
// Prefetching them for writing, as Queue.PrefetchUsed does the used
// ring's, measured no gain (docs/bench.md, "Instructions per frame").
func (q *PackedQueue) PrefetchUsed(b *prefetch.Batch, n int) {}

// PrefetchAhead does nothing on a packed ring: the descriptors available
// ahead are the ring slots Pending has just scanned, whose lines are here
// already.
func (q *PackedQueue) PrefetchAhead(b *prefetch.Batch, n int) {}

// Publish writes the used descriptors pushed since the last Publish and
// makes them visible to the driver: the later ones first, then the
// first one's flags with a release store (virtio 1.2, 2.8.21.2), so that
// the driver, which reads them in ring order, sees a whole batch at once.
func (q *PackedQueue) Publish() {
	if q.nShadow == 0 {
		return
	}
	from := q.usedSeq
	// The used position as ring slot pos, and the flags of a used
	// descriptor in its lap (AVAIL and USED both equal to the wrap
	// counter) at bits 48-63 of a descriptor's second 8 bytes: kept as
	// the loop goes instead of derived from a sequence number each time.
	p, wrap := q.pos(from)
	var hi uint64
	if wrap {
		hi = (PackedDescFAvail | PackedDescFUsed) << 48
	}
	size := uint32(q.size)
	base := q.descBase
	shadow := q.shadow[:q.nShadow]
	// The batch's first descriptor: its length now, its id and flags
	// last, with a release store. len at 8, id and flags at 12 and 14.
	e := shadow[0]
	d := unsafe.Add(base, uintptr(p)*descSize+8)
	*(*uint32)(d) = uint32(e)
	first, firstVal := (*uint32)(unsafe.Add(d, 4)), uint32((e|hi)>>32)
	pos := uint32(p)
	if q.multiCnt == 0 {
		// Every chain out took one slot (the common case): the used
		// descriptors go to consecutive slots. The driver reads no
		// slot past the batch's first before that one's flags say
		// used, so these go in any order.
		pos, hi = writeUsedRun(base, shadow[1:], pos, size, hi)
	} else {
		// Each used descriptor skips the slots of the chain before:
		// one, or what multi says for the chain of that ordinal.
		for i, e := range shadow {
			if i > 0 {
				if pos >= size {
					pos, hi = pos-size, hi^(PackedDescFAvail|PackedDescFUsed)<<48
				}
				*(*uint64)(unsafe.Add(base, uintptr(pos)*descSize+8)) = e | hi
			}
			n := uint32(1)
			if q.multiCnt > 0 {
				if m := q.multi[q.multiHead]; uint16(m) == q.retired+uint16(i) {
					n = m >> 16
					if q.multiHead++; q.multiHead == len(q.multi) {
						q.multiHead = 0
					}
					q.multiCnt--
				}
			}
			pos += n
		}
	}
	release.Store32(first, firstVal)
	// pos < 2*size (a chain takes at most size slots): back to a
	// sequence number, hi telling the lap.
	if pos >= size {
		pos, hi = pos-size, hi^(PackedDescFAvail|PackedDescFUsed)<<48
	}
	s := q.seq(uint16(pos), hi != 0)
	q.popCnt -= q.nShadow
	q.retired += uint16(q.nShadow)
	q.nShadow = 0
	q.usedSeq, q.pubSeq = s, s
	q.pubCount += uint16(q.dist(from, s))
	release.Store64(&q.published, uint64(q.pubCount)|uint64(s)<<16)
	if q.log != nil {
		q.logPublish(from)
	}
}

// writeUsedRun writes used descriptors for the chains of shadow (length |
// head<<32), one slot each, at the slots after pos in the ring at base
// of size slots, with flags hi (at bits 48-63) flipped at each wrap. It
// returns the slot after the last one written (size at the end of the
// ring) and the flags there. A function of its own so that the loop
// keeps its few values in registers (inlined into Publish it spilled and
// reloaded three per descriptor).
//
//go:noinline
func writeUsedRun(base unsafe.Pointer, shadow []uint64, pos, size uint32, hi uint64) (uint32, uint64) {
	for len(shadow) > 0 {
		if pos++; pos == size {
			pos, hi = 0, hi^(PackedDescFAvail|PackedDescFUsed)<<48
		}
		// The run up to the end of the ring: no wrap test per slot.
		k := min(len(shadow), int(size-pos))
		d := unsafe.Add(base, uintptr(pos)*descSize+8)
		for _, e := range shadow[:k] {
			*(*uint64)(d) = e | hi
			d = unsafe.Add(d, descSize)
		}
		pos += uint32(k) - 1
		shadow = shadow[k:]
	}
	return pos + 1, hi
}

func (q *PackedQueue) fullFence() { Fence(&q.fence) }

// NeedCall reports whether the driver wants an interrupt for what was
// published since the last call: its event suppression flags ENABLE,
// DISABLE, or (with EVENT_IDX) DESC with the position and wrap counter of
// the used descriptor it waits for. It must be called after Publish, at
// most once per burst.
func (q *PackedQueue) NeedCall() bool {
	// Publish's store, then the driver's word: store-load needs a fence.
	q.fullFence()
	return q.NeedCallFenced()
}

// NeedCallFenced is NeedCall for a caller that has executed a full fence
// (Fence) since Publish: one fence can then serve several rings.
func (q *PackedQueue) NeedCallFenced() bool {
	newSeq := q.pubSeq
	if q.sigValid && newSeq == q.sigSeq {
		return false
	}
	old, valid := q.sigSeq, q.sigValid
	q.sigSeq, q.sigValid = newSeq, true
	ev := atomic.LoadUint32(q.driverEvent)
	switch ev >> 16 & 3 {
	case EventFlagDisable:
		return false
	case EventFlagDesc:
		if !q.eventIdx {
			return true // not negotiated: the safe reading is ENABLE
		}
		off := uint16(ev & 0x7fff)
		if off >= q.size {
			return true // no such position: never miss a call for it
		}
		event := q.seq(off, ev&(1<<15) != 0)
		// Call if the event slot lies in [old, new).
		return !valid || q.dist(old, event) < q.dist(old, newSeq)
	default: // ENABLE, and the reserved value 3 read as it
		return true
	}
}

// setNotify stores the device event suppression word if it changed.
func (q *PackedQueue) setNotify(word uint32) {
	if q.notify == word {
		return
	}
	q.notify = word
	atomic.StoreUint32(q.deviceEvent, word)
	q.log.Mark(q.deviceGPA, eventSize)
}

// DisableNotify asks the driver not to kick while the device is polling.
func (q *PackedQueue) DisableNotify() {
	q.setNotify(EventFlagDisable << 16)
}

// EnableNotify asks the driver to kick on the next buffer it makes
// available (with EVENT_IDX: when it makes the descriptor at our next
// position available), then scans the ring again so that no buffer added
// in the meantime is missed. It returns true if work is already pending,
// in which case the caller must not sleep.
func (q *PackedQueue) EnableNotify() bool {
	if q.err != nil {
		return false
	}
	if q.eventIdx {
		p, wrap := q.pos(q.availSeq)
		w := uint32(p) | EventFlagDesc<<16
		if wrap {
			w |= 1 << 15
		}
		q.setNotify(w)
	} else {
		q.setNotify(EventFlagEnable << 16)
	}
	q.fullFence()
	return q.Pending() > 0
}

// Backlog returns a mark of the descriptors the driver has made available
// and of those the device has returned in a published used descriptor,
// as two counters modulo 2^16 whose difference is what is still out:
// used counts descriptor slots published since New, avail adds to it
// the slots the driver has made available past the published used
// position (read from the ring's AVAIL flags). Any goroutine may call it
// while the ring memory stays mapped; the caller must bound what it makes
// of the result.
func (q *PackedQueue) Backlog() (avail, used uint16) {
	st := atomic.LoadUint64(&q.published)
	used = uint16(st)
	s := uint32(st >> 16)
	if s >= q.seqN {
		return used, used
	}
	// A slot the driver made available in this lap has AVAIL equal to
	// the lap's wrap counter, whether or not the device has written a
	// used descriptor over it since.
	var n uint16
	for ; n < q.size; n++ {
		p, wrap := q.pos(s)
		if (q.wordAt(p)>>16&PackedDescFAvail != 0) != wrap {
			break
		}
		s = q.add(s, 1)
	}
	return used + n, used
}

// SetLog makes the queue mark every write into guest memory in log: used
// descriptors at the descriptor ring's guest-physical address and the
// device event suppression area at its own (the ring's log_guest_addr,
// which QEMU sets to the device area for a packed ring, covers neither
// the descriptors nor all of the area's writes, so it is not used). A nil
// log turns logging off. It must be called while no poller runs the
// queue, and log must stay mapped while one does.
func (q *PackedQueue) SetLog(log *guestmem.Log) { q.log = log }

// Logging reports whether the queue logs its writes.
func (q *PackedQueue) Logging() bool { return q.log != nil }

// LogWritten marks in the log the first n bytes of c's device-writable
// segments, as Queue.LogWritten does. The queue must be Logging.
func (q *PackedQueue) LogWritten(c *Chain, n uint32) { logChain(q.log, c, n) }

// logPublish marks the used descriptor slots [from, q.pubSeq), just
// published.
func (q *PackedQueue) logPublish(from uint32) {
	n := uint64(q.dist(from, q.pubSeq))
	p, _ := q.pos(from)
	first := uint64(p)
	if n >= uint64(q.size) {
		q.log.Mark(q.descGPA, descSize*uint64(q.size))
		return
	}
	if end := first + n; end <= uint64(q.size) {
		q.log.Mark(q.descGPA+descSize*first, descSize*n)
	} else {
		q.log.Mark(q.descGPA+descSize*first, descSize*(uint64(q.size)-first))
		q.log.Mark(q.descGPA, descSize*(end-uint64(q.size)))
	}
}
