package guestmem

import (
	"os"

	"golang.org/x/sys/unix"
)

// hugetlbfsMagic is the f_type statfs reports for a hugetlbfs file.
const hugetlbfsMagic = 0x958458f6

// pageSize returns the page size of the memory behind fd: the huge page
// size for a file on hugetlbfs (its f_bsize), else the system page size.
// A mapping of such a file must start at a multiple of it, and its length
// is one too (munmap of a huge-page mapping takes whole pages).
func pageSize(fd int) uint64 {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err == nil && uint32(fs.Type) == hugetlbfsMagic && fs.Bsize > 0 {
		return uint64(fs.Bsize)
	}
	return uint64(os.Getpagesize())
}

// alignMapping returns where to map a region of size bytes at offset in
// a file of page size page: the aligned start offset, how many bytes of
// the mapping come before the region, and the mapping's length, a whole
// number of pages.
func alignMapping(offset, size, page uint64) (start, skip, length uint64) {
	start = offset &^ (page - 1)
	skip = offset - start
	length = (skip + size + page - 1) &^ (page - 1)
	return start, skip, length
}
