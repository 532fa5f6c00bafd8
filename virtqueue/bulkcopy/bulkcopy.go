// Package bulkcopy copies large spans of bytes at the speed of the CPU's
// string move, for the data path's copies of big frames (TSO segments,
// jumbo frames) into guest buffers and uplink mbufs.
//
// Go's copy moves large spans with vector loads and stores on every CPU
// with AVX. On this project's machines (AMD EPYC, ERMS and FSRM) REP MOVSB
// is faster from a few KiB up, most of all when the destination is out of
// cache, as a guest's receive buffers are: one core copying 64 KiB buffers
// from 8 sources into 256 destinations moved 255 Gbps with copy and 324
// with REP MOVSB; into 1023, 146 and 231 (docs/bench.md, TSO). Below a
// few KiB the string move's start-up cost loses, so small spans stay with
// copy.
package bulkcopy

import "golang.org/x/sys/cpu"

// Threshold is the smallest span Copy hands to the string move. Measured
// here: at 2 KiB copy is as fast or faster, at 4 KiB the string move is
// 16% faster into buffers out of cache and 6% slower into buffers in L2,
// at 8 KiB and up it is faster in both.
const Threshold = 4096

// fast says whether this CPU has fast string moves (ERMS). Without them
// REP MOVSB can be several times slower than the vector loop of copy.
var fast = hasStringMove && cpu.X86.HasERMS

// Copy copies min(len(dst), len(src)) bytes from src into dst, as the
// builtin copy does, and returns how many. Spans of Threshold bytes or
// more go through the CPU's string move where it is fast.
//
// Unlike the builtin copy, overlapping spans of Threshold bytes or more
// are copied forwards, byte order as REP MOVSB leaves it: callers copy
// between distinct buffers (a guest that makes two of its buffers overlap
// gets unspecified bytes in them, never a write outside dst).
func Copy(dst, src []byte) int {
	// Only src's length is tested: the data path copies frames into
	// buffers at least as long, and one test less is one less per frame.
	if len(src) >= Threshold && fast {
		return copyLarge(dst, src)
	}
	return copy(dst, src)
}

// copyLarge is Copy's string move, out of line so that Copy inlines into
// the data path's loops.
func copyLarge(dst, src []byte) int {
	n := min(len(dst), len(src))
	if n < Threshold {
		return copy(dst, src)
	}
	move(dst[:n], src[:n])
	return n
}
