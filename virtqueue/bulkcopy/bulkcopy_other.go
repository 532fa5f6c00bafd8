//go:build !amd64

package bulkcopy

const hasStringMove = false

// move is never called without a string move: Copy uses the builtin copy.
func move(dst, src []byte) { copy(dst, src) }
