package vhost

import "github.com/sirupsen/logrus"

// Resuming a ring that a frontend sets up again without its state.
//
// A frontend whose backend went away (vhostd killed and restarted, in
// either mode) sets the rings up again on the new connection, in the
// guest memory where the driver kept running. QEMU then sends as
// SET_VRING_BASE the ring's used index, which it reads back when the
// backend is gone. DPDK's virtio_user (server=1) sends 0 whatever the
// ring's state. Read from there, the available ring holds heads the
// driver has long had back (ring entries it has reused since), and the
// index runs up to 65535 entries ahead: the ring would either break at
// once or hand the data path buffers the driver still owns.
//
// The used index in guest memory is the one state both sides agree on:
// every chain before it the driver has had back, every chain after it
// the driver still waits for. So a ring whose base differs from its used
// index resumes at the used index, as DPDK's own backend does (rte_vhost,
// translate_ring_addresses: "last_used_idx and used->idx mismatches ...
// some packets maybe resent for Tx and dropped for Rx"). What the old
// backend had taken and not returned is read again: a frame the guest
// sent may be sent twice, a receive buffer filled but not published is
// filled again. vhostd itself leaves no such gap when it stops a ring
// (every chain it takes is returned within the burst), so on a running
// connection base and used index agree and nothing changes.

// resumeAtUsed makes ring i, whose queue New just built from r.base,
// resume at its used index if the two differ.
func (d *device) resumeAtUsed(i int, r *ring) {
	q := r.q
	base, used := q.LastAvail(), q.UsedIdx()
	if base == used {
		return
	}
	// Unpop moves the next index to read back by n (mod 2^16).
	q.Unpop(int(base - used))
	d.log.WithFields(logrus.Fields{"ring": i, "base": base, "used_idx": used}).
		Warn("ring base from the frontend differs from the ring's used index: resuming at the used index (a frontend that sets the ring up again after its backend went away)")
}

// packedResumeBase returns the base packed ring i resumes at, given the
// frontend's base (virtqueue.PackedBase: the next available position and
// wrap counter in the low half, QEMU's used ones in the high half).
//
// A packed ring keeps its used position nowhere in guest memory: the
// device's used descriptors overwrite available ones in the one ring. So
// the frontend's base is all there is, and what the split rule above
// does with the used index is done with its high half: a base whose
// available and used positions differ (QEMU resending the state of a
// backend that went away holding chains) resumes at the used position,
// and the chains between are read again, exactly as a split ring's. A
// base with a zero high half (DPDK's virtio-user, vhost-user.rst alone)
// means "used where available", which NewPacked already assumes.
func (d *device) packedResumeBase(i int, base uint32) uint32 {
	hi := base >> 16
	if hi == 0 || hi == base&0xffff {
		return base
	}
	d.log.WithFields(logrus.Fields{"ring": i, "base": base & 0xffff, "used": hi}).
		Warn("packed ring base from the frontend has chains taken and not returned: resuming at the used position (a frontend that sets the ring up again after its backend went away)")
	return hi | hi<<16
}
