package prefetch

import "testing"

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
