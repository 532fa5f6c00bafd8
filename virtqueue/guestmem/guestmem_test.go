package guestmem_test

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/virtqueue/guestmem"
)

func twoRegions(t *testing.T) (*guestmem.Memory, [][]byte) {
	t.Helper()
	bufs := [][]byte{make([]byte, 0x1000), make([]byte, 0x2000)}
	specs := []guestmem.RegionSpec{
		{GuestPhysAddr: 0x10000, Size: 0x2000, UserAddr: 0x7000_0000_0000},
		{GuestPhysAddr: 0x0, Size: 0x1000, UserAddr: 0x7000_1000_0000},
	}
	m, err := guestmem.FromBytes(specs, [][]byte{bufs[1], bufs[0]})
	if err != nil {
		t.Fatal(err)
	}
	return m, bufs
}

func TestTranslate(t *testing.T) {
	m, bufs := twoRegions(t)
	b, err := m.Slice(0x10010, 16)
	if err != nil || len(b) != 16 {
		t.Fatalf("slice: %v", err)
	}
	b[0] = 0xaa
	if bufs[1][0x10] != 0xaa {
		t.Fatal("slice does not alias region memory")
	}
	if cap(b) != 16 {
		t.Fatalf("slice capacity %d leaks past the requested range", cap(b))
	}
	for _, bad := range []struct{ gpa, n uint64 }{
		{0x1000, 1},          // hole
		{0xfff, 2},           // runs off region 0 into the hole
		{0x11ff0, 0x20},      // runs off region 1
		{0xffffffffffff0, 1}, // nowhere
		{0x10000, 0},         // empty
		{0x10000, 1 << 63},   // huge
	} {
		if _, err := m.Slice(bad.gpa, bad.n); !errors.Is(err, guestmem.ErrUnmapped) {
			t.Errorf("Slice(%#x, %#x) = %v, want ErrUnmapped", bad.gpa, bad.n, err)
		}
	}
	if c := m.Chunk(0x11ff0, 0x100); len(c) != 0x10 {
		t.Fatalf("chunk at region end has %d bytes, want 16", len(c))
	}
	g, err := m.UserToGuest(0x7000_0000_0100, 0x100)
	if err != nil || g != 0x10100 {
		t.Fatalf("UserToGuest = %#x, %v", g, err)
	}
	g, err = m.UserToGuest(0x7000_1000_0ff0, 0x10)
	if err != nil || g != 0xff0 {
		t.Fatalf("UserToGuest = %#x, %v", g, err)
	}
	for _, bad := range []struct{ u, n uint64 }{{0x7000_0000_1ff0, 0x20}, {0x6fff_ffff_ffff, 1}, {0x7000_1000_1000, 1}} {
		if _, err := m.UserToGuest(bad.u, bad.n); err == nil {
			t.Errorf("UserToGuest(%#x, %#x) accepted", bad.u, bad.n)
		}
	}
}

func TestManyRegionsBinarySearch(t *testing.T) {
	var specs []guestmem.RegionSpec
	var bufs [][]byte
	for i := 0; i < 10; i++ {
		specs = append(specs, guestmem.RegionSpec{GuestPhysAddr: uint64(i) * 0x10000, Size: 0x1000, UserAddr: 0x1_0000_0000 + uint64(i)*0x10000})
		bufs = append(bufs, make([]byte, 0x1000))
	}
	m, err := guestmem.FromBytes(specs, bufs)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		b, err := m.Slice(uint64(i)*0x10000+0x800, 8)
		if err != nil {
			t.Fatalf("region %d: %v", i, err)
		}
		b[0] = byte(i + 1)
		if bufs[i][0x800] != byte(i+1) {
			t.Fatalf("region %d resolved to the wrong buffer", i)
		}
		if _, err := m.Slice(uint64(i)*0x10000+0x1000, 1); err == nil {
			t.Fatalf("hole after region %d mapped", i)
		}
	}
}

func TestValidate(t *testing.T) {
	for name, specs := range map[string][]guestmem.RegionSpec{
		"zero size":    {{GuestPhysAddr: 0, Size: 0, UserAddr: 0}},
		"gpa overlap":  {{GuestPhysAddr: 0, Size: 0x2000, UserAddr: 0}, {GuestPhysAddr: 0x1000, Size: 0x1000, UserAddr: 0x10000}},
		"user overlap": {{GuestPhysAddr: 0, Size: 0x1000, UserAddr: 0}, {GuestPhysAddr: 0x10000, Size: 0x1000, UserAddr: 0x800}},
		"wraps":        {{GuestPhysAddr: ^uint64(0) - 10, Size: 0x1000, UserAddr: 0}},
	} {
		if err := guestmem.Validate(specs); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMapMemfd(t *testing.T) {
	fd, err := unix.MemfdCreate("guestmem-test", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, 3*4096); err != nil {
		t.Fatal(err)
	}
	spec := guestmem.RegionSpec{GuestPhysAddr: 0x100000, Size: 2 * 4096, UserAddr: 0x7f00_0000_0000, MmapOffset: 4096 + 512}
	if _, err := guestmem.Map([]guestmem.RegionSpec{spec}, []int{fd}); err == nil {
		t.Fatal("region past the end of the memfd mapped")
	}
	spec.MmapOffset = 512 // unaligned offsets are rounded down for mmap
	m, err := guestmem.Map([]guestmem.RegionSpec{spec}, []int{fd})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := m.Slice(0x100000, 4)
	copy(b, "ping")
	got := make([]byte, 4)
	if _, err := unix.Pread(fd, got, 512); err != nil || string(got) != "ping" {
		t.Fatalf("write through the mapping not seen in the fd: %q %v", got, err)
	}
	more, err := m.Add(guestmem.RegionSpec{GuestPhysAddr: 0, Size: 4096, UserAddr: 0x7e00_0000_0000}, fd)
	if err != nil {
		t.Fatal(err)
	}
	m.Detach()
	if _, err := more.Slice(0x100000, 4); err != nil {
		t.Fatal("added table lost the old region")
	}
	kept, removed, err := more.Remove(spec)
	if err != nil {
		t.Fatal(err)
	}
	more.Detach()
	if _, err := kept.Slice(0x100000, 4); err == nil {
		t.Fatal("removed region still mapped in the new table")
	}
	removed.Unmap()
	kept.Unmap()
}

func TestAlignMapping(t *testing.T) {
	const huge = 2 << 20
	for _, c := range []struct {
		offset, size, page  uint64
		start, skip, length uint64
	}{
		{0, 256 << 20, 4096, 0, 0, 256 << 20},
		{0x1234, 100, 4096, 0x1000, 0x234, 4096},
		{0x1000, 0x1001, 4096, 0x1000, 0, 0x2000},
		{0, 256 << 20, huge, 0, 0, 256 << 20},
		{0, 1 << 20, huge, 0, 0, huge},
		{huge + 4096, huge, huge, huge, 4096, 2 * huge},
	} {
		start, skip, length := guestmem.AlignMapping(c.offset, c.size, c.page)
		if start != c.start || skip != c.skip || length != c.length {
			t.Errorf("alignMapping(%#x, %#x, %#x) = %#x, %#x, %#x; want %#x, %#x, %#x",
				c.offset, c.size, c.page, start, skip, length, c.start, c.skip, c.length)
		}
	}
}
