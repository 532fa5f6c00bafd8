package virtqueuetest

import (
	"encoding/binary"
	"fmt"

	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
)

// Layout of a packed driver's fake guest memory: the descriptor ring (up
// to 32768 descriptors), the two event suppression areas, indirect
// tables, then buffers.
const (
	PackedDescBase   = 0x1000
	PackedDriverBase = 0x90000
	PackedDeviceBase = 0x90010
	PackedTableBase  = 0xa0000
	PackedBufBase    = 0x200000
)

// PackedDriver plays the guest driver of one packed queue, as Linux's
// virtio_ring does: descriptors of a chain in consecutive ring slots, the
// head's flags written last, buffer ids from a free list, used
// descriptors read in ring order, skipping the slots of each chain.
type PackedDriver struct {
	Mem  []byte
	GPA  uint64
	Size uint16

	availPos  uint16 // next slot to fill
	availWrap bool
	usedPos   uint16 // next slot to read a used descriptor from
	usedWrap  bool

	freeIDs []uint16
	// Per buffer id: the slots its chain took, and (for Recycle) its
	// single descriptor.
	idSlots []uint16
	idAddr  []uint64
	idLen   []uint32
	idFlags []uint16

	nextBuf   uint64
	nextTable uint64
	out       int    // chains made available and not collected
	slotsOut  int    // ring slots those chains took
	isOut     []bool // by buffer id
}

// NewPacked returns a driver for a packed queue of size descriptors in
// memSize bytes of fake guest memory at guest-physical address gpa.
func NewPacked(size uint16, memSize int, gpa uint64) *PackedDriver {
	return NewPackedOn(make([]byte, memSize), size, gpa)
}

// NewPackedOn returns a packed driver whose fake guest memory is mem (for
// example a mapped Memfd shared with a real backend).
func NewPackedOn(mem []byte, size uint16, gpa uint64) *PackedDriver {
	d := &PackedDriver{
		Mem: mem, GPA: gpa, Size: size,
		availWrap: true, usedWrap: true,
		idSlots: make([]uint16, size), idAddr: make([]uint64, size),
		idLen: make([]uint32, size), idFlags: make([]uint16, size), isOut: make([]bool, size),
		nextBuf: gpa + PackedBufBase, nextTable: gpa + PackedTableBase,
	}
	for i := int(size) - 1; i >= 0; i-- {
		d.freeIDs = append(d.freeIDs, uint16(i))
	}
	return d
}

// Memory returns the fake memory as a guestmem.Memory with one region.
func (d *PackedDriver) Memory() *guestmem.Memory {
	m, err := guestmem.FromBytes([]guestmem.RegionSpec{{GuestPhysAddr: d.GPA, Size: uint64(len(d.Mem)), UserAddr: 0x7f0000000000 + d.GPA}}, [][]byte{d.Mem})
	if err != nil {
		panic(err)
	}
	return m
}

// Config returns the queue configuration a frontend would send.
func (d *PackedDriver) Config() virtqueue.PackedConfig {
	return virtqueue.PackedConfig{Size: d.Size, Desc: d.GPA + PackedDescBase, Driver: d.GPA + PackedDriverBase, Device: d.GPA + PackedDeviceBase, Indirect: true}
}

func (d *PackedDriver) at(gpa uint64) []byte { return d.Mem[gpa-d.GPA:] }

// Alloc reserves n bytes of buffer space and returns its guest address.
func (d *PackedDriver) Alloc(n int) uint64 {
	if d.nextBuf+uint64(n) > d.GPA+uint64(len(d.Mem)) {
		d.nextBuf = d.GPA + PackedBufBase
	}
	a := d.nextBuf
	d.nextBuf += uint64(n+15) &^ 15
	return a
}

// AvailFlags returns the AVAIL/USED bits that make a descriptor available
// in the lap of wrap counter wrap.
func AvailFlags(wrap bool) uint16 {
	if wrap {
		return virtqueue.PackedDescFAvail
	}
	return virtqueue.PackedDescFUsed
}

// WriteRaw writes descriptor slot pos of the ring as is (flags included:
// use AvailFlags), for malformed-ring tests. It does not move the driver's
// position.
func (d *PackedDriver) WriteRaw(pos uint16, addr uint64, length uint32, id, flags uint16) {
	writePacked(d.at(d.GPA+PackedDescBase+16*uint64(pos)), addr, length, id, flags)
}

// WriteTable writes entry i of an indirect table at tableGPA.
func (d *PackedDriver) WriteTable(tableGPA uint64, i int, addr uint64, length uint32, flags uint16) {
	writePacked(d.at(tableGPA+16*uint64(i)), addr, length, 0, flags)
}

func writePacked(b []byte, addr uint64, length uint32, id, flags uint16) {
	binary.LittleEndian.PutUint64(b[0:], addr)
	binary.LittleEndian.PutUint32(b[8:], length)
	binary.LittleEndian.PutUint16(b[12:], id)
	binary.LittleEndian.PutUint16(b[14:], flags)
}

// AvailPos returns the driver's next slot and its wrap counter.
func (d *PackedDriver) AvailPos() (uint16, bool) { return d.availPos, d.availWrap }

// Skip moves the driver's avail and used positions by n slots without
// posting anything, as if n one-slot chains had gone round already (for
// starting a ring elsewhere than at slot 0; the device must be created
// with the matching base). Each slot passed is left as the device leaves
// a used one.
func (d *PackedDriver) Skip(n int) {
	for ; n > 0; n-- {
		var f uint16
		if d.availWrap {
			f = virtqueue.PackedDescFAvail | virtqueue.PackedDescFUsed
		}
		d.WriteRaw(d.availPos, 0, 0, 0, f)
		d.availPos, d.availWrap = d.next(d.availPos, d.availWrap)
		d.usedPos, d.usedWrap = d.next(d.usedPos, d.usedWrap)
	}
}

func (d *PackedDriver) next(p uint16, w bool) (uint16, bool) {
	if p++; p == d.Size {
		return 0, !w
	}
	return p, w
}

func (d *PackedDriver) place(b Buf) (uint64, uint32, uint16) {
	if b.Write {
		return d.Alloc(b.WriteLen), uint32(b.WriteLen), virtqueue.DescFWrite
	}
	a := d.Alloc(len(b.Data))
	copy(d.at(a), b.Data)
	return a, uint32(len(b.Data)), 0
}

func (d *PackedDriver) takeID(slots int) uint16 {
	if len(d.freeIDs) == 0 {
		panic("virtqueuetest: no free buffer id")
	}
	id := d.freeIDs[len(d.freeIDs)-1]
	d.freeIDs = d.freeIDs[:len(d.freeIDs)-1]
	d.idSlots[id] = uint16(slots)
	d.isOut[id] = true
	d.out++
	d.slotsOut += slots
	return id
}

// Free returns how many ring slots the driver may still fill.
func (d *PackedDriver) Free() int { return int(d.Size) - d.slotsOut }

// AddChain puts a chain of direct descriptors, one per buffer, in
// consecutive slots, the head's flags last, and returns its buffer id.
func (d *PackedDriver) AddChain(bufs []Buf) uint16 {
	if len(bufs) > d.Free() {
		panic(fmt.Sprintf("virtqueuetest: %d buffers, %d free slots", len(bufs), d.Free()))
	}
	id := d.takeID(len(bufs))
	headPos, headFlags := d.availPos, uint16(0)
	for i, b := range bufs {
		addr, n, flags := d.place(b)
		if i+1 < len(bufs) {
			flags |= virtqueue.DescFNext
		}
		flags |= AvailFlags(d.availWrap)
		if i == 0 {
			headFlags = flags
			writePacked(d.at(d.GPA+PackedDescBase+16*uint64(d.availPos)), addr, n, id, 0)
			// Not yet available: flags below, after the rest.
			binary.LittleEndian.PutUint16(d.at(d.GPA+PackedDescBase+16*uint64(d.availPos)+14), AvailFlags(!d.availWrap))
		} else {
			d.WriteRaw(d.availPos, addr, n, id, flags)
		}
		if i == 0 {
			d.idAddr[id] = addr
		}
		if len(bufs) == 1 {
			d.idLen[id], d.idFlags[id] = n, flags&^(virtqueue.PackedDescFAvail|virtqueue.PackedDescFUsed)
		}
		d.availPos, d.availWrap = d.next(d.availPos, d.availWrap)
	}
	binary.LittleEndian.PutUint16(d.at(d.GPA+PackedDescBase+16*uint64(headPos)+14), headFlags)
	return id
}

// AddIndirect puts one descriptor pointing to an indirect table holding
// bufs in the next slot and returns its buffer id.
func (d *PackedDriver) AddIndirect(bufs []Buf) uint16 {
	table := d.nextTable
	d.nextTable += uint64(16*len(bufs)+15) &^ 15
	for i, b := range bufs {
		addr, n, flags := d.place(b)
		d.WriteTable(table, i, addr, n, flags)
	}
	id := d.takeID(1)
	d.WriteRaw(d.availPos, table, uint32(16*len(bufs)), id, virtqueue.DescFIndirect|AvailFlags(d.availWrap))
	d.availPos, d.availWrap = d.next(d.availPos, d.availWrap)
	return id
}

// PackedUsed is one used descriptor as the driver reads it.
type PackedUsed struct {
	ID  uint16
	Len uint32
	Pos uint16 // the slot it was read from
}

// usedAt reports whether the slot at the driver's used position holds a
// used descriptor of the current lap.
func (d *PackedDriver) usedAt() (id uint16, length uint32, ok bool) {
	b := d.at(d.GPA + PackedDescBase + 16*uint64(d.usedPos))
	flags := binary.LittleEndian.Uint16(b[14:])
	avail, used := flags&virtqueue.PackedDescFAvail != 0, flags&virtqueue.PackedDescFUsed != 0
	if avail != d.usedWrap || used != d.usedWrap {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint16(b[12:]), binary.LittleEndian.Uint32(b[8:]), true
}

// CollectUsed returns the used descriptors the device has published since
// the last call, in ring order, and frees their ids and slots.
func (d *PackedDriver) CollectUsed() []PackedUsed {
	var out []PackedUsed
	for {
		id, n, ok := d.usedAt()
		if !ok {
			return out
		}
		if id >= d.Size || !d.isOut[id] {
			panic(fmt.Sprintf("virtqueuetest: device used buffer id %d, which is not out", id))
		}
		out = append(out, PackedUsed{ID: id, Len: n, Pos: d.usedPos})
		for i := uint16(0); i < d.idSlots[id]; i++ {
			d.usedPos, d.usedWrap = d.next(d.usedPos, d.usedWrap)
		}
		d.freeIDs = append(d.freeIDs, id)
		d.isOut[id] = false
		d.out--
		d.slotsOut -= int(d.idSlots[id])
	}
}

// Recycle makes every single-descriptor chain the device has used since
// the last call available again with the same buffer, and returns how
// many it recycled. It allocates nothing, so benchmarks can keep a queue
// busy without measuring the mock.
func (d *PackedDriver) Recycle() int {
	n := 0
	for {
		id, _, ok := d.usedAt()
		if !ok {
			return n
		}
		d.usedPos, d.usedWrap = d.next(d.usedPos, d.usedWrap)
		b := d.at(d.GPA + PackedDescBase + 16*uint64(d.availPos))
		binary.LittleEndian.PutUint64(b[0:], d.idAddr[id])
		binary.LittleEndian.PutUint32(b[8:], d.idLen[id])
		// id and flags in one store, as a driver would write them
		// (the device loads them as one word: two narrower stores
		// would stall that load on store forwarding, a cost of the mock
		// that no real driver on another CPU imposes).
		binary.LittleEndian.PutUint32(b[12:], uint32(id)|uint32(d.idFlags[id]|AvailFlags(d.availWrap))<<16)
		d.availPos, d.availWrap = d.next(d.availPos, d.availWrap)
		n++
	}
}

// Outstanding returns how many chains the driver has made available and
// not yet collected back.
func (d *PackedDriver) Outstanding() int { return d.out }

// BufAddr returns the guest address of the first buffer of chain id (as
// AddChain placed it), to read what the device wrote. AddChain places a
// chain's buffers one after the other, 16-byte aligned.
func (d *PackedDriver) BufAddr(id uint16) uint64 { return d.idAddr[id] }

// SetDriverEvent writes the driver event suppression area: flags (one of
// virtqueue.EventFlag*) and, for DESC, the slot and wrap counter of the
// used descriptor the driver wants a call for.
func (d *PackedDriver) SetDriverEvent(flags uint16, pos uint16, wrap bool) {
	b := d.at(d.GPA + PackedDriverBase)
	ow := pos & 0x7fff
	if wrap {
		ow |= 1 << 15
	}
	binary.LittleEndian.PutUint16(b[0:], ow)
	binary.LittleEndian.PutUint16(b[2:], flags)
}

// UsedPos returns the slot and wrap counter of the next used descriptor
// the driver will read (what it puts in DESC to be called on the next).
func (d *PackedDriver) UsedPos() (uint16, bool) { return d.usedPos, d.usedWrap }

// DeviceEvent returns the device event suppression area: flags, slot and
// wrap counter.
func (d *PackedDriver) DeviceEvent() (flags, pos uint16, wrap bool) {
	b := d.at(d.GPA + PackedDeviceBase)
	ow := binary.LittleEndian.Uint16(b[0:])
	return binary.LittleEndian.Uint16(b[2:]), ow & 0x7fff, ow&(1<<15) != 0
}

// NeedKick reports whether a driver that has just made the slots
// [oldPos, its current position) available must kick, from the device
// event suppression area, as Linux's virtqueue_kick_prepare_packed does.
// oldPos and oldWrap are the driver's position before adding.
func (d *PackedDriver) NeedKick(oldPos uint16, oldWrap bool) bool {
	flags, pos, wrap := d.DeviceEvent()
	switch flags {
	case virtqueue.EventFlagDisable:
		return false
	case virtqueue.EventFlagDesc:
		lin := func(p uint16, w bool) int {
			if w == d.availWrap {
				return int(p)
			}
			return int(p) - int(d.Size)
		}
		ev, old, cur := lin(pos, wrap), lin(oldPos, oldWrap), int(d.availPos)
		return ev >= old && ev < cur
	default:
		return true
	}
}

// Read returns n bytes of guest memory at gpa.
func (d *PackedDriver) Read(gpa uint64, n int) []byte { return d.at(gpa)[:n] }

// SlotAddr returns the buffer address in ring slot pos.
func (d *PackedDriver) SlotAddr(pos uint16) uint64 {
	return binary.LittleEndian.Uint64(d.at(d.GPA + PackedDescBase + 16*uint64(pos)))
}
