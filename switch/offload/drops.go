package offload

import "sync/atomic"

// Drops counts refused frames by Reason. It is safe for concurrent use
// and does not allocate; a drop is the rare path, so an atomic add per
// drop is cheap enough, and metrics read the counts at scrape time.
// The zero value is ready.
type Drops struct {
	n [numReasons]atomic.Uint64
}

// Add counts one frame refused for r; ReasonOK and unknown values are
// not counted.
func (d *Drops) Add(r Reason) {
	if r != ReasonOK && r < numReasons {
		d.n[r].Add(1)
	}
}

// Load returns the count for r.
func (d *Drops) Load(r Reason) uint64 {
	if r >= numReasons {
		return 0
	}
	return d.n[r].Load()
}

// Each calls f with every reason but ReasonOK and its count, in Reason
// order, zero counts included (so a metric's label set is stable).
func (d *Drops) Each(f func(r Reason, n uint64)) {
	for r := ReasonOK + 1; r < numReasons; r++ {
		f(r, d.n[r].Load())
	}
}
