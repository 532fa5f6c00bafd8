// Package release stores to memory shared with another CPU with release
// ordering only: every earlier load and store of the calling goroutine is
// visible before the stored value is. That is all a producer publishing an
// index or a single-writer counter needs, and on amd64 it is a plain move,
// where sync/atomic's Store is an XCHG: a full fence that stalls until
// every pending store of the burst (cache misses on guest buffers) has
// drained. Readers pair these stores with sync/atomic loads.
package release

// Store32 stores v at p with release ordering.
func Store32(p *uint32, v uint32) { store32(p, v) }

// Store64 stores v at p with release ordering. p must be 8-byte aligned.
func Store64(p *uint64, v uint64) { store64(p, v) }
