package guestmem

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Dirty-page logging for live migration (vhost-user.rst, "Migration").
// While the frontend migrates the guest, it gives the backend a bitmap of
// one bit per 4 KiB page of guest-physical memory (SET_LOG_BASE) and
// acknowledges VHOST_F_LOG_ALL; every byte the backend then writes into
// guest memory must mark its page, so that the frontend copies the page
// again:
//
//	page = addr / VHOST_LOG_PAGE
//	log[page / 8] |= 1 << page % 8
//
// "Use atomic operations, as the log may be concurrently manipulated": the
// frontend clears bits while the backend sets them.

// LogPageSize is the guest memory each bit of a dirty log covers
// (VHOST_LOG_PAGE).
const LogPageSize = 0x1000

// MaxLogSize bounds the size of a dirty log vhostd maps: 4 GiB of bitmap
// cover 128 TiB of guest memory, and anything larger is a frontend's
// mistake rather than a guest.
const MaxLogSize = 1 << 32

// Log is a dirty-page bitmap shared with the frontend. Its methods may be
// called from any goroutine; a nil *Log logs nothing, which is how the data
// path runs while logging is off.
//
// A Log is unmapped only once no reader can hold it, as guest memory is:
// the data path is handed a Log with the rings that write through it, and
// gives both back together.
type Log struct {
	base    unsafe.Pointer // first byte of the bitmap
	size    uint64         // bytes of bitmap
	pages   uint64         // pages covered: 8 * size
	mapping []byte         // what mmap returned; nil for a log over test memory
	// beyond counts writes that reached past the pages the log covers:
	// their out-of-range pages are not marked (the frontend sized the log
	// for the memory it knows; there is nothing to mark them in).
	beyond atomic.Uint64
	// missed counts writes whose guest-physical address was not known
	// (a bug of the writer's; see Missed).
	missed atomic.Uint64
}

// MapLog maps size bytes of fd from offset as a dirty log (MAP_SHARED,
// read-write). The fd is not closed. A size of zero or above MaxLogSize, a
// range that wraps, or an fd too small to hold the range is refused before
// mapping, so that a bad log fails here rather than faulting later.
//
// The fd must be a memfd sealed against shrinking (F_SEAL_SHRINK), or one
// MapLog can seal: the data path writes the log from every poller, and a
// frontend that truncated it under the mapping would fault them, where
// no connection could be blamed. QEMU seals its log memfd so (vhost.c,
// vhost_log_alloc: F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL); guest
// memory, which may legitimately be any file, is guarded by the fault
// recovery instead.
func MapLog(fd int, size, offset uint64) (*Log, error) {
	if size == 0 {
		return nil, fmt.Errorf("log size is zero")
	}
	if size > MaxLogSize {
		return nil, fmt.Errorf("log size %#x exceeds the %#x-byte limit", size, uint64(MaxLogSize))
	}
	if offset+size < offset || offset > 1<<62 {
		return nil, fmt.Errorf("log offset %#x and size %#x wrap", offset, size)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat log fd %d: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		if err := sealShrink(fd); err != nil {
			return nil, err
		}
		// Sealed now: the size read below can only grow.
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, fmt.Errorf("fstat log fd %d: %w", fd, err)
		}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if uint64(st.Size) < offset+size {
			return nil, fmt.Errorf("log ends at offset %#x but its fd holds only %#x bytes", offset+size, st.Size)
		}
	default:
		// A pipe, socket or eventfd cannot hold a log; device memory
		// could, but no frontend sends one.
		return nil, fmt.Errorf("log fd %d is not a regular file or memfd (mode %#o)", fd, st.Mode&unix.S_IFMT)
	}
	page := uint64(os.Getpagesize())
	start := offset &^ (page - 1)
	skip := offset - start
	mapping, err := unix.Mmap(fd, int64(start), int(skip+size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap log of %#x bytes at offset %#x: %w", size, offset, err)
	}
	l := newLog(mapping[skip : skip+size : skip+size])
	l.mapping = mapping
	return l, nil
}

// LogFromBytes makes a Log over b, for tests and fakes. b is used as is
// and must outlive the Log.
func LogFromBytes(b []byte) *Log {
	if len(b) == 0 {
		return nil
	}
	return newLog(b)
}

// sealShrink makes sure fd can no longer shrink.
func sealShrink(fd int) error {
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err == nil && seals&unix.F_SEAL_SHRINK != 0 {
		return nil
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK); err != nil {
		return fmt.Errorf("log fd %d cannot be sealed against shrinking (a memfd created with MFD_ALLOW_SEALING is needed): %w", fd, err)
	}
	return nil
}

func newLog(b []byte) *Log {
	return &Log{base: unsafe.Pointer(unsafe.SliceData(b)), size: uint64(len(b)), pages: 8 * uint64(len(b))}
}

// Size returns the bitmap's length in bytes.
func (l *Log) Size() uint64 { return l.size }

// Beyond returns how many writes reached past the memory the log covers.
func (l *Log) Beyond() uint64 { return l.beyond.Load() }

// Missed records a write that could not be logged because its writer did
// not know its guest-physical address; MissedWrites returns how many.
// Tests assert it stays zero.
func (l *Log) Missed() { l.missed.Add(1) }

// MissedWrites returns how many writes Missed recorded.
func (l *Log) MissedWrites() uint64 { return l.missed.Load() }

// Mark records that n bytes at guest-physical address gpa were written. On
// a nil Log it does nothing: this is the one branch the data path pays
// while logging is off, and it is small enough to be inlined.
func (l *Log) Mark(gpa, n uint64) {
	if l != nil && n != 0 {
		l.mark(gpa, n)
	}
}

// mark sets the bit of every page in [gpa, gpa+n).
func (l *Log) mark(gpa, n uint64) {
	first := gpa / LogPageSize
	last := (gpa + n - 1) / LogPageSize
	if gpa+n-1 < gpa {
		last = ^uint64(0) / LogPageSize // a range that wraps: up to the top
	}
	if last >= l.pages {
		l.beyond.Add(1)
		if first >= l.pages {
			return
		}
		last = l.pages - 1
	}
	for p := first; p <= last; p++ {
		l.setBit(p)
	}
}

// setBit sets bit p of the bitmap with an atomic OR on the aligned 32-bit
// word holding its byte. The word may reach outside the bitmap (an offset
// that is not a multiple of 4), but never outside its mapped page, and the
// OR changes no other byte.
func (l *Log) setBit(p uint64) {
	off := uintptr(p / 8)
	mis := (uintptr(l.base) + off) & 3
	w := (*uint32)(unsafe.Add(l.base, off-mis))
	atomic.OrUint32(w, 1<<(mis*8+uintptr(p%8)))
}

// Unmap releases the log's mapping. The Log must not be used afterwards,
// and no reader may still hold it.
func (l *Log) Unmap() {
	if l == nil {
		return
	}
	if l.mapping != nil {
		_ = unix.Munmap(l.mapping)
	}
	l.mapping = nil
	l.base = nil
	l.size, l.pages = 0, 0
}
