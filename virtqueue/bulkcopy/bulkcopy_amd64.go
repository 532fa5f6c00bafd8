package bulkcopy

import "unsafe"

const hasStringMove = true

// move copies len(dst) bytes from src (at least as long) with REP MOVSB.
func move(dst, src []byte) {
	annotate(dst, src)
	repMovsb(unsafe.Pointer(unsafe.SliceData(dst)), unsafe.Pointer(unsafe.SliceData(src)), uintptr(len(dst)))
}

// repMovsb copies n bytes from src to dst, forwards.
//
//go:noescape
func repMovsb(dst, src unsafe.Pointer, n uintptr)
