//go:build !amd64

package prefetch

import "unsafe"

// Without a prefetch instruction wired up, the hints do nothing.
func read(unsafe.Pointer)  {}
func write(unsafe.Pointer) {}

func issue(*uintptr, int, *uintptr, int) {}
