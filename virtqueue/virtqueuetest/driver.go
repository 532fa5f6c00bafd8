// Package virtqueuetest is a driver-side mock of a split virtqueue: it lays
// out rings and buffers in an ordinary byte slice posing as guest memory, the
// way a guest's virtio driver would, so device-side code can be tested
// without a guest.
package virtqueuetest

import (
	"encoding/binary"
	"fmt"

	"github.com/vhostd/vhostd/virtqueue"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
)

// Layout of the fake guest memory. Buffers are handed out from BufBase up.
const (
	DescBase  = 0x1000
	AvailBase = 0x20000
	UsedBase  = 0x30000
	BufBase   = 0x100000
)

// Driver plays the guest driver of one queue.
type Driver struct {
	Mem      []byte
	GPA      uint64 // guest-physical address of Mem[0]
	Size     uint16
	nextBuf  uint64
	free     []uint16 // free descriptor indices
	avail    uint16   // driver's avail idx
	usedSeen uint16
	// Indirect tables are placed here.
	nextTable uint64
}

// Buf describes one buffer of a chain: Data is copied in for a
// device-readable buffer; for a device-writable one, WriteLen bytes are
// reserved.
//
// Flags are ORed into the descriptor's flags as they are, to play a driver
// that gets them wrong: DescFWrite on a buffer with Data (a device-writable
// descriptor in a transmit chain), DescFIndirect inside an indirect table.
type Buf struct {
	Data     []byte
	Write    bool
	WriteLen int
	Flags    uint16
}

// New returns a driver for a queue of size descriptors in memSize bytes of
// fake guest memory at guest-physical address gpa.
func New(size uint16, memSize int, gpa uint64) *Driver {
	return NewOn(make([]byte, memSize), size, gpa)
}

// NewOn returns a driver whose fake guest memory is mem (for example a
// mapped memfd shared with a real backend).
func NewOn(mem []byte, size uint16, gpa uint64) *Driver {
	d := &Driver{Mem: mem, GPA: gpa, Size: size, nextBuf: gpa + BufBase, nextTable: 0x40000}
	for i := int(size) - 1; i >= 0; i-- {
		d.free = append(d.free, uint16(i))
	}
	return d
}

// Memory returns the fake memory as a guestmem.Memory with one region.
func (d *Driver) Memory() *guestmem.Memory {
	m, err := guestmem.FromBytes([]guestmem.RegionSpec{{GuestPhysAddr: d.GPA, Size: uint64(len(d.Mem)), UserAddr: 0x7f0000000000 + d.GPA}}, [][]byte{d.Mem})
	if err != nil {
		panic(err)
	}
	return m
}

// Config returns the queue configuration a frontend would send.
func (d *Driver) Config() virtqueue.Config {
	return virtqueue.Config{Size: d.Size, Desc: d.GPA + DescBase, Avail: d.GPA + AvailBase, Used: d.GPA + UsedBase, Indirect: true}
}

// Alloc reserves n bytes of buffer space and returns its guest address.
func (d *Driver) Alloc(n int) uint64 {
	a := d.nextBuf
	d.nextBuf += uint64(n+15) &^ 15
	if d.nextBuf-d.GPA > uint64(len(d.Mem)) {
		d.nextBuf = BufBase + d.GPA
		a = d.nextBuf
		d.nextBuf += uint64(n+15) &^ 15
	}
	return a
}

func (d *Driver) at(gpa uint64) []byte { return d.Mem[gpa-d.GPA:] }

// WriteDesc writes raw descriptor i of the table at tableGPA.
func (d *Driver) WriteDesc(tableGPA uint64, i uint16, addr uint64, length uint32, flags, next uint16) {
	b := d.at(tableGPA + 16*uint64(i))
	binary.LittleEndian.PutUint64(b[0:], addr)
	binary.LittleEndian.PutUint32(b[8:], length)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

// Publish puts head in the available ring and advances the avail index.
func (d *Driver) Publish(head uint16) {
	binary.LittleEndian.PutUint16(d.at(d.GPA+AvailBase+4+2*uint64(d.avail%d.Size)), head)
	d.avail++
	binary.LittleEndian.PutUint16(d.at(d.GPA+AvailBase+2), d.avail)
}

// SetAvailIdx overwrites the avail index (for malformed-ring tests).
func (d *Driver) SetAvailIdx(v uint16) {
	d.avail = v
	binary.LittleEndian.PutUint16(d.at(d.GPA+AvailBase+2), v)
}

// AddChain builds a chain of direct descriptors and publishes it. It returns
// the head index.
func (d *Driver) AddChain(bufs []Buf) uint16 {
	if len(bufs) > len(d.free) {
		panic(fmt.Sprintf("virtqueuetest: %d buffers, %d free descriptors", len(bufs), len(d.free)))
	}
	idx := make([]uint16, len(bufs))
	for i := range bufs {
		idx[i] = d.free[len(d.free)-1]
		d.free = d.free[:len(d.free)-1]
	}
	for i, b := range bufs {
		addr, n, flags := d.place(b)
		var next uint16
		if i+1 < len(bufs) {
			flags |= virtqueue.DescFNext
			next = idx[i+1]
		}
		d.WriteDesc(d.GPA+DescBase, idx[i], addr, n, flags, next)
	}
	d.Publish(idx[0])
	return idx[0]
}

// AddIndirect builds one descriptor pointing to an indirect table holding
// bufs, and publishes it.
func (d *Driver) AddIndirect(bufs []Buf) uint16 { return d.AddIndirectFlags(bufs, 0) }

// AddIndirectFlags is AddIndirect with flags ORed into the flags of the
// descriptor naming the table (DescFNext, which the specification forbids
// there, or DescFWrite, which the device must ignore). With DescFNext the
// descriptor's next is 0.
func (d *Driver) AddIndirectFlags(bufs []Buf, flags uint16) uint16 {
	table := d.nextTable + d.GPA
	d.nextTable += uint64(16*len(bufs)+15) &^ 15
	for i, b := range bufs {
		addr, n, flags := d.place(b)
		var next uint16
		if i+1 < len(bufs) {
			flags |= virtqueue.DescFNext
			next = uint16(i + 1)
		}
		d.WriteDesc(table, uint16(i), addr, n, flags, next)
	}
	head := d.free[len(d.free)-1]
	d.free = d.free[:len(d.free)-1]
	d.WriteDesc(d.GPA+DescBase, head, table, uint32(16*len(bufs)), virtqueue.DescFIndirect|flags, 0)
	d.Publish(head)
	return head
}

func (d *Driver) place(b Buf) (uint64, uint32, uint16) {
	if b.Write {
		return d.Alloc(b.WriteLen), uint32(b.WriteLen), virtqueue.DescFWrite | b.Flags
	}
	a := d.Alloc(len(b.Data))
	copy(d.at(a), b.Data)
	return a, uint32(len(b.Data)), b.Flags
}

// Used is one used-ring element.
type Used struct {
	ID  uint16
	Len uint32
}

// UsedIdx returns the device's published used index.
func (d *Driver) UsedIdx() uint16 {
	return binary.LittleEndian.Uint16(d.at(d.GPA + UsedBase + 2))
}

// UsedFlags returns the device's used-ring flags.
func (d *Driver) UsedFlags() uint16 {
	return binary.LittleEndian.Uint16(d.at(d.GPA + UsedBase))
}

// AvailEvent returns the device's avail_event field.
func (d *Driver) AvailEvent() uint16 {
	return binary.LittleEndian.Uint16(d.at(d.GPA + UsedBase + 4 + 8*uint64(d.Size)))
}

// SetUsedEvent sets the driver's used_event field.
func (d *Driver) SetUsedEvent(v uint16) {
	binary.LittleEndian.PutUint16(d.at(d.GPA+AvailBase+4+2*uint64(d.Size)), v)
}

// ArmCallback asks for a call on the next used buffer, as a driver does
// after consuming the used ring with EVENT_IDX (used_event = last seen).
func (d *Driver) ArmCallback() { d.SetUsedEvent(d.usedSeen) }

// SetAvailFlags sets the driver's avail-ring flags.
func (d *Driver) SetAvailFlags(v uint16) {
	binary.LittleEndian.PutUint16(d.at(d.GPA+AvailBase), v)
}

// CollectUsed returns the used elements published since the last call and
// frees their descriptors (direct chains are followed through NEXT).
func (d *Driver) CollectUsed() []Used {
	var out []Used
	for end := d.UsedIdx(); d.usedSeen != end; d.usedSeen++ {
		e := d.at(d.GPA + UsedBase + 4 + 8*uint64(d.usedSeen%d.Size))
		u := Used{ID: binary.LittleEndian.Uint16(e), Len: binary.LittleEndian.Uint32(e[4:])}
		out = append(out, u)
		for i := u.ID; ; {
			dd := d.at(d.GPA + DescBase + 16*uint64(i))
			d.free = append(d.free, i)
			if binary.LittleEndian.Uint16(dd[12:])&virtqueue.DescFNext == 0 {
				break
			}
			i = binary.LittleEndian.Uint16(dd[14:])
		}
	}
	return out
}

// Read returns n bytes of guest memory at gpa.
func (d *Driver) Read(gpa uint64, n int) []byte { return d.at(gpa)[:n] }

// DescAddr returns the buffer address in descriptor i of the main table.
func (d *Driver) DescAddr(i uint16) uint64 {
	return binary.LittleEndian.Uint64(d.at(d.GPA + DescBase + 16*uint64(i)))
}

// JoinMemory returns one guest memory holding every driver's fake memory
// as a region of its own, for devices whose queues live in one guest.
// The drivers' guest-physical ranges must not overlap.
func JoinMemory(ds ...*Driver) *guestmem.Memory {
	var specs []guestmem.RegionSpec
	var bufs [][]byte
	for _, d := range ds {
		specs = append(specs, guestmem.RegionSpec{GuestPhysAddr: d.GPA, Size: uint64(len(d.Mem)), UserAddr: 0x7f0000000000 + d.GPA})
		bufs = append(bufs, d.Mem)
	}
	m, err := guestmem.FromBytes(specs, bufs)
	if err != nil {
		panic(err)
	}
	return m
}

// Recycle makes every chain the device has used since the last call
// available again, unchanged, and returns how many it recycled. It
// allocates nothing, so benchmarks can keep a queue busy without measuring
// the mock.
func (d *Driver) Recycle() int {
	n := 0
	for end := d.UsedIdx(); d.usedSeen != end; d.usedSeen++ {
		e := d.at(d.GPA + UsedBase + 4 + 8*uint64(d.usedSeen%d.Size))
		head := uint16(e[0]) | uint16(e[1])<<8
		slot := d.at(d.GPA + AvailBase + 4 + 2*uint64(d.avail%d.Size))
		slot[0], slot[1] = byte(head), byte(head>>8)
		d.avail++
		n++
	}
	idx := d.at(d.GPA + AvailBase + 2)
	idx[0], idx[1] = byte(d.avail), byte(d.avail>>8)
	return n
}

// Outstanding returns how many chains the driver has made available and
// not yet collected back from the used ring.
func (d *Driver) Outstanding() int { return int(d.avail - d.usedSeen) }
