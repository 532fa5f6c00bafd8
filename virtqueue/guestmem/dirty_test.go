package guestmem

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestLogMarkBits(t *testing.T) {
	// Every alignment of the bitmap's first byte: the atomic OR works on
	// the aligned word around the byte and must touch only its bit.
	backing := make([]byte, 64)
	for skew := 0; skew < 4; skew++ {
		clear(backing)
		b := backing[skew : skew+16]
		l := LogFromBytes(b)
		l.Mark(0, 1)                   // page 0
		l.Mark(9*LogPageSize+4095, 2)  // pages 9 and 10
		l.Mark(127*LogPageSize, 1<<20) // page 127, the last; the rest beyond
		l.Mark(5*LogPageSize, 0)       // nothing
		want := make([]byte, 16)
		want[0] = 1
		want[1] = 1<<1 | 1<<2
		want[15] = 1 << 7
		if string(b) != string(want) {
			t.Fatalf("skew %d: bitmap %x, want %x", skew, b, want)
		}
		if backing[skew+16] != 0 || (skew > 0 && backing[skew-1] != 0) {
			t.Fatalf("skew %d: bytes outside the bitmap changed: %x", skew, backing)
		}
		if l.Beyond() != 1 {
			t.Fatalf("skew %d: beyond %d, want 1", skew, l.Beyond())
		}
		l.Mark(1<<40, 8)           // wholly beyond
		l.Mark(^uint64(0)-10, 100) // wraps the address space
		if l.Beyond() != 3 {
			t.Fatalf("skew %d: beyond %d, want 3", skew, l.Beyond())
		}
	}
	var nilLog *Log
	nilLog.Mark(0, 4096) // logging off: nothing, no fault
}

// TestLogConcurrentMarks: pollers mark while the frontend clears bits, as
// QEMU does when it syncs the log; with -race this checks the accesses are
// atomic, and no mark made after the last clear is lost.
func TestLogConcurrentMarks(t *testing.T) {
	b := make([]byte, 64)
	l := LogFromBytes(b)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // the frontend
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i := 0; i < len(b); i += 4 {
				l.clearWord(i)
			}
		}
	}()
	var writers sync.WaitGroup
	for w := 0; w < 4; w++ {
		writers.Add(1)
		go func(w int) {
			defer writers.Done()
			for i := 0; i < 20000; i++ {
				l.Mark(uint64((i*4+w)%512)*LogPageSize, 1)
			}
		}(w)
	}
	writers.Wait()
	close(stop)
	wg.Wait()
	for p := uint64(0); p < 512; p++ {
		l.Mark(p*LogPageSize, 1)
	}
	for i, v := range b {
		if v != 0xff {
			t.Fatalf("byte %d = %#x after marking every page", i, v)
		}
	}
}

func memfdOf(t *testing.T, size int64) int {
	t.Helper()
	fd, err := unix.MemfdCreate("log", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestMapLog(t *testing.T) {
	fd := memfdOf(t, 3*4096)
	defer func() {
		// MapLog sealed it: the frontend can no longer pull it away.
		if err := unix.Ftruncate(fd, 0); err == nil {
			t.Error("log memfd could still be truncated")
		}
	}()
	l, err := MapLog(fd, 8192, 101) // an offset that is not a page, nor a word
	if err != nil {
		t.Fatal(err)
	}
	l.Mark(0, 1)
	l.Mark(8*8192*LogPageSize-1, 1) // the last page covered
	l.Mark(8*8192*LogPageSize, 1)   // beyond
	if l.Beyond() != 1 {
		t.Fatalf("beyond %d", l.Beyond())
	}
	l.Unmap()
	l.Unmap() // twice is harmless
	got := make([]byte, 3*4096)
	if _, err := unix.Pread(fd, got, 0); err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		want := byte(0)
		switch i {
		case 101:
			want = 1
		case 101 + 8191:
			want = 0x80
		}
		if v != want {
			t.Fatalf("file byte %d = %#x, want %#x", i, v, want)
		}
	}
}

func TestMapLogRefuses(t *testing.T) {
	fd := memfdOf(t, 4096)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	unsealable, err := unix.MemfdCreate("log", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(unsealable)
	if err := unix.Ftruncate(unsealable, 4096); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name         string
		fd           int
		size, offset uint64
		want         string
	}{
		{"size zero", fd, 0, 0, "zero"},
		{"absurd size", fd, 1 << 40, 0, "limit"},
		{"wrapping", fd, 4096, ^uint64(0) - 100, "wrap"},
		{"fd too small", fd, 4096, 1, "holds only"},
		{"fd too small for the size", fd, 8192, 0, "holds only"},
		{"pipe", p[0], 4096, 0, "not a regular file"},
		{"memfd without sealing", unsealable, 4096, 0, "sealed against shrinking"},
		{"closed fd", 1 << 20, 4096, 0, "fstat"},
	} {
		l, err := MapLog(c.fd, c.size, c.offset)
		if err == nil {
			l.Unmap()
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not say %q", c.name, err, c.want)
		}
	}
}

// clearWord clears the aligned word at byte i of the bitmap as a frontend
// syncing the log does (QEMU exchanges each word with zero).
func (l *Log) clearWord(i int) { atomic.SwapUint32((*uint32)(unsafe.Add(l.base, i)), 0) }
