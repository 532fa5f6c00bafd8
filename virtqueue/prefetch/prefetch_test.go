package prefetch

import (
	"syscall"
	"testing"
	"unsafe"
)

func TestPrefetchIsHarmless(t *testing.T) {
	b := make([]byte, 4096)
	Read(b)
	Write(b[100:])
	Read(nil)
	Write(b[:0])
	if allocs := testing.AllocsPerRun(100, func() { Read(b); Write(b) }); allocs != 0 {
		t.Fatalf("prefetch allocates %.1f", allocs)
	}
}

func TestBatch(t *testing.T) {
	const adds = batchLines + 36 // of each kind: more than fit, the rest are left out
	b := make([]byte, 64*adds+64)
	var pf Batch
	for i := 0; i < adds; i++ {
		pf.Read(&b[64*i])
		pf.Write(&b[64*i+1])
	}
	if got := pf.Len(); got != 2*batchLines {
		t.Fatalf("Len after %d adds = %d, want %d", 2*adds, got, 2*batchLines)
	}
	if r, w := pf.Lines(); len(r) != batchLines || len(w) != batchLines || r[1] != uintptr(unsafe.Pointer(&b[64])) || w[1] != uintptr(unsafe.Pointer(&b[65])) {
		t.Fatalf("Lines: %d reads, %d writes, not the lines added first", len(r), len(w))
	}
	pf.Issue()
	if got := pf.Len(); got != 0 {
		t.Fatalf("Len after Issue = %d, want 0", got)
	}
	pf.Write(&b[7])
	if got := pf.Len(); got != 1 {
		t.Fatalf("Len = %d, want 1", got)
	}
	pf.Issue()
	pf.Issue() // empty: nothing to do
	if allocs := testing.AllocsPerRun(100, func() { pf.Read(&b[0]); pf.Write(&b[64]); pf.Issue() }); allocs != 0 {
		t.Fatalf("Batch allocates %.1f", allocs)
	}
}

// TestBatchUnmapped: a line that is no longer mapped (a guest's memory
// released between Add and Issue) is prefetched without a fault.
func TestBatchUnmapped(t *testing.T) {
	m, err := syscall.Mmap(-1, 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	var pf Batch
	pf.Read(&m[0])
	pf.Write(&m[100])
	if err := syscall.Munmap(m); err != nil {
		t.Fatal(err)
	}
	pf.Issue()
}
