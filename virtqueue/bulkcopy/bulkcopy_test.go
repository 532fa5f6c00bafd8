package bulkcopy

import (
	"bytes"
	"runtime/debug"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func fill(b []byte, seed byte) {
	for i := range b {
		b[i] = byte(i*7) + seed
	}
}

// TestCopyMatchesBuiltin compares Copy with the builtin copy at lengths
// around Threshold and beyond, at every alignment of both ends within a
// line, with dst shorter, equal and longer than src, and checks that no
// byte past the copied span changes.
func TestCopyMatchesBuiltin(t *testing.T) {
	lengths := []int{0, 1, 63, 64, Threshold - 1, Threshold, Threshold + 1, Threshold + 63, 2*Threshold + 17, 9000, 65214}
	for _, n := range lengths {
		for _, so := range []int{0, 1, 12, 63} {
			for _, do := range []int{0, 7, 12, 64} {
				for _, extra := range []int{-3, 0, 5} {
					src := make([]byte, so+n+64)
					fill(src, 1)
					src = src[so : so+n]
					dl := max(n+extra, 0)
					want := make([]byte, do+dl+64)
					fill(want, 100)
					got := bytes.Clone(want)
					wn := copy(want[do:do+dl], src)
					gn := Copy(got[do:do+dl], src)
					if gn != wn || !bytes.Equal(got, want) {
						t.Fatalf("len %d src offset %d dst offset %d dst len %d: Copy returned %d (copy %d), bytes differ: %v", n, so, do, dl, gn, wn, !bytes.Equal(got, want))
					}
				}
			}
		}
	}
}

// TestCopyStopsAtMappingEnd copies spans that end on the last byte of a
// mapping followed by an inaccessible page, both ways round: the string
// move must not read or write one byte past the span.
func TestCopyStopsAtMappingEnd(t *testing.T) {
	page := syscall.Getpagesize()
	mapGuarded := func() []byte {
		m, err := syscall.Mmap(-1, 0, 4*page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Munmap(m) })
		if err := syscall.Mprotect(m[3*page:], syscall.PROT_NONE); err != nil {
			t.Fatal(err)
		}
		return m[:3*page]
	}
	src, dst := mapGuarded(), mapGuarded()
	fill(src, 3)
	for _, n := range []int{Threshold, Threshold + 1, 3*page - 5} {
		s, d := src[len(src)-n:], dst[len(dst)-n:]
		if got := Copy(d, s); got != n || !bytes.Equal(d, s) {
			t.Fatalf("span of %d ending at the guard page: copied %d, equal %v", n, got, bytes.Equal(d, s))
		}
	}
}

// TestCopyFaultIsRecoverable: a guest can truncate the file behind its
// memory while vhostd copies from or into it. The data path's pollers run
// with debug.SetPanicOnFault, and the switch finds the guest to blame by
// the faulting address (switch/fault.go): a fault inside the string move
// must surface the same way, as a recoverable panic with that address.
func TestCopyFaultIsRecoverable(t *testing.T) {
	page := syscall.Getpagesize()
	fd, err := unix.MemfdCreate("bulkcopy-test", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, int64(4*page)); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(fd, 0, 4*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	if err := unix.Ftruncate(fd, int64(page)); err != nil {
		t.Fatal(err)
	}
	other := make([]byte, 2*page)
	base := uintptr(unsafe.Pointer(&m[0]))
	for _, c := range []struct {
		name     string
		dst, src []byte
	}{
		{"reading", other, m[page/2 : page/2+2*page]},
		{"writing", m[page/2 : page/2+2*page], other},
	} {
		addr, faulted := func() (addr uintptr, faulted bool) {
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			defer func() {
				if r := recover(); r != nil {
					e, ok := r.(interface{ Addr() uintptr })
					if !ok {
						t.Fatalf("%s: panic %v without an address", c.name, r)
					}
					addr, faulted = e.Addr(), true
				}
			}()
			Copy(c.dst, c.src)
			return 0, false
		}()
		if !faulted {
			t.Fatalf("%s a truncated page: no fault", c.name)
		}
		if addr < base+uintptr(page) || addr >= base+uintptr(4*page) {
			t.Fatalf("%s: fault at %#x, outside the truncated pages [%#x, %#x)", c.name, addr, base+uintptr(page), base+uintptr(4*page))
		}
	}
}

// TestCopyAllocatesNothing: Copy is on the data path.
func TestCopyAllocatesNothing(t *testing.T) {
	src, dst := make([]byte, 65536), make([]byte, 65536)
	if a := testing.AllocsPerRun(100, func() { Copy(dst, src); Copy(dst[:64], src) }); a != 0 {
		t.Fatalf("%v allocations per Copy", a)
	}
}

func BenchmarkCopy64K(b *testing.B) {
	src, dst := make([]byte, 65536), make([]byte, 65536)
	b.SetBytes(65536)
	for i := 0; i < b.N; i++ {
		Copy(dst, src)
	}
}

func BenchmarkBuiltin64K(b *testing.B) {
	src, dst := make([]byte, 65536), make([]byte, 65536)
	b.SetBytes(65536)
	for i := 0; i < b.N; i++ {
		copy(dst, src)
	}
}
