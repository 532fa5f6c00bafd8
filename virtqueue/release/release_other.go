//go:build !amd64 || race

package release

import "sync/atomic"

// Elsewhere, and under the race detector (which sees atomics as the
// synchronisation they are, and assembly not at all), sync/atomic's
// sequentially consistent store stands in: it is at least as strong.
func store32(p *uint32, v uint32) { atomic.StoreUint32(p, v) }
func store64(p *uint64, v uint64) { atomic.StoreUint64(p, v) }
