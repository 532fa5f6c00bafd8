package prefetch

import "unsafe"

//go:noescape
func read(p unsafe.Pointer)

//go:noescape
func write(p unsafe.Pointer)

// issue prefetches the nr lines at r[0:nr] for reading and the nw at
// w[0:nw] for writing.
//
//go:noescape
func issue(r *uintptr, nr int, w *uintptr, nw int)
