package virtqueuetest

import (
	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/virtqueue/guestmem"
)

// Memfd is fake guest memory in a memfd, as QEMU's memory-backend-memfd:
// Mem is the driver's mapping (build rings on it with NewOn), Map gives the
// backend's own mapping the way vhost maps SET_MEM_TABLE, and Truncate
// shrinks the file under both, as a hostile frontend can: accesses past
// the new end then raise SIGBUS.
type Memfd struct {
	FD  int
	Mem []byte
}

// NewMemfd creates and maps size bytes of memfd memory.
func NewMemfd(size int) (*Memfd, error) {
	fd, err := unix.MemfdCreate("virtqueuetest", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, err
	}
	m, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &Memfd{FD: fd, Mem: m}, nil
}

// Map maps the whole memfd again, as one region at guest-physical address
// gpa, through guestmem.Map: a backend's view of the memory.
func (m *Memfd) Map(gpa uint64) (*guestmem.Memory, error) {
	return guestmem.Map([]guestmem.RegionSpec{{GuestPhysAddr: gpa, Size: uint64(len(m.Mem)), UserAddr: 0x7f0000000000 + gpa}}, []int{m.FD})
}

// Truncate sets the memfd's size to n bytes. The mappings keep their
// length; pages past n fault.
func (m *Memfd) Truncate(n int64) error { return unix.Ftruncate(m.FD, n) }

// Close unmaps the driver's mapping and closes the memfd.
func (m *Memfd) Close() {
	if m.Mem != nil {
		unix.Munmap(m.Mem)
		m.Mem = nil
	}
	if m.FD >= 0 {
		unix.Close(m.FD)
		m.FD = -1
	}
}
