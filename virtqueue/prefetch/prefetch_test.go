package prefetch

import (
	"syscall"
	"testing"
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
	b := make([]byte, 1<<16)
	var pf Batch
	for i := 0; i < 100; i++ { // more than fit: the rest are left out
		pf.Read(&b[64*i])
		pf.Write(&b[64*i+1])
	}
	if got := pf.Len(); got != 2*batchLines {
		t.Fatalf("Len after 200 adds = %d, want %d", got, 2*batchLines)
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
