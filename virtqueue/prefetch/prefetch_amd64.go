package prefetch

import "unsafe"

//go:noescape
func read(p unsafe.Pointer)

//go:noescape
func write(p unsafe.Pointer)
