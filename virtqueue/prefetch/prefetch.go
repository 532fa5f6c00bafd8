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
