//go:build race

package bulkcopy

import (
	"runtime"
	"unsafe"
)

// annotate tells the race detector about the bytes the string move reads
// and writes, which it cannot see in assembly, so that -race checks
// Copy's callers as it checks the builtin copy's.
func annotate(dst, src []byte) {
	runtime.RaceReadRange(unsafe.Pointer(unsafe.SliceData(src)), len(dst))
	runtime.RaceWriteRange(unsafe.Pointer(unsafe.SliceData(dst)), len(dst))
}
