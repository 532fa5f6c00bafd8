package guestmem_test

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/test/hugepages"
	"github.com/vhostd/vhostd/virtqueue/guestmem"
)

// A region in a hugetlbfs file is mapped from a multiple of the huge page
// size, for a whole number of huge pages, whatever the region's own
// offset and size: the kernel refuses (EINVAL) a mapping of such a file
// at an offset aligned to 4 KiB only. It needs root (huge pages are
// reserved for it), as CI has.
func TestMapHugetlbfs(t *testing.T) {
	hp, err := hugepages.Reserve(2, false)
	if err != nil {
		t.Fatalf("huge pages for the test: %v", err)
	}
	defer hp.Release()
	f, err := os.CreateTemp(hp.Dir, "guest")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	os.Remove(f.Name())
	if err := f.Truncate(2 * hugepages.Size); err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	// A region starting 4 KiB into the second huge page.
	spec := guestmem.RegionSpec{GuestPhysAddr: 0x40000000, Size: 8192, UserAddr: 0x7f00_0000_0000, MmapOffset: hugepages.Size + 4096}
	m, err := guestmem.Map([]guestmem.RegionSpec{spec}, []int{fd})
	if err != nil {
		t.Fatalf("map a region of a hugetlbfs file: %v", err)
	}
	b, err := m.Slice(spec.GuestPhysAddr+8192-4, 4)
	if err != nil {
		t.Fatal(err)
	}
	copy(b, "huge")
	m.Unmap()
	check, err := unix.Mmap(fd, hugepages.Size, hugepages.Size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(check)
	if got := string(check[4096+8192-4 : 4096+8192]); got != "huge" {
		t.Fatalf("write through the mapping not in the file: %q", got)
	}
}
