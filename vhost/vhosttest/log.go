package vhosttest

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// VringFLog is VHOST_VRING_F_LOG, the SET_VRING_ADDR flag that asks for
// the used ring's writes to be logged at log_guest_addr.
const VringFLog = 1

// Log is a dirty-page log as QEMU allocates one for a migration: a sealed
// memfd (vhost_log_alloc), and the frontend's own mapping of it.
type Log struct {
	FD   int
	Bits []byte
}

// NewLog creates a log of size bytes, sealed against growing and
// shrinking as QEMU seals its own.
func NewLog(size int) (*Log, error) {
	fd, err := unix.MemfdCreate("vhosttest-log", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, err
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_GROW|unix.F_SEAL_SHRINK); err != nil {
		unix.Close(fd)
		return nil, err
	}
	b, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &Log{FD: fd, Bits: b}, nil
}

// Dirty reports whether the page holding guest-physical address gpa is
// marked.
func (l *Log) Dirty(gpa uint64) bool {
	p := gpa / 4096
	return p/8 < uint64(len(l.Bits)) && l.Bits[p/8]&(1<<(p%8)) != 0
}

// Close unmaps and closes the log; a second call does nothing.
func (l *Log) Close() {
	if l.Bits != nil {
		unix.Munmap(l.Bits)
		l.Bits = nil
	}
	closeFD(&l.FD)
}

// LogPayload encodes SET_LOG_BASE's VhostUserLog.
func LogPayload(size, offset uint64) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, size)
	binary.LittleEndian.PutUint64(b[8:], offset)
	return b
}

// SetLogBase sends SET_LOG_BASE with fd and reads the reply a backend
// sends once LOG_SHMFD is negotiated, as QEMU does; it fails unless the
// reply is a u64 0.
func (f *Frontend) SetLogBase(fd int, size, offset uint64) error {
	if err := f.Send(SetLogBase, FlagVersion, LogPayload(size, offset), fd); err != nil {
		return err
	}
	p, err := f.Reply(SetLogBase)
	if err != nil {
		return err
	}
	if len(p) != 8 || binary.LittleEndian.Uint64(p) != 0 {
		return fmt.Errorf("SET_LOG_BASE reply %x, want a u64 0", p)
	}
	return nil
}

// LogAddrPayload is AddrPayload with VHOST_VRING_F_LOG set and the used
// ring logged at its own guest-physical address, as QEMU sends it while
// migrating.
func (f *Frontend) LogAddrPayload(r *Ring) []byte {
	b := f.AddrPayload(r)
	binary.LittleEndian.PutUint32(b[4:], VringFLog)
	binary.LittleEndian.PutUint64(b[32:], r.Driver.Config().Used)
	return b
}
