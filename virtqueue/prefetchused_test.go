package virtqueue_test

import (
	"testing"
	"unsafe"

	"github.com/vhostd/vhostd/virtqueue/prefetch"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// TestPrefetchUsed: the lines PrefetchUsed adds are those of the used
// elements the next n PushUsed calls write: inside the used ring whatever
// the position (a wrong mask or stride would point past it), the line of
// every element's start when they do not wrap, and the first and last
// element's lines when they do.
func TestPrefetchUsed(t *testing.T) {
	const size = 256
	d := virtqueuetest.New(size, 1<<21, 0)
	q := newQueue(t, d, nil)
	elems := uintptr(unsafe.Pointer(&d.Mem[virtqueuetest.UsedBase])) + 4
	at := func(i int) uintptr { return elems + 8*uintptr(i%size) }
	pos := 0
	for _, c := range []struct{ start, n int }{{0, 0}, {0, 1}, {0, 64}, {3, 64}, {100, 17}, {250, 20}, {300, 256}} {
		for ; pos < c.start; pos++ {
			q.PushUsed(0, 0)
		}
		var b prefetch.Batch
		q.PrefetchUsed(&b, c.n)
		reads, writes := b.Lines()
		if len(reads) != 0 || (c.n == 0) != (len(writes) == 0) {
			t.Fatalf("%+v: %d reads, %d writes", c, len(reads), len(writes))
		}
		lines := map[uintptr]bool{}
		for _, w := range writes {
			if w < elems || w >= elems+8*size {
				t.Fatalf("%+v: line %#x outside the used elements [%#x, %#x)", c, w, elems, elems+8*size)
			}
			lines[w>>6] = true
		}
		if c.n == 0 {
			continue
		}
		first, last := c.start%size, (c.start+c.n-1)%size
		if !lines[at(first)>>6] || !lines[at(last)>>6] {
			t.Fatalf("%+v: first or last element's line missing", c)
		}
		if first <= last {
			for i := first; i <= last; i++ {
				if !lines[at(i)>>6] {
					t.Fatalf("%+v: element %d's line missing", c, i)
				}
			}
		}
	}
}
