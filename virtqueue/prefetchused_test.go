package virtqueue_test

import (
	"slices"
	"testing"
	"unsafe"

	"github.com/vhostd/vhostd/virtqueue"
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

// TestPrefetchAhead: the lines PrefetchAhead adds are those of the
// descriptors of the chains available past the ones taken, at most n,
// one per line in a row, up to the first head out of range; it changes
// nothing in the queue, and a broken queue or one with nothing ahead
// adds none.
func TestPrefetchAhead(t *testing.T) {
	const size = 256
	d := virtqueuetest.New(size, 1<<21, 0)
	q := newQueue(t, d, nil)
	mem := d.Memory()
	table := uintptr(unsafe.Pointer(&d.Mem[virtqueuetest.DescBase]))
	line := func(head uint16) uintptr { return (table + 16*uintptr(head)) >> 6 }
	buf := d.Alloc(4096)
	heads := []uint16{0, 1, 2, 3, 4, 100, 7, 200, 201}
	for _, h := range heads {
		d.WriteDesc(d.GPA+virtqueuetest.DescBase, h, buf, 64, virtqueue.DescFWrite, 0)
		d.Publish(h)
	}
	if n := q.Pending(); n != len(heads) {
		t.Fatalf("pending %d, want %d", n, len(heads))
	}
	for i := 0; i < 2; i++ {
		if err := q.Pop(mem, chain(1)); err != nil {
			t.Fatal(err)
		}
	}
	lines := func(n int) []uintptr {
		var b prefetch.Batch
		before := q.LastAvail()
		q.PrefetchAhead(&b, n)
		if q.LastAvail() != before {
			t.Fatalf("PrefetchAhead moved the queue from %d to %d", before, q.LastAvail())
		}
		reads, writes := b.Lines()
		if len(writes) != 0 {
			t.Fatalf("%d lines for writing", len(writes))
		}
		var out []uintptr
		for _, r := range reads {
			out = append(out, r>>6)
		}
		return out
	}
	// Heads 2 and 3 share a line, 4 and 7 another, 200 and 201 a third.
	want := []uintptr{line(2), line(4), line(100), line(7), line(200)}
	if got := lines(64); !slices.Equal(got, want) {
		t.Fatalf("lines %x, want %x", got, want)
	}
	if got := lines(1); !slices.Equal(got, want[:1]) {
		t.Fatalf("n=1: lines %x, want %x", got, want[:1])
	}
	// A head out of range ends the lines; the ones after it are not read.
	d.Publish(size + 5)
	d.WriteDesc(d.GPA+virtqueuetest.DescBase, 9, buf, 64, virtqueue.DescFWrite, 0)
	d.Publish(9)
	q.Pending()
	if got := lines(64); !slices.Equal(got, want) {
		t.Fatalf("with a bad head: lines %x, want %x", got, want)
	}
	for i := 2; i < len(heads); i++ {
		if err := q.Pop(mem, chain(1)); err != nil {
			t.Fatal(err)
		}
	}
	if got := lines(64); len(got) != 0 {
		t.Fatalf("nothing valid ahead: lines %x", got)
	}
	if err := q.Pop(mem, chain(1)); err != virtqueue.ErrBroken || q.Err() == nil {
		t.Fatalf("pop of the bad head: %v", err)
	}
	if got := lines(64); len(got) != 0 {
		t.Fatalf("broken queue: lines %x", got)
	}
}
