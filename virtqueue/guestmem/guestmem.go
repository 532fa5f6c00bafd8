// Package guestmem maps a guest's memory regions into this process and
// translates guest-physical and frontend-virtual addresses into bounds-checked
// byte slices.
//
// A Memory is immutable once built: a new memory table from the frontend
// builds a new Memory, and the old one is unmapped only after no reader can
// still hold it (the data path takes one snapshot per burst).
package guestmem

import (
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrUnmapped reports an address that no region covers, or a range that runs
// past the end of guest memory. It is a sentinel so the data path can return
// it without allocating.
var ErrUnmapped = errors.New("guest address not mapped")

// RegionSpec describes one region as the frontend announces it in
// SET_MEM_TABLE or ADD_MEM_REG.
type RegionSpec struct {
	GuestPhysAddr uint64 // guest-physical address of the region's first byte
	Size          uint64 // region length in bytes
	UserAddr      uint64 // the frontend's virtual address of the first byte
	MmapOffset    uint64 // offset of the region inside the fd
}

func (s RegionSpec) String() string {
	return fmt.Sprintf("gpa=%#x size=%#x uaddr=%#x off=%#x", s.GuestPhysAddr, s.Size, s.UserAddr, s.MmapOffset)
}

// Region is one mapped region.
type Region struct {
	RegionSpec
	base    unsafe.Pointer // &data[0]
	data    []byte         // exactly Size bytes, starting at GuestPhysAddr
	mapping []byte         // what mmap returned (page-aligned, may be larger); nil for test memory
}

// Memory is a set of non-overlapping regions sorted by guest-physical address.
type Memory struct {
	regions []Region
	byUser  []int   // region indices sorted by UserAddr
	hot     *Region // the largest region, tried first
	// spans are the host address ranges of the regions' mappings, for
	// Contains: set when the Memory is built and never changed, and gone
	// set by Unmap, so that a goroutine that recovered from a fault may ask
	// at any time, even while the control path releases the Memory.
	spans []span
	gone  atomic.Bool
}

// MaxRegions is the most regions one Memory holds. It matches the number of
// memory slots vhostd advertises in GET_MAX_MEM_SLOTS.
const MaxRegions = 32

// Regions returns the region descriptions, sorted by guest-physical address.
func (m *Memory) Regions() []RegionSpec {
	if m == nil {
		return nil
	}
	out := make([]RegionSpec, len(m.regions))
	for i, r := range m.regions {
		out[i] = r.RegionSpec
	}
	return out
}

// Validate checks a set of region descriptions for the errors a frontend can
// make: empty or wrapping regions, overlaps in either address space, too many
// regions.
func Validate(specs []RegionSpec) error {
	if len(specs) > MaxRegions {
		return fmt.Errorf("%d regions, at most %d are supported", len(specs), MaxRegions)
	}
	for i, s := range specs {
		if s.Size == 0 {
			return fmt.Errorf("region %d (%v): size is zero", i, s)
		}
		if s.GuestPhysAddr+s.Size < s.GuestPhysAddr || s.UserAddr+s.Size < s.UserAddr || s.MmapOffset+s.Size < s.MmapOffset {
			return fmt.Errorf("region %d (%v): range wraps the address space", i, s)
		}
		if s.MmapOffset > 1<<62 || s.Size > 1<<46 {
			return fmt.Errorf("region %d (%v): size or offset is implausibly large", i, s)
		}
		for j := 0; j < i; j++ {
			o := specs[j]
			if overlaps(s.GuestPhysAddr, s.Size, o.GuestPhysAddr, o.Size) {
				return fmt.Errorf("region %d (%v) overlaps region %d (%v) in guest-physical space", i, s, j, o)
			}
			if overlaps(s.UserAddr, s.Size, o.UserAddr, o.Size) {
				return fmt.Errorf("region %d (%v) overlaps region %d (%v) in frontend address space", i, s, j, o)
			}
		}
	}
	return nil
}

func overlaps(a, an, b, bn uint64) bool { return a < b+bn && b < a+an }

// Map maps each region from its fd (MAP_SHARED) and returns the Memory. The
// fds are not closed: the caller owns them and may close them once Map
// returns (the mappings stay valid). Each region is checked against the fd's
// size before mapping, so a table that points past the end of its memfd
// fails here rather than faulting later.
func Map(specs []RegionSpec, fds []int) (*Memory, error) {
	if len(specs) != len(fds) {
		return nil, fmt.Errorf("%d regions but %d fds", len(specs), len(fds))
	}
	if err := Validate(specs); err != nil {
		return nil, err
	}
	m := &Memory{}
	for i, s := range specs {
		r, err := mapRegion(s, fds[i])
		if err != nil {
			m.Unmap()
			return nil, fmt.Errorf("region %d (%v): %w", i, s, err)
		}
		m.regions = append(m.regions, r)
	}
	m.index()
	return m, nil
}

func mapRegion(s RegionSpec, fd int) (Region, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Region{}, fmt.Errorf("fstat fd %d: %w", fd, err)
	}
	// Regular files and memfds have a size; a region must fit inside it.
	// Other fd kinds (device memory) report 0 and are mapped on trust.
	if st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) < s.MmapOffset+s.Size {
		return Region{}, fmt.Errorf("region ends at offset %#x but its fd holds only %#x bytes", s.MmapOffset+s.Size, st.Size)
	}
	page := pageSize(fd)
	start, skip, length := alignMapping(s.MmapOffset, s.Size, page)
	if length > uint64(^uint(0)>>1) || length < s.Size {
		return Region{}, fmt.Errorf("region too large to map")
	}
	mapping, err := unix.Mmap(fd, int64(start), int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return Region{}, fmt.Errorf("mmap %#x bytes at offset %#x (page size %#x): %w", length, start, page, err)
	}
	return Region{RegionSpec: s, data: mapping[skip : skip+s.Size : skip+s.Size], mapping: mapping}, nil
}

// FromBytes builds a Memory over ordinary byte slices, one per spec; it is
// for tests and fakes (a driver-side mock builds rings in such memory).
// UserAddr in each spec is kept as given.
func FromBytes(specs []RegionSpec, bufs [][]byte) (*Memory, error) {
	if len(specs) != len(bufs) {
		return nil, fmt.Errorf("%d regions but %d buffers", len(specs), len(bufs))
	}
	if err := Validate(specs); err != nil {
		return nil, err
	}
	m := &Memory{}
	for i, s := range specs {
		if uint64(len(bufs[i])) < s.Size {
			return nil, fmt.Errorf("region %d: buffer holds %d bytes, region is %d", i, len(bufs[i]), s.Size)
		}
		m.regions = append(m.regions, Region{RegionSpec: s, data: bufs[i][:s.Size:s.Size]})
	}
	m.index()
	return m, nil
}

func (m *Memory) index() {
	sort.Slice(m.regions, func(i, j int) bool { return m.regions[i].GuestPhysAddr < m.regions[j].GuestPhysAddr })
	// Chunk tries the largest region first: it holds most buffers.
	m.hot = nil
	for i := range m.regions {
		m.regions[i].base = unsafe.Pointer(unsafe.SliceData(m.regions[i].data))
		if m.hot == nil || m.regions[i].Size > m.hot.Size {
			m.hot = &m.regions[i]
		}
	}
	m.byUser = make([]int, len(m.regions))
	for i := range m.byUser {
		m.byUser[i] = i
	}
	sort.Slice(m.byUser, func(i, j int) bool {
		return m.regions[m.byUser[i]].UserAddr < m.regions[m.byUser[j]].UserAddr
	})
	m.spans = make([]span, 0, len(m.regions))
	for i := range m.regions {
		r := &m.regions[i]
		b := r.mapping // what was mapped, pages around the region included
		if b == nil {
			b = r.data
		}
		if len(b) > 0 {
			m.spans = append(m.spans, span{uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b))})
		}
	}
}

// Unmap releases every mapping. The Memory must not be used afterwards, and
// no reader may still hold it.
func (m *Memory) Unmap() {
	if m == nil {
		return
	}
	m.gone.Store(true) // before munmap: the range may be mapped anew at once
	for i := range m.regions {
		if m.regions[i].mapping != nil {
			_ = unix.Munmap(m.regions[i].mapping)
		}
		m.regions[i].mapping = nil
		m.regions[i].data = nil
	}
	m.regions = nil
	m.hot = nil
}

// find returns the index of the region holding gpa, or -1.
func (m *Memory) find(gpa uint64) int {
	rs := m.regions
	// Guests usually have one to three regions: a linear scan beats a
	// binary search there.
	if len(rs) <= 4 {
		for i := range rs {
			if gpa-rs[i].GuestPhysAddr < rs[i].Size {
				return i
			}
		}
		return -1
	}
	i := sort.Search(len(rs), func(i int) bool { return rs[i].GuestPhysAddr+rs[i].Size > gpa })
	if i < len(rs) && gpa >= rs[i].GuestPhysAddr {
		return i
	}
	return -1
}

// Chunk returns the bytes at guest-physical address gpa, at most n of them,
// stopping at the end of the region that holds gpa; the result is shorter
// than n only when the range continues in another region. It returns nil if
// gpa is not mapped or n is zero.
func (m *Memory) Chunk(gpa, n uint64) []byte {
	if b, ok := m.ChunkFast(gpa, n); ok {
		return b
	}
	return m.chunkSlow(gpa, n)
}

// ChunkFast is Chunk's fast path for the data path, small enough to be
// inlined: it succeeds when all n bytes lie in the largest region (most
// guests have just one), and otherwise reports false so the caller falls
// back to Chunk.
func (m *Memory) ChunkFast(gpa, n uint64) ([]byte, bool) {
	if r := m.hot; r != nil {
		if off := gpa - r.GuestPhysAddr; off < r.Size && n-1 < r.Size-off {
			// In range, checked just above; r.data keeps the memory alive.
			return unsafe.Slice((*byte)(unsafe.Add(r.base, off)), n), true
		}
	}
	return nil, false
}

// Hot is ChunkFast's region, read once for a burst of lookups: a loop
// that translates many buffers keeps it in registers instead of loading
// it from m for each one. Valid as long as m is.
type Hot struct {
	base      unsafe.Pointer
	gpa, size uint64
}

// Hot returns the window ChunkFast tries, the largest region.
func (m *Memory) Hot() Hot {
	if r := m.hot; r != nil {
		return Hot{base: r.base, gpa: r.GuestPhysAddr, size: r.Size}
	}
	return Hot{} // size 0: every lookup falls back
}

// Chunk is ChunkFast through the window h: the n bytes at gpa, or nil
// when they are not all in the window (n = 0 included). One result, not
// ChunkFast's two: a burst loop then keeps fewer values alive.
func (h Hot) Chunk(gpa, n uint64) []byte {
	if off := gpa - h.gpa; off < h.size && n-1 < h.size-off {
		// In range, checked just above; the Memory keeps it mapped.
		return unsafe.Slice((*byte)(unsafe.Add(h.base, off)), n)
	}
	return nil
}

func (m *Memory) chunkSlow(gpa, n uint64) []byte {
	i := m.find(gpa)
	if i < 0 || n == 0 {
		return nil
	}
	r := &m.regions[i]
	off := gpa - r.GuestPhysAddr
	if l := r.Size - off; n > l {
		n = l
	}
	return r.data[off : off+n : off+n]
}

// Slice returns exactly n bytes at guest-physical address gpa, which must lie
// inside a single region; otherwise it returns ErrUnmapped.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	b := m.Chunk(gpa, n)
	if uint64(len(b)) != n || n == 0 {
		return nil, ErrUnmapped
	}
	return b, nil
}

// UserToGuest translates a frontend virtual address (as used in
// SET_VRING_ADDR) to a guest-physical address, requiring the n bytes from it
// to lie in one region.
func (m *Memory) UserToGuest(uaddr, n uint64) (uint64, error) {
	idx := sort.Search(len(m.byUser), func(i int) bool {
		r := &m.regions[m.byUser[i]]
		return r.UserAddr+r.Size > uaddr
	})
	if idx == len(m.byUser) {
		return 0, ErrUnmapped
	}
	r := &m.regions[m.byUser[idx]]
	if uaddr < r.UserAddr || n > r.Size || uaddr-r.UserAddr > r.Size-n {
		return 0, ErrUnmapped
	}
	return r.GuestPhysAddr + (uaddr - r.UserAddr), nil
}

// Add returns a new Memory with one more region, mapped from fd. The
// receiver is unchanged and keeps its mappings, so the data path can go on
// using it until the new Memory is published.
func (m *Memory) Add(s RegionSpec, fd int) (*Memory, error) {
	specs := append(m.Regions(), s)
	if err := Validate(specs); err != nil {
		return nil, err
	}
	r, err := mapRegion(s, fd)
	if err != nil {
		return nil, err
	}
	n := &Memory{regions: append(m.shared(), r)}
	n.index()
	return n, nil
}

// Remove returns a new Memory without the region that matches s (by
// guest-physical address, size and user address) and the removed region's
// mapping, as a Memory of its own for the caller to Unmap once no reader
// holds the old table.
func (m *Memory) Remove(s RegionSpec) (kept, removed *Memory, err error) {
	for i, r := range m.regions {
		if r.GuestPhysAddr == s.GuestPhysAddr && r.Size == s.Size && r.UserAddr == s.UserAddr {
			rs := m.shared()
			removed = &Memory{regions: []Region{rs[i]}}
			kept = &Memory{regions: append(rs[:i], rs[i+1:]...)}
			kept.index()
			removed.index()
			return kept, removed, nil
		}
	}
	return nil, nil, fmt.Errorf("no region matches %v", s)
}

// shared copies the region list; the mappings themselves are shared between
// the old and new Memory.
func (m *Memory) shared() []Region {
	if m == nil {
		return nil
	}
	return append([]Region(nil), m.regions...)
}

// Detach makes m forget its mappings, so that unmapping m releases nothing.
// It is used when m is replaced by a table derived from it with Add or
// Remove, which now owns the mappings.
func (m *Memory) Detach() {
	if m == nil {
		return
	}
	m.regions = nil
	m.byUser = nil
	m.hot = nil
}
