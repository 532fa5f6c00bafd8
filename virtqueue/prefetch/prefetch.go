// Package prefetch hints the CPU to start loading cache lines the data path
// will touch soon: guest buffers a burst ahead, so that the cross-core
// cache misses of many frames overlap instead of stalling one by one.
package prefetch

import "unsafe"

// Read prefetches the cache line holding b[0] for reading. An empty b is
// ignored.
func Read(b []byte) {
	if len(b) > 0 {
		read(unsafe.Pointer(unsafe.SliceData(b)))
	}
}

// Write prefetches the cache line holding b[0] with intent to write. An
// empty b is ignored.
func Write(b []byte) {
	if len(b) > 0 {
		write(unsafe.Pointer(unsafe.SliceData(b)))
	}
}

// Batch collects cache lines to prefetch and issues them with one call:
// Read and Write above are an assembly call each, which costs the caller
// its registers, and the data path prefetches two lines per frame. Adding
// a line is a store; Issue prefetches the lines added since the last
// Issue. A line added to a full batch is left out (a hint, never needed
// for correctness). The zero Batch is empty and ready.
type Batch struct {
	r, w   [batchLines]uintptr
	nr, nw int
}

// batchLines bounds each kind of line in a Batch: a burst's worth (two
// lines for each of vswitch.BurstSize frames).
const batchLines = 128

// Read adds the line holding p, for reading.
func (b *Batch) Read(p *byte) {
	if b.nr < len(b.r) {
		b.r[b.nr] = uintptr(unsafe.Pointer(p))
		b.nr++
	}
}

// Write adds the line holding p, with intent to write.
func (b *Batch) Write(p *byte) {
	if b.nw < len(b.w) {
		b.w[b.nw] = uintptr(unsafe.Pointer(p))
		b.nw++
	}
}

// Len returns how many lines were added since the last Issue.
func (b *Batch) Len() int { return b.nr + b.nw }

// Lines returns the addresses added since the last Issue, for reading
// and for writing, in the order added: what a caller's tests check.
func (b *Batch) Lines() (reads, writes []uintptr) { return b.r[:b.nr], b.w[:b.nw] }

// Issue prefetches the lines added and empties b. A prefetch never
// faults, so lines of memory unmapped since they were added are harmless.
func (b *Batch) Issue() {
	if b.nr+b.nw > 0 {
		issue(&b.r[0], b.nr, &b.w[0], b.nw)
		b.nr, b.nw = 0, 0
	}
}
