package guestmem_test

import (
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/virtqueue/guestmem"
)

// truncatedMemory maps a memfd of size bytes as one region at
// guest-physical 0, then truncates the memfd to keep bytes: every page of
// the mapping past that raises SIGBUS on access, as when a frontend shrinks
// its memory after SET_MEM_TABLE.
func truncatedMemory(t testing.TB, size, keep int) (*guestmem.Memory, []byte) {
	t.Helper()
	fd, err := unix.MemfdCreate("guestmem-fault", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		t.Fatal(err)
	}
	m, err := guestmem.Map([]guestmem.RegionSpec{{Size: uint64(size), UserAddr: 0x7f00_0000_0000}}, []int{fd})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Unmap)
	b, err := m.Slice(0, uint64(size))
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = byte(i)
	}
	if err := unix.Ftruncate(fd, int64(keep)); err != nil {
		t.Fatal(err)
	}
	return m, b
}

// faultOf runs f on a goroutine of its own with SetPanicOnFault, as the
// pollers and connection goroutines run, and returns what it recovered.
func faultOf(f func()) (r any) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		debug.SetPanicOnFault(true)
		defer func() { r = recover() }()
		f()
	}()
	<-done
	return r
}

// TestFaultInCopyRecovered checks what the data path relies on: with
// SetPanicOnFault, a SIGBUS inside the runtime's memmove (a Go copy, as the
// switch uses to move frames), reading or writing, small or large, and in a
// plain load, becomes a panic whose address lies in the truncated page, and
// Contains attributes it to the Memory. Without it the process dies (see
// TestFaultKillsWithoutPanicOnFault).
func TestFaultInCopyRecovered(t *testing.T) {
	const page = 4096
	m, b := truncatedMemory(t, 64*page, 16*page)
	gone := b[16*page:]
	lo, hi := uintptr(unsafe.Pointer(&gone[0])), uintptr(unsafe.Pointer(&gone[0]))+uintptr(len(gone))
	if got := b[16*page-1]; got != byte((16*page-1)%256) {
		t.Fatalf("the page kept after truncation reads %d", got)
	}
	dst := make([]byte, 48*page)
	var sink byte
	for name, f := range map[string]func(){
		"copy 60 bytes out":  func() { copy(dst, gone[100:160]) },
		"copy 192 KiB out":   func() { copy(dst, gone) },
		"copy 1514 bytes in": func() { copy(gone[5000:], dst[:1514]) },
		"copy across the cut": func() {
			copy(dst, b[16*page-2000:16*page+2000])
		},
		"load":  func() { sink = gone[7] },
		"store": func() { gone[page+3] = 1 },
	} {
		r := faultOf(f)
		addr, ok := guestmem.FaultAddr(r)
		if !ok {
			t.Fatalf("%s: recovered %v (%T), want a fault with an address", name, r, r)
		}
		if addr < lo || addr >= hi {
			t.Fatalf("%s: fault at %#x, outside the truncated range [%#x, %#x)", name, addr, lo, hi)
		}
		if !m.Contains(addr) {
			t.Fatalf("%s: Contains(%#x) = false for the memory that faulted", name, addr)
		}
	}
	_ = sink
	if m.Contains(uintptr(unsafe.Pointer(&dst[0]))) || m.Contains(lo-64*page) {
		t.Fatal("Contains claims addresses outside the mapping")
	}
	// What the pollers must not mistake for a guest's doing.
	var nilMap *[4]byte
	if _, ok := guestmem.FaultAddr(faultOf(func() { sink = nilMap[1] })); ok {
		t.Fatal("a nil dereference passed for a guest memory fault")
	}
	if _, ok := guestmem.FaultAddr(faultOf(func() { panic("bug") })); ok {
		t.Fatal("a plain panic passed for a guest memory fault")
	}
	// Once unmapped, the range may be mapped again by anyone: a fault
	// there is no longer this memory's.
	m.Unmap()
	if m.Contains(lo) {
		t.Fatal("an unmapped memory still claims its former range")
	}
}

// TestFaultKillsWithoutPanicOnFault shows what SetPanicOnFault saves the
// daemon from: the same copy on a goroutine without it kills the process
// (run as a child, so the test binary survives).
func TestFaultKillsWithoutPanicOnFault(t *testing.T) {
	if os.Getenv("GUESTMEM_FAULT_CHILD") == "1" {
		_, b := truncatedMemory(t, 8*4096, 4096)
		dst := make([]byte, 4096)
		copy(dst, b[2*4096:])
		t.Fatal("copy from a truncated page returned")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFaultKillsWithoutPanicOnFault$", "-test.count=1")
	cmd.Env = append(os.Environ(), "GUESTMEM_FAULT_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("child survived the fault:\n%s", out)
	}
	if !strings.Contains(string(out), "SIGBUS") || !strings.Contains(string(out), "unexpected fault address") {
		t.Fatalf("child died otherwise than of the fault: %v\n%s", err, out)
	}
}
