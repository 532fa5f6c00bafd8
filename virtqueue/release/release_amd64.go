//go:build amd64 && !race

package release

// On amd64 (total store order) a plain store already has release
// semantics for the hardware; the assembly function keeps the compiler
// from moving earlier memory operations past it, which a Go store would
// not guarantee.

//go:noescape
func store32(p *uint32, v uint32)

//go:noescape
func store64(p *uint64, v uint64)
