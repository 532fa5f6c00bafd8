package vswitch

// Input that does not come from a port's own receive side: a frame the
// control path asks a port to send (a RARP announcing a migrated guest,
// rarp.go). It enters the switch through the port's receiver, on the
// poller that owns it, as if the port had received it: the same address
// policy, learning, flooding and counters apply, and the data path takes
// no lock for it. The port leaves it in a mailbox that its first receiver
// looks at once per burst (one plain load), and wakes that receiver's
// poller.

// MaySend implements Control. It decides as the data path would: any
// address for a port without a policy, the pinned one for a FixedMAC port
// or a locked LearnMAC port, and for a LearnMAC port not locked yet any
// unicast address it could lock to.
func (c *portControl) MaySend(src MAC) bool {
	w := c.s.sec[c.idx].want.Load()
	switch w {
	case 0:
		return true
	case wantPending:
		return src != 0 && !src.Multicast() && c.s.fdb.Pinnable(src, c.idx)
	}
	return uint64(src) == w
}

// Wake implements Control.
func (c *portControl) Wake() {
	c.s.mu.Lock()
	owners := c.s.owners[c.idx]
	c.s.mu.Unlock()
	for _, p := range owners {
		p.wake()
	}
}
